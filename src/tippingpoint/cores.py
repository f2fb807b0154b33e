"""Every core accounted for: what used the CPUs of each role during a window (a step).

For each group of CPUs the roles are placed on, the window's busy and steal time come
from ``/proc/stat``, and the CPU time of each role placed there from ``/proc/PID/stat``
(its processes, their children and threads, reaped children included). What is left,
busy less the roles, is *foreign* load: another process, the kernel's work that no
process of ours was charged for (softirq run from idle, kernel threads), all of it
taking time the measurement thought it had. The VM's steal is apart: time the
hypervisor gave the vCPU to someone else.

The client is the bench's own children that are not roles (the attack's forked
workers, reaped or running), the bench the bench process itself. Processes that used
a noticeable share of a core and are none of ours are named, so that a step spoiled
by them says by what.

Ticks are the kernel's (``USER_HZ``, 100 a second): over a step of a few seconds the
figures are good to a few % of a core, which is what the thresholds allow for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tippingpoint.placement import cpu_list, descendants

__all__ = ["CLIENT_ROLES", "CoreWindow", "Group", "Ledger", "read_stat_cpus"]

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

CLIENT_ROLES = ("client", "bench")
"""Roles on the load's side; every other role is the system under test."""

_NAMED_SHARE = 0.01
"""A foreign process that used this share of a core in a window is named."""


def read_stat_cpus(text: str | None = None) -> dict[int, tuple[int, int]]:
    """CPU -> ``(idle, steal)`` ticks from ``/proc/stat`` (idle with iowait).

    Busy time is the wall time less these two. The kernel counts a CPU's idle time
    exactly (from its tickless idle periods), but its user, system and softirq time
    by sampling a tick, and a CPU that wakes for a few hundred microseconds at a time,
    as a load generator's does, is rarely busy when the tick comes: at 30,000
    requests/s the client's CPU showed 1.5 to 4.6 s of user, system and softirq ticks
    while its process was charged 4.3 to 4.4 s (scaled to the scheduler's exact run
    time) and the idle counter gave 4.8 to 4.9 s busy (benchmarks/stat_ticks.py)."""
    text = text if text is not None else Path("/proc/stat").read_text()
    out: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *fields = line.split()
        ticks = [int(x) for x in fields[:8]]
        ticks += [0] * (8 - len(ticks))
        out[int(name[3:])] = (ticks[3] + ticks[4], ticks[7])
    return out


def _stat(pid: int | str, proc: str = "/proc") -> tuple[str, list[str]] | None:
    """``(comm, fields after comm)`` of ``/proc/PID/stat``, None if gone."""
    try:
        text = Path(f"{proc}/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = text.rpartition(")")
    return head.partition("(")[2], rest.split()


def _ticks(pid: int, with_reaped: bool = True) -> int:
    """utime + stime of a process (every thread; its reaped children too)."""
    stat = _stat(pid)
    if stat is None:
        return 0
    f = stat[1]  # f[0] is field 3 (state): utime is field 14
    own = int(f[11]) + int(f[12])
    return own + (int(f[13]) + int(f[14]) if with_reaped else 0)


def _tree_ticks(pid: int) -> tuple[int, list[int]]:
    """CPU ticks of ``pid`` and its descendants (each with the children it reaped:
    a process alive at one end of a window and reaped at the other counts once), and
    the tree's PIDs."""
    tree = [pid, *descendants(pid)]
    return sum(_ticks(p) for p in tree), tree


