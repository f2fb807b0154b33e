"""Who already listens on a port: read from ``/proc``, before a server starts.

Every server tippingpoint starts (``serve`` workers, HAProxy) binds with
``SO_REUSEPORT``, so a second server on the same port starts without a word and the
kernel then hands it half of the connections: a stale backend from an earlier run
would quietly take part in the next measurement. Servers therefore look here first
and refuse a port on which a process that is not theirs is listening.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["Listener", "PortBusy", "check_free", "listeners", "wait_listening"]

_LISTEN: Final = "0A"


class PortBusy(Exception):
    """A one-line reason, naming the port and the process holding it."""


@dataclass(frozen=True, slots=True)
class Listener:
    address: str
    port: int
    inode: int
    pid: int | None = None
    command: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return f"a process this user cannot see listens on {self.address}:{self.port}"
        return f"pid {self.pid} ({self.command}) listens on {self.address}:{self.port}"


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _table(path: Path) -> list[Listener]:
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        out.append(Listener(_address(address), int(port, 16), int(fields[9])))
    return out


def _owners(inodes: set[int]) -> dict[int, tuple[int, str]]:
    """inode -> (pid, command line) for the sockets among ``inodes``."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, tuple[int, str]] = {}
    for entry in os.scandir("/proc"):
        if len(found) == len(wanted):
            break
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                inode = wanted.get(os.readlink(f"/proc/{entry.name}/fd/{fd}"))
            except OSError:
                continue
            if inode is not None and inode not in found:
                try:
                    raw = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                except OSError:
                    raw = b""
                command = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
                found[inode] = (int(entry.name), command[:200] or "?")
    return found


def _overlaps(a: str, b: str) -> bool:
    if a == b:
        return True
    return ipaddress.ip_address(a).is_unspecified or ipaddress.ip_address(b).is_unspecified


def listeners(host: str, ports: Iterable[int]) -> list[Listener]:
    """Listening TCP sockets that a server on ``host`` and any of ``ports`` would share."""
    wanted = set(ports)
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            host = socket.gethostbyname(host)
        except OSError:  # not an address at all: the server itself will say so
            return []
    found = [
        s
        for table in ("tcp", "tcp6")
        for s in _table(Path("/proc/net") / table)
        if s.port in wanted and _overlaps(s.address, host)
    ]
    owners = _owners({s.inode for s in found}) if found else {}
    return [Listener(s.address, s.port, s.inode, *owners.get(s.inode, (None, None))) for s in found]


def check_free(
    host: str, ports: Iterable[int], what: str, share_option: str | None, other: str = ""
) -> None:
    """Raise :class:`PortBusy` when another process listens where ``what`` would: the
    advice names ``other`` (how to choose other ports) and ``share_option``, where the
    command has one."""
    busy = listeners(host, ports)
    if not busy:
        return
    first = busy[0]
    more = f" (and {len(busy) - 1} more)" if len(busy) > 1 else ""
    stop = f"stop it (kill {first.pid})" if first.pid is not None else "stop it"
    raise PortBusy(
        f"{what}: port {first.port} is taken: {first.describe()}{more}: {stop}"
        + (
            f", {other or 'choose other ports'}, or pass {share_option} to share the port "
            "on purpose"
            if share_option
            else f" or {other or 'choose other ports'}"
        )
    )


def wait_listening(
    host: str, port: int, proc: subprocess.Popen[bytes], log: Path, what: str, wait: float = 30
) -> None:
    """Return once ``proc`` accepts on ``host``:``port``; RuntimeError (its own reason
    from ``log`` rather than its supervisor's "see above") when it ended or took longer
    than ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                lines = log.read_text(errors="replace").strip().splitlines()
                causes = [line for line in lines if "cannot" in line] or lines[-1:]
                why = causes[0].split(": ", 1)[-1] if causes else "see " + str(log)
                raise RuntimeError(f"{what} did not start on {host}:{port}: {why}") from None
            time.sleep(0.05)
