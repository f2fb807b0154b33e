"""The machine as the article watched it in Ganglia, sampled once a second.

TCP established (the article's headline figure, from ``/proc/net/snmp``), socket
states and socket memory (``/proc/net/sockstat``), packets and bytes per second per
interface (``/proc/net/dev``), memory available and slab (``/proc/meminfo``), CPU %
and RSS per role (proxy, backends, clients: by PID and their children, via psutil),
and HAProxy's counters from its stats sockets. A watched process that disappears is
reported once, with its exit status when it was our child.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from tippingpoint import tap
from tippingpoint.cluster.facts import host_name
from tippingpoint.cores import read_stat_cpus
from tippingpoint.proxy.stats import show_info, sum_info

if TYPE_CHECKING:
    from tippingpoint.broker import SysWatcher
    from tippingpoint.cores import CoreWindow, Ledger

_HZ = os.sysconf("SC_CLK_TCK")

__all__ = [
    "Monitor",
    "Sampled",
    "loopback",
    "proxy_total",
    "read_cpu_ticks",
    "read_dev",
    "read_meminfo",
    "read_snmp",
    "read_sockstat",
    "sampling",
]


def read_cpu_ticks(
    cpus: Iterable[int], text: str | None = None, uptime: float | None = None
) -> tuple[int, int]:
    """``(busy, total)`` clock ticks of these CPUs since boot: total from the uptime,
    busy all of it but the idle and iowait ``/proc/stat`` gives (the kernel's network
    work, softirq, included: the processes it serves are not charged for it). The
    kernel counts idle time exactly but samples busy time on its tick, which misses most
    of a CPU that wakes for microseconds at a time (see
    :func:`tippingpoint.cores.read_stat_cpus`): busy is what idle leaves."""
    text = text if text is not None else Path("/proc/stat").read_text()
    if uptime is None:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    wanted = {f"cpu{c}" for c in cpus}
    idle = n = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name in wanted:
            ticks = [int(x) for x in rest.split()[:5]]
            idle += ticks[3] + ticks[4]
            n += 1
    total = round(uptime * _HZ) * n
    return max(0, total - idle), total


def read_snmp(text: str | None = None) -> dict[str, int]:
    """``Tcp:`` counters: CurrEstab, ActiveOpens, PassiveOpens, InSegs, OutSegs, ..."""
    text = text if text is not None else Path("/proc/net/snmp").read_text()
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("Tcp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}


def read_sockstat(text: str | None = None) -> dict[str, int]:
    """TCP sockets in use, orphans, time-wait, allocated, memory (pages)."""
    text = text if text is not None else Path("/proc/net/sockstat").read_text()
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("TCP:"):
            parts = line.split()[1:]
            out.update({f"tcp_{k}": int(v) for k, v in zip(parts[0::2], parts[1::2], strict=False)})
        elif line.startswith("sockets:"):
            out["sockets_used"] = int(line.split()[2])
    return out


def read_dev(text: str | None = None) -> dict[str, tuple[int, int, int, int]]:
    """Interface -> (rx bytes, rx packets, tx bytes, tx packets)."""
    text = text if text is not None else Path("/proc/net/dev").read_text()
    out = {}
    for line in text.splitlines()[2:]:
        name, _, rest = line.partition(":")
        f = rest.split()
        if len(f) >= 10:
            out[name.strip()] = (int(f[0]), int(f[1]), int(f[8]), int(f[9]))
    return out


def read_meminfo(text: str | None = None) -> dict[str, int]:
    """Values in KiB."""
    text = text if text is not None else Path("/proc/meminfo").read_text()
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[name] = int(parts[0])
    return out


@dataclass
class _Role:
    name: str
    pids: list[int]
    procs: dict[int, psutil.Process] = field(default_factory=dict)
    cpu: dict[int, float] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)


class Monitor:
    """Call :meth:`sample` once per interval; each call returns one flat record."""

    def __init__(
        self,
        roles: dict[str, list[int]] | None = None,
        haproxy_sockets: Callable[[], Iterable[Path]] | None = None,
        exit_status: Callable[[int], str | None] | None = None,
        on_event: Callable[[str], None] | None = None,
        brokers: Iterable[SysWatcher] = (),
        serve_metrics: Iterable[tuple[str, int]] = (),
    ) -> None:
        self.roles = [_Role(name, list(pids)) for name, pids in (roles or {}).items()]
        self.brokers = list(brokers)
        """mosquitto instances whose ``$SYS`` counters go into each record."""
        self.serve_metrics = list(serve_metrics)
        """`serve` metrics endpoints whose MQTT counters go into each record."""
        self._counters: dict[str, tuple[float, float, float]] = {}
        """Cumulative counter -> (value, when it last changed, rate then)."""
        self.haproxy_sockets = haproxy_sockets
        self.cores: Ledger | None = None
        """Accounts for every core the roles use, per step (see :mod:`tippingpoint.cores`)."""
        self.exit_status = exit_status
        self.on_event = on_event
        self.host = host_name()
        """The machine sampled: each record says which (monitor.jsonl, /metrics)."""
        self.hosts: Callable[[], dict[str, dict[str, Any]]] | None = None
        """A lab's hosts, each one's newest sample (``hosts`` of each record; the roles
        they carry merged into its ``roles``)."""
        self._last_cpus = read_stat_cpus()
        self.proxy_counters: Callable[[], dict[str, float]] | None = None
        """An external proxy's counters (its stats CSV or Prometheus endpoint)."""
        self._counters_failed = False
        self.start = time.monotonic()
        self._last_t = self.start
        self._last_snmp = read_snmp()
        self._last_dev = read_dev()
        for role in self.roles:
            self._refresh(role)

    def add_role(self, name: str, pids: list[int]) -> None:
        role = _Role(name, pids)
        self._refresh(role)
        self.roles.append(role)

    def remove_role(self, name: str) -> None:
        """Stop watching a role (before stopping its processes on purpose)."""
        self.roles = [role for role in self.roles if role.name != name]

    def _refresh(self, role: _Role) -> None:
        """Track the role's processes and their children (new workers appear)."""
        for pid in role.pids:
            if pid in role.gone:
                continue
            try:
                proc = role.procs.get(pid) or psutil.Process(pid)
                role.procs.setdefault(pid, proc)
                for child in proc.children(recursive=True):
                    if child.pid not in role.procs:
                        role.procs[child.pid] = child
                        role.cpu[child.pid] = _cpu(child)
                role.cpu.setdefault(pid, _cpu(proc))
            except psutil.NoSuchProcess:
                continue

    def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        dt = max(now - self._last_t, 1e-6)
        self._last_t = now
        record: dict[str, Any] = {
            "type": "monitor",
            "host": self.host,
            "t": round(now - self.start, 3),
            "epoch": time.time(),
        }
        snmp = read_snmp()
        record["tcp_established"] = snmp.get("CurrEstab", 0)
        for key, name in (
            ("InSegs", "segments_in_per_s"),
            ("OutSegs", "segments_out_per_s"),
            ("ActiveOpens", "active_opens_per_s"),
            ("PassiveOpens", "passive_opens_per_s"),
        ):
            record[name] = round((snmp.get(key, 0) - self._last_snmp.get(key, 0)) / dt, 1)
        self._last_snmp = snmp
        record.update(read_sockstat())
        dev = read_dev()
        interfaces = {}
        for name, values in dev.items():
            before = self._last_dev.get(name, values)
            rates = [round((a - b) / dt, 1) for a, b in zip(values, before, strict=True)]
            interfaces[name] = dict(
                zip(
                    ("rx_bytes_per_s", "rx_packets_per_s", "tx_bytes_per_s", "tx_packets_per_s"),
                    rates,
                    strict=True,
                )
            )
        self._last_dev = dev
        record["interfaces"] = interfaces
        mem = read_meminfo()
        record["mem_total_kib"] = mem.get("MemTotal", 0)
        record["mem_available_kib"] = mem.get("MemAvailable", 0)
        record["mem_used_kib"] = mem.get("MemTotal", 0) - mem.get("MemAvailable", 0)
        record["slab_kib"] = mem.get("Slab", 0)
        cpus = read_stat_cpus()
        record["cpus"] = core_use(self._last_cpus, cpus, dt)
        self._last_cpus = cpus
        record["load1"] = read_load()
        roles, events = self._roles(dt)
        record["roles"] = roles
        if self.hosts is not None:
            record["hosts"] = self.hosts()
            _merge(record, record["hosts"])
        if events:
            record["events"] = events
            if self.on_event is not None:
                for event in events:
                    self.on_event(event)
        if self.brokers:
            record["mosquitto"] = self._mosquitto(now)
        if self.serve_metrics:
            record["serve_mqtt"] = self._serve_mqtt(now)
        if self.haproxy_sockets is not None:
            infos = []
            for path in self.haproxy_sockets():
                try:
                    infos.append(show_info(path))
                except OSError:
                    continue
            if infos:
                record["haproxy"] = sum_info(infos)
        if self.proxy_counters is not None:
            self._external(record)
        return record

    def _external(self, record: dict[str, Any]) -> None:
        """An external proxy's counters into ``record``; a failure said once."""
        assert self.proxy_counters is not None
        try:
            record["haproxy"] = self.proxy_counters()
            self._counters_failed = False
        except RuntimeError as e:
            if not self._counters_failed and self.on_event is not None:
                self.on_event(f"the external proxy's counters: {e}")
            self._counters_failed = True

    def _roles(self, dt: float) -> tuple[dict[str, Any], list[str]]:
        """Each role's CPU (over the last ``dt`` seconds), memory and processes; the
        watched processes that are gone, in words."""
        roles: dict[str, Any] = {}
        events: list[str] = []
        for role in self.roles:
            self._refresh(role)
            cpu = 0.0
            rss = 0
            alive = 0
            for pid, proc in list(role.procs.items()):
                try:
                    total = _cpu(proc)
                    cpu += (total - role.cpu.get(pid, total)) / dt * 100
                    role.cpu[pid] = total
                    rss += proc.memory_info().rss
                    alive += 1
                except psutil.NoSuchProcess:
                    del role.procs[pid]
                    role.cpu.pop(pid, None)
                    if pid in role.pids:  # a watched process, not one of its children
                        role.gone.add(pid)
                        status = self.exit_status(pid) if self.exit_status else None
                        events.append(
                            f"{role.name} pid {pid} is gone" + (f": {status}" if status else "")
                        )
            roles[role.name] = {
                "cpu_pct": round(cpu, 1),
                "rss_kib": rss // 1024,
                "processes": alive,
            }
        return roles, events

    def _rate(self, name: str, value: float, now: float) -> float:
        """Per second, from a cumulative counter that may update less often than the
        samples (mosquitto's $SYS): the rate between its last two changes."""
        last = self._counters.get(name)
        if last is None:
            self._counters[name] = (value, now, 0.0)
            return 0.0
        before, then, rate = last
        if value != before:
            rate = max(0.0, (value - before) / max(now - then, 1e-6))
            self._counters[name] = (value, now, rate)
        return round(rate, 1)

    def _mosquitto(self, now: float) -> dict[str, float]:
        totals: dict[str, float] = {}
        for watcher in self.brokers:
            for key in _SYS_KEYS:
                value = watcher.number(key)
                if value is not None:
                    totals[key] = totals.get(key, 0.0) + value
        out = {"clients_connected": totals.get("clients/connected", 0.0)}
        for key, name in _SYS_KEYS.items():
            if name and key in totals:
                out[name] = self._rate("mosquitto " + key, totals[key], now)
        return out

    def _serve_mqtt(self, now: float) -> dict[str, float]:
        totals: dict[str, float] = {}
        for host, port in self.serve_metrics:
            for name, value in read_prometheus(host, port).items():
                totals[name] = totals.get(name, 0.0) + value
        prefix = "tippingpoint_serve_"
        out = {"sessions": totals.get(prefix + "connections_active", 0.0)}
        for metric, name in _SERVE_MQTT.items():
            if prefix + metric in totals:
                out[name] = self._rate("serve " + metric, totals[prefix + metric], now)
        return out


