"""The event loop every process of tippingpoint runs: uvloop where it is installed."""

from __future__ import annotations

import asyncio

__all__ = ["new_loop"]


def new_loop(kind: str) -> tuple[asyncio.AbstractEventLoop, str]:
    """A new event loop: uvloop unless ``kind`` is "asyncio" or uvloop is missing."""
    if kind != "asyncio":
        try:
            import uvloop

            return uvloop.new_event_loop(), "uvloop"
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError("uvloop is not installed: pip install uvloop") from None
    return asyncio.new_event_loop(), "asyncio"
