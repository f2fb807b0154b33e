"""The keys a scenario file may use, checked before anything is read from it.

A key that is not known is a typo until proved otherwise (``rat = 50``, ``thread = 1``,
``[clinet]``): silently ignored, it runs a different bench from the one the user wrote.
The error names the line, the table and the key, and the closest known key. Pure; the
values are checked where they are read (:mod:`tippingpoint.bench.scenario`).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from tippingpoint.bench.kinds import EXPERIMENT_KEYS, KIND_NAMES, KINDS
from tippingpoint.bench.kinds.base import COMMON_KEYS, Kind

__all__ = ["EXPERIMENT_KEYS", "TABLE_KEYS", "check_keys", "with_line"]

TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "bench": ("title", "open_files"),
    "backends": ("ports", "processes", "cpus", "mqtt", "mqtt_ports", "hosts", "external"),
    "broker": ("hosts",),
    "proxy": (
        "host",
        "threads",
        "instances",
        "cpus",
        "cert",
        "http",
        "https",
        "rate_limit",
        "http_reuse",
        "mqtt",
        "mqtts",
        "mqtt_balance",
        "external",
        "stats",
        "prometheus",
        "cacert",
        "config",
    ),
    "client": ("processes", "cpus", "hosts"),
    "cluster": ("address", "workers", "certs", "max_clock_skew", "insecure"),
    "hosts": (),
}
"""The single tables and their keys (``[hosts]``: names of the user's choosing)."""

ARRAYS = ("experiment", "matrix")
"""The arrays of tables (``[[experiment]]``, ``[[matrix]]``: checked where read)."""


def _nearest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f": did you mean {close[0]}?" if close else ""


def _line(lines: Sequence[str], pattern: str, after: int = 0) -> int | None:
    """The 1-based number of the first line from ``after`` that matches ``pattern``."""
    regex = re.compile(pattern)
    for number in range(after, len(lines)):
        if regex.match(lines[number]):
            return number + 1
    return None


def _at(number: int | None) -> str:
    return f"line {number}: " if number is not None else ""


def _key_pattern(key: str) -> str:
    return rf"""\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*="""


def check_keys(data: dict[str, Any], text: str) -> None:
    """Refuse an unknown table, an unknown key, an experiment without a kind and two
    experiments of one name (``ValueError``: the line, the table, the key, the nearest)."""
    lines = text.splitlines()
    tables = (*TABLE_KEYS, *ARRAYS)
    for name, value in data.items():
        if name not in tables:
            kind = "key" if not isinstance(value, dict | list) else "table"
            where = _line(lines, rf"\s*\[+\s*{re.escape(name)}\s*\]+") or _line(
                lines, _key_pattern(name)
            )
            owners = [t for t, keys in TABLE_KEYS.items() if name in keys]
            owners += ["[experiment]"] if name in EXPERIMENT_KEYS else []
            home = f": it belongs in {' or '.join(f'[{t}]' for t in owners)}" if owners else ""
            raise ValueError(
                f"{_at(where)}unknown {kind} {name}{home or _nearest(name, tables)} "
                f"(a scenario has {', '.join(f'[{t}]' for t in TABLE_KEYS)}, "
                "[[experiment]] and [[matrix]])"
            )
        if TABLE_KEYS.get(name):
            start = _line(lines, rf"\s*\[\s*{re.escape(name)}\s*\]") or 1
            _known(value, TABLE_KEYS[name], name, lines, start - 1)
    _experiments(data.get("experiment", []), lines)


def _known(
    table: dict[str, Any], known: Sequence[str], where: str, lines: Sequence[str], start: int
) -> None:
    for key in table:
        if key not in known:
            near = _nearest(key, known)
            raise ValueError(
                f"{_at(_line(lines, _key_pattern(key), start))}{where}: unknown key {key}"
                + (near or f" ({where.split(' ')[0]} takes {', '.join(known)})")
            )


def _experiments(experiments: list[dict[str, Any]], lines: Sequence[str]) -> None:
    headers = [i for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*experiment\s*\]\]", line)]
    names: dict[str, int] = {}
    for i, raw in enumerate(experiments):
        start = headers[i] if i < len(headers) else 0
        label = f"experiment[{i}]" + (f' ("{raw["name"]}")' if "name" in raw else "")
        _known(raw, EXPERIMENT_KEYS, label, lines, start)
        if "kind" not in raw:
            kinds = ", ".join(KIND_NAMES[:-1]) + " or " + KIND_NAMES[-1]
            raise ValueError(f"{_at(start + 1)}{label}: kind is required ({kinds})")
        kind = KINDS.get(str(raw["kind"]))
        if kind is not None:
            _read_by(raw, kind, label, lines, start)
        name = str(raw.get("name", f"experiment {i + 1}"))
        if name in names:
            raise ValueError(
                f"{_at(start + 1)}{label}: the name {name!r} is taken by experiment"
                f"[{names[name]}]: names label the report's rows and files"
            )
        names[name] = i


def _read_by(
    raw: dict[str, Any], kind: Kind[Any], label: str, lines: Sequence[str], start: int
) -> None:
    """Refuse a key of another kind: a ``rate`` in a hold would be ignored, and the
    hold would not be the one the user wrote."""
    own = (*COMMON_KEYS, *kind.keys)
    for key in raw:
        if key not in own:
            raise ValueError(
                f"{_at(_line(lines, _key_pattern(key), start))}{label}: kind {kind.name} does not "
                f"read {key} (its keys: {', '.join(own[2:])})"
            )


_PATH = re.compile(r"(experiment|matrix|[a-z_]+)(?:\[(\d+)\])?\.([a-z_]+)\b")


def with_line(message: str, text: str) -> str:
    """``message`` (``client.processes: ...``, ``experiment[1].rate: ...``) with the line
    of the key it names in front, as the unknown-key errors have it."""
    match = _PATH.match(message)
    if match is None or message.startswith("line "):
        return message
    table, index, key = match.group(1), match.group(2), match.group(3)
    lines = text.splitlines()
    if index is not None:
        headers = [
            i for i, line in enumerate(lines) if re.match(rf"\s*\[\[\s*{table}\s*\]\]", line)
        ]
        start = headers[int(index)] if int(index) < len(headers) else None
    else:
        found = _line(lines, rf"\s*\[\s*{re.escape(table)}\s*\]")
        start = found - 1 if found is not None else None
    if start is None:
        return message
    return _at(_line(lines, _key_pattern(key), start)) + message