_SYS_KEYS: dict[str, str] = {
    "clients/connected": "",
    "publish/messages/received": "publish_received_per_s",
    "publish/messages/sent": "publish_sent_per_s",
    "bytes/received": "bytes_received_per_s",
    "bytes/sent": "bytes_sent_per_s",
}
_SERVE_MQTT: dict[str, str] = {
    "mqtt_connects_total": "connects_per_s",
    "mqtt_publish_received_total": "publish_received_per_s",
    "mqtt_pongs_total": "pongs_per_s",
    "mqtt_pingreq_total": "pings_per_s",
}


def read_prometheus(host: str, port: int) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text endpoint (``/metrics``); {} if down."""

    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace").splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


@dataclass
class Sampled:
    """What :func:`sampling` learned of its block once it has ended."""

    cores: CoreWindow | None = None
    """Every core the roles use, accounted for over the block (with a ledger)."""


@contextmanager
def sampling(monitor: Monitor | None, into: list[dict[str, Any]], **tags: Any) -> Iterator[Sampled]:
    """Sample ``monitor`` once a second in a thread while the block runs; each record,
    with ``tags`` added, is appended to ``into``. With a ledger, the block's core
    accounting is in the yielded :class:`Sampled` once it has ended."""
    sampled = Sampled()
    ledger = monitor.cores if monitor is not None else None
    if ledger is not None:
        ledger.begin()
    stop = threading.Event()

    def run() -> None:
        # At idle priority: the samples are taken in the time the load leaves over and
        # never preempt the generator that shares this process's CPUs.
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError):  # pragma: no cover - not Linux
            pass
        while not stop.wait(1.0):
            if ledger is not None:
                ledger.peek()
            if monitor is not None:
                record = monitor.sample()
                record.update(tags)
                into.append(record)
                tap.sample(record)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sampled
    finally:
        stop.set()
        thread.join()
        if ledger is not None:
            sampled.cores = ledger.end()


def core_use(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]], dt: float
) -> dict[str, dict[str, float]]:
    """Each core's busy and steal % over ``dt`` seconds, between two
    :func:`~tippingpoint.cores.read_stat_cpus`: busy is the wall time less idle and steal
    (the kernel counts idle exactly, busy only by sampling a tick)."""
    ticks = max(dt * _HZ, 1e-9)
    out = {}
    for cpu, (idle, steal) in after.items():
        if cpu not in before:
            continue
        idle0, steal0 = before[cpu]
        idle_pct = 100 * (idle - idle0) / ticks
        steal_pct = 100 * (steal - steal0) / ticks
        busy = min(100.0, max(0.0, 100 - idle_pct - steal_pct))
        out[str(cpu)] = {"busy_pct": round(busy, 1), "steal_pct": round(steal_pct, 1)}
    return out


def read_load() -> float:
    """The 1-minute load average."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def _merge(record: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> None:
    """The roles of a lab's hosts into ``record``'s (one role on several hosts: summed),
    and HAProxy's counters where the bench has none of its own."""
    roles = record["roles"]
    for sample in hosts.values():
        for name, role in sample.get("roles", {}).items():
            mine = roles.setdefault(name, {"cpu_pct": 0.0, "rss_kib": 0, "processes": 0})
            mine["cpu_pct"] = round(mine["cpu_pct"] + role["cpu_pct"], 1)
            mine["rss_kib"] += role["rss_kib"]
            mine["processes"] += role["processes"]
        if "haproxy" in sample and "haproxy" not in record:
            record["haproxy"] = sample["haproxy"]


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def loopback(record: dict[str, Any]) -> dict[str, float]:
    """The ``lo`` interface's rates (zeros when absent)."""
    return record.get("interfaces", {}).get("lo", {}) or {
        "rx_bytes_per_s": 0.0,
        "rx_packets_per_s": 0.0,
        "tx_bytes_per_s": 0.0,
        "tx_packets_per_s": 0.0,
    }


def proxy_total(record: dict[str, Any], key: str) -> float | None:
    """A figure (``cpu_pct``, ``rss_kib``) summed over every HAProxy role of a sample:
    the bench's instances and those an experiment started ("proxy (hold)"); None when
    the sample watched no HAProxy."""
    roles = record.get("roles", {})
    if "proxy" not in roles:
        return None
    return float(sum(r[key] for name, r in roles.items() if name.startswith("proxy")))