def _all_processes() -> dict[int, tuple[str, int, int, int, int]]:
    """Every process: pid -> (name, utime + stime ticks, last CPU, start tick, parent)."""
    out: dict[int, tuple[str, int, int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(entry)
        if stat is None or len(stat[1]) < 37:
            continue
        f = stat[1]
        out[int(entry)] = (stat[0], int(f[11]) + int(f[12]), int(f[36]), int(f[19]), int(f[1]))
    return out


def _uptime_ticks() -> int:
    return round(float(Path("/proc/uptime").read_text().split()[0]) * _HZ)


@dataclass
class Group:
    """CPUs that roles share, and what used them in a window (in cores: 1.0 is one
    CPU busy for the whole window)."""

    cpus: frozenset[int]
    roles: dict[str, float] = field(default_factory=dict)
    busy: float = 0.0
    steal: float = 0.0

    @property
    def foreign(self) -> float:
        """Busy time no role of ours was charged for."""
        return max(0.0, self.busy - sum(self.roles.values()))

    @property
    def sut(self) -> bool:
        """The system under test runs here."""
        return any(role not in CLIENT_ROLES for role in self.roles)

    @property
    def client(self) -> bool:
        return any(role == "client" for role in self.roles)

    @property
    def load(self) -> float:
        """Busy and steal as a share of the group's CPUs (1.0: none left)."""
        return (self.busy + self.steal) / max(1, len(self.cpus))

    def to_json(self) -> dict[str, Any]:
        return {
            "cpus": cpu_list(self.cpus),
            "roles": {k: round(v, 3) for k, v in self.roles.items()},
            "busy": round(self.busy, 3),
            "steal": round(self.steal, 3),
            "foreign": round(self.foreign, 3),
        }


@dataclass
class CoreWindow:
    """One window's accounting: each group of CPUs, and the foreign processes named."""

    seconds: float
    groups: list[Group]
    others: list[tuple[str, int, float]]
    """``(name, pid, cores)`` of processes not ours, the busiest first."""

    def sut_foreign(self) -> float:
        """Foreign load and steal on the system under test's CPUs (cores)."""
        return sum(g.foreign + g.steal for g in self.groups if g.sut)

    def sut_load(self) -> float | None:
        """How full the system under test's CPUs were, whoever for (1.0: no room left)."""
        loads = [g.load for g in self.groups if g.sut]
        return max(loads) if loads else None

    def client_load(self) -> float | None:
        """How full the client's CPUs were, whoever for (1.0: no room left)."""
        loads = [g.load for g in self.groups if g.client]
        return max(loads) if loads else None

    def client_foreign(self) -> float:
        return sum(g.foreign + g.steal for g in self.groups if g.client)

    def client_steal(self) -> float:
        """Steal on the client's CPUs that the system under test does not share (cores):
        on shared CPUs it is foreign load of the system under test already."""
        return sum(g.steal for g in self.groups if g.client and not g.sut)

    def culprits(self, limit: int = 3) -> str:
        """What took the cores, in words: the busiest foreign processes, the steal."""
        words = [
            f"{name} (pid {pid}) {cores * 100:.0f} % of a core"
            for name, pid, cores in self.others[:limit]
        ]
        steal = sum(g.steal for g in self.groups)
        if steal >= _NAMED_SHARE:
            words.append(f"the VM's steal {steal * 100:.0f} % of a core")
        unnamed = sum(g.foreign for g in self.groups) - sum(c for _, _, c in self.others)
        if unnamed >= 0.05:
            words.append(f"{unnamed * 100:.0f} % of a core no process was charged for (the kernel)")
        return ", ".join(words) or "nothing named"

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "groups": [g.to_json() for g in self.groups],
            "others": [{"name": n, "pid": p, "cores": round(c, 3)} for n, p, c in self.others],
            "culprits": self.culprits(),
        }


RoleMap = Callable[[], dict[str, tuple[frozenset[int], list[int]]]]
"""Role -> (its CPUs, its PIDs) as they are now; each PID counts with its children."""


class Ledger:
    """Call :meth:`begin` and :meth:`end` around a window; ``end`` returns its account.

    ``roles`` gives the long-lived roles (HAProxy, the backends, brokers) with their
    CPUs; ``client_cpus`` are the CPUs of this process and of the children it forks to
    send the load (the "client" and "bench" roles)."""

    def __init__(self, roles: RoleMap, client_cpus: Iterable[int]) -> None:
        self.roles = roles
        self.client_cpus = frozenset(client_cpus)
        self._begin: dict[str, Any] | None = None
        self._seen: dict[int, tuple[str, int, int, int, int]] = {}
        """Every process seen during the window, as last seen (see :meth:`peek`)."""

    def _snapshot(self) -> dict[str, Any]:
        me = os.getpid()
        roles = self.roles()
        ours: set[int] = {me}
        role_ticks: dict[str, int] = {}
        for name, (_, pids) in roles.items():
            role_ticks[name] = 0
            for pid in pids:
                ticks, tree = _tree_ticks(pid)
                role_ticks[name] += ticks
                ours.update(tree)
        role_pids = set(ours)
        children = [p for p in descendants(me) if p not in role_pids]
        ours.update(children)
        stat = _stat(me)
        reaped = int(stat[1][13]) + int(stat[1][14]) if stat else 0
        # Reaped children of ours are the client's: roles are reaped only when stopped.
        role_ticks["client"] = reaped + sum(_ticks(p) for p in children)
        role_ticks["bench"] = _ticks(me, with_reaped=False)
        return {
            "t": time.monotonic(),
            "cpus": read_stat_cpus(),
            "roles": role_ticks,
            "placed": {name: cpus for name, (cpus, _) in roles.items()},
            "procs": _all_processes(),
            "ours": ours,
            "uptime": _uptime_ticks(),
        }

    def begin(self) -> None:
        self._begin = self._snapshot()
        self._seen = {}

    def peek(self) -> None:
        """Note every process now (the monitor does, once a second): one that comes
        and goes within the window is named too, with what it used until last seen."""
        if self._begin is not None:
            self._seen.update(_all_processes())

    def end(self) -> CoreWindow | None:
        """The window since :meth:`begin` (None if it was not begun)."""
        if self._begin is None:
            return None
        a, b = self._begin, self._snapshot()
        self._begin = None
        seconds = max(b["t"] - a["t"], 1e-3)
        scale = 1.0 / (_HZ * seconds)
        placed: dict[str, frozenset[int]] = dict(b["placed"])
        placed["client"] = placed["bench"] = self.client_cpus
        groups = _groups(placed)
        for group in groups:
            for cpu in group.cpus:
                idle0, steal0 = a["cpus"].get(cpu, (0, 0))
                idle1, steal1 = b["cpus"].get(cpu, (0, 0))
                steal = (steal1 - steal0) * scale
                group.steal += steal
                group.busy += max(0.0, 1.0 - (idle1 - idle0) * scale - steal)
            for name, cpus in placed.items():
                if cpus <= group.cpus and name in b["roles"]:
                    used = (b["roles"][name] - a["roles"].get(name, 0)) * scale
                    group.roles[name] = group.roles.get(name, 0.0) + max(0.0, used)
        ours = a["ours"] | b["ours"] | {os.getpid()}
        watched = frozenset().union(*placed.values())
        others = []
        for pid, (name, ticks, cpu, start, parent) in {**self._seen, **b["procs"]}.items():
            if pid in ours or parent in ours:
                continue  # ours, or a child of ours that came and went (a load worker)
            before = a["procs"].get(pid)
            if before is not None and before[3] == start:
                ticks -= before[1]
            elif start < a["uptime"]:
                continue  # there before the window began, yet not seen then: unknown
            cores = ticks * scale
            if cpu in watched and cores >= _NAMED_SHARE:
                others.append((name, pid, cores))
        self._seen = {}
        others.sort(key=lambda o: -o[2])
        return CoreWindow(seconds, groups, others)


def _groups(placed: dict[str, frozenset[int]]) -> list[Group]:
    """The CPU sets of the roles, overlapping ones merged."""
    sets: list[set[int]] = []
    for cpus in placed.values():
        merged = set(cpus)
        for other in [s for s in sets if s & merged]:
            merged |= other
            sets.remove(other)
        sets.append(merged)
    return [Group(frozenset(s)) for s in sorted(sets, key=min)]
