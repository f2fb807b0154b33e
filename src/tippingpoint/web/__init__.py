"""The live page and ``/metrics`` of a running command (``--web``).

:mod:`.feed` folds what the command sees into a state (no I/O), :mod:`.page` draws the
page from it with the report's own code, :mod:`.metrics` writes Prometheus's text, and
:mod:`.server` serves them (aiohttp, in a thread of the command's process).
"""
