"""HAProxy's stats socket: ``show info`` and ``show stat``, per instance and summed."""

from __future__ import annotations

import csv
import io
import os
import socket
from collections.abc import Sequence
from pathlib import Path

__all__ = ["SUMMED", "query", "show_info", "show_stat", "stats_sockets", "sum_info"]

SUMMED = (
    "CurrConns",
    "CumConns",
    "CumReq",
    "ConnRate",
    "SessRate",
    "SslRate",
    "SslFrontendKeyRate",
    "CurrSslConns",
    "CumSslConns",
    "Run_queue",
    "Tasks",
)
"""``show info`` fields that add up across instances."""


def stats_sockets(directory: Path, option: str | None = None) -> list[Path]:
    """The stats sockets of `tippingpoint proxy`'s instances in ``directory``. With
    ``option`` (the command's flag that named it), none there is a ValueError."""
    found = sorted(directory.glob("haproxy-*.sock"))
    if not found and option is not None:
        where = "no such directory" if not directory.is_dir() else "no haproxy-*.sock in it"
        raise ValueError(
            f"{option} {directory}: {where}: give the --dir of a running `tippingpoint proxy`"
        )
    return found


def query(path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to a stats socket; the whole answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        # A long workdir's sockets live under a short path (AF_UNIX allows ~100 bytes)
        # and the workdir holds symlinks to them: connect to where they lead.
        sock.connect(os.path.realpath(path))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def show_info(path: Path) -> dict[str, str]:
    info = {}
    for line in query(path, "show info").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            info[name.strip()] = value.strip()
    return info


def show_stat(path: Path) -> list[dict[str, str]]:
    """Rows of ``show stat``: one per frontend, backend and server."""
    text = query(path, "show stat").lstrip("# ")
    return [dict(row) for row in csv.DictReader(io.StringIO(text)) if row.get("pxname")]


def sum_info(infos: Sequence[dict[str, str]]) -> dict[str, float]:
    """The :data:`SUMMED` fields added over instances, plus ``Idle_pct`` averaged."""
    out: dict[str, float] = {}
    for name in SUMMED:
        out[name] = sum(float(i.get(name, 0) or 0) for i in infos)
    if infos:
        out["Idle_pct"] = sum(float(i.get("Idle_pct", 0) or 0) for i in infos) / len(infos)
    out["instances"] = len(infos)
    return out
