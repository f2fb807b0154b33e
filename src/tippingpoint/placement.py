"""Where processes run: CPUs given at start, then read back from /proc.

A process started for a role (HAProxy, the backends, a broker) gets its CPUs in the
child itself, before exec (:func:`start_on`), never the affinity its parent happens to
have: a bench pinned to the client's core would otherwise hand that core to HAProxy.
HAProxy's ``cpu-map`` is no help there: HAProxy 2.6 applies it only when it forks its
workers itself, not in the foreground (``-db``) mode a supervisor runs it in.

After start-up, :func:`verify` reads ``Cpus_allowed_list`` of every process of a
role, its children and each of their threads from ``/proc/PID/task/TID/status``, and
refuses, in one line, a role that runs anywhere it was not placed (a wrapper that
re-pins, ``numactl``, a cpuset). What it finds is a :class:`Placed` row of the
report's placement table.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Placed",
    "PlacementError",
    "affinity_of",
    "cpu_list",
    "cpus_of",
    "descendants",
    "parse_cpu_list",
    "place_self",
    "spawn",
    "spread_threads",
    "start_on",
    "verify",
]


class PlacementError(RuntimeError):
    """A process does not run where it was placed; one line naming it."""


def cpu_list(cpus: Iterable[int]) -> str:
    """``{0, 1, 3}`` -> ``"0-1,3"``, as the kernel and taskset write CPU lists."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts) or "none"


def parse_cpu_list(text: str) -> frozenset[int]:
    """``"0-1,3"`` -> ``{0, 1, 3}`` (the kernel's form; empty text: no CPU)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return frozenset(cpus)


def affinity_of(pid: int, proc: str = "/proc") -> dict[int, frozenset[int]]:
    """Thread id -> the CPUs it may run on, for every thread of ``pid`` ({} if gone)."""
    out: dict[int, frozenset[int]] = {}
    try:
        tids = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            text = Path(f"{proc}/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[int(tid)] = parse_cpu_list(line.split(":", 1)[1])
                break
    return out


def cpus_of(pids: Iterable[int]) -> frozenset[int]:
    """Every CPU any thread of ``pids`` may run on."""
    seen: set[int] = set()
    for pid in pids:
        for cpus in affinity_of(pid).values():
            seen |= cpus
    return frozenset(seen)


def descendants(pid: int, proc: str = "/proc") -> list[int]:
    """``pid``'s children, their children..., from each task's ``children`` file."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"{proc}/{parent}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                text = Path(f"{proc}/{parent}/task/{tid}/children").read_text()
            except OSError:
                continue
            for child in text.split():
                found.append(int(child))
                todo.append(int(child))
    return found


def start_on(
    cpus: Iterable[int] | None, then: Callable[[], None] | None = None
) -> Callable[[], None]:
    """A ``preexec_fn`` that places the child on ``cpus`` (None: leaves it as it is)
    and then runs ``then`` (e.g. :func:`tippingpoint.procs.die_with_parent`)."""
    wanted = frozenset(cpus) if cpus is not None else None

    def setup() -> None:
        if wanted:
            os.sched_setaffinity(0, wanted)
        if then is not None:
            then()

    return setup


def spawn(
    args: Sequence[str],
    cpus: Iterable[int] | None,
    what: str,
    stdout: IO[bytes] | int,
    then: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` on ``cpus`` (then ``then`` in the child, before exec), its output
    and errors to ``stdout``; :class:`PlacementError` naming ``what`` when the kernel
    refuses those CPUs."""
    try:
        return subprocess.Popen(
            list(args),
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=start_on(cpus, then),
        )
    except subprocess.SubprocessError:
        raise PlacementError(
            f"cannot start {what} on CPUs {cpu_list(cpus or ())}: the kernel refused that "
            "affinity (a cpuset without them?); ask for CPUs this machine gives"
        ) from None


def place_self(cpus: Iterable[int]) -> None:
    """Every thread of this process on ``cpus`` (``sched_setaffinity(0)`` moves only
    the calling thread; threads made later inherit their maker's)."""
    wanted = frozenset(cpus)
    for tid in affinity_of(os.getpid()):
        try:
            os.sched_setaffinity(tid, wanted)
        except ProcessLookupError:
            continue  # the thread ended meanwhile


def spread_threads(pid: int, cpus: tuple[int, ...]) -> None:
    """Thread k of ``pid`` (in the order they were made) on ``cpus[k % len]``: what
    HAProxy's ``cpu-map 1/k`` asks for, done from outside."""
    if len(cpus) < 2:
        return
    for k, tid in enumerate(sorted(affinity_of(pid))):
        try:
            os.sched_setaffinity(tid, {cpus[k % len(cpus)]})
        except OSError:
            continue  # the thread ended meanwhile


@dataclass(frozen=True, slots=True)
class Placed:
    """One role of the placement table: where it was asked to run and where it runs."""

    role: str
    pids: tuple[int, ...]
    threads: int
    asked: frozenset[int]
    seen: frozenset[int]
    host: str = ""
    """The lab host it runs on (empty: the bench's machine)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "pids": list(self.pids),
            "threads": self.threads,
            "cpus_asked": cpu_list(self.asked),
            "cpus_seen": cpu_list(self.seen),
            **({"host": self.host} if self.host else {}),
        }


def verify(role: str, pids: Iterable[int], asked: Iterable[int], children: bool = True) -> Placed:
    """Read back where every thread of ``pids`` (and their children) may run;
    :class:`PlacementError` when one may run outside ``asked``."""
    wanted = frozenset(asked)
    roots = list(pids)
    every = [*roots, *(c for pid in roots for c in descendants(pid))] if children else roots
    seen: set[int] = set()
    threads = 0
    for pid in every:
        for tid, cpus in affinity_of(pid).items():
            threads += 1
            seen |= cpus
            if not cpus <= wanted:
                which = f"pid {pid}" if tid == pid else f"pid {pid} thread {tid}"
                raise PlacementError(
                    f"{role} {which} may run on CPUs {cpu_list(cpus)}, asked {cpu_list(wanted)} "
                    "(read from /proc): something re-pinned it (a wrapper, numactl, a "
                    "cpuset); start it without that, or ask for the CPUs it gets"
                )
    return Placed(role, tuple(roots), threads, wanted, frozenset(seen))
