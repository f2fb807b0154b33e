"""What the article learnt the hard way, checked up front, with the exact fix for each.

Open-file limits (per process and system-wide), ephemeral ports per source and
destination pair, listen backlogs, TIME_WAIT reuse, conntrack, memory for the
connections wanted, and the timeouts that cut long requests. The arithmetic of "how
many processes, addresses and bytes" is :mod:`tippingpoint.plan`'s, shared with
``hold`` and ``bench``.
"""

from __future__ import annotations

import math
import re
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tippingpoint.limits import memory_available
from tippingpoint.plan import RESERVED_FDS, ConnectionPlan, plan_connections

__all__ = ["Check", "apply_fixes", "checks_here", "diagnose"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    value: str
    advice: str = ""
    sysctl: tuple[str, str] | None = None
    """``(key, value)`` that --apply can write."""


@dataclass
class _Sysctl:
    root: Path = Path("/proc/sys")
    reads: dict[str, str | None] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        if key not in self.reads:
            path = self.root / key.replace(".", "/")
            try:
                self.reads[key] = " ".join(path.read_text().split())
            except OSError:
                self.reads[key] = None
        return self.reads[key]


def checks_here(connections: int, asked: dict[str, Any]) -> list[Check]:
    """:func:`diagnose` on the machine this runs on (a cluster worker's, for
    ``doctor --cluster``): its checks alone, which travel back as they are."""
    return diagnose(connections, **asked)[0]


def diagnose(
    connections: int = 100_000,
    sleep_ms: int | None = None,
    client_timeout_s: float = 30.0,
    proc_sys: Path = Path("/proc/sys"),
    meminfo: Path = Path("/proc/meminfo"),
    rlimit: Callable[[], tuple[int, int]] = lambda: resource.getrlimit(resource.RLIMIT_NOFILE),
    mqtt_keepalive_s: float | None = None,
    haproxy_config: str | None = None,
    ws_ping_every_s: float | None = None,
) -> tuple[list[Check], ConnectionPlan]:
    sysctl = _Sysctl(proc_sys)
    checks, plan_limit = _descriptor_checks(sysctl, rlimit, connections)
    port_range = _network_checks(sysctl, connections, checks)
    available = memory_available(str(meminfo))
    plan = plan_connections(connections, plan_limit, port_range, 1, available)
    checks += _plan_checks(plan, connections, available)
    if sleep_ms is not None:
        longest = (sleep_ms + 1) / 1000
        ok = client_timeout_s > longest
        checks.append(
            Check(
                "timeouts that cut long requests",
                ok,
                f"sleep up to {longest:g} s; client --timeout {client_timeout_s:g} s; "
                "serve idle 3600 s; tippingpoint proxy 2 h",
                ""
                if ok
                else f"raise the client's --timeout above {longest:g} s (Vegeta's 30 s "
                "default failed half the article's requests)",
            )
        )
    if mqtt_keepalive_s is not None:
        checks.append(mqtt_timeouts(mqtt_keepalive_s, haproxy_config))
    if ws_ping_every_s is not None:
        checks.append(ws_timeouts(ws_ping_every_s, haproxy_config))
    return checks, plan


def _descriptor_checks(
    sysctl: _Sysctl, rlimit: Callable[[], tuple[int, int]], connections: int
) -> tuple[list[Check], int]:
    """The open-file limits, and the hard limit a plan may count on."""
    checks: list[Check] = []
    soft, hard = rlimit()
    plan_limit = hard if hard != resource.RLIM_INFINITY else 1 << 20
    checks.append(
        Check(
            "open files per process (RLIMIT_NOFILE)",
            soft == hard,
            f"soft {soft:,}, hard {hard:,}",
            ""
            if soft == hard
            else f"tippingpoint raises soft to hard itself; for other tools: ulimit -n {hard}",
        )
    )
    nr_open = sysctl.get("fs.nr_open")
    per_process = max(1, plan_limit - RESERVED_FDS)
    fits = plan_limit >= min(connections, 1_048_576) + RESERVED_FDS
    checks.append(
        Check(
            "hard limit per process",
            fits,
            f"{plan_limit:,} descriptors: {per_process:,} connections per process",
            ""
            if fits
            else f"{math.ceil(connections / per_process)} processes hold {connections:,} "
            "connections; tippingpoint adds processes by itself. To raise the hard limit "
            f"(needs CAP_SYS_RESOURCE): '* hard nofile {connections + 1024}' in "
            "/etc/security/limits.conf"
            + (f" and fs.nr_open >= {connections + 1024} (now {nr_open})" if nr_open else ""),
        )
    )
    return checks, plan_limit


def _network_checks(sysctl: _Sysctl, connections: int, checks: list[Check]) -> tuple[int, int]:
    """System-wide files, ports, backlogs, TIME_WAIT, conntrack (appended to ``checks``);
    the ephemeral port range."""
    file_max = sysctl.get("fs.file-max")
    needed_files = 2 * connections + 10_000
    if file_max is not None:
        ok = int(file_max) >= needed_files
        checks.append(
            Check(
                "system-wide open files (fs.file-max)",
                ok,
                f"{int(file_max):,}",
                "" if ok else f"sysctl -w fs.file-max={needed_files}",
                None if ok else ("fs.file-max", str(needed_files)),
            )
        )
    port_range = (32768, 60999)
    raw = sysctl.get("net.ipv4.ip_local_port_range")
    if raw:
        low, high = (int(x) for x in raw.split())
        port_range = (low, high)
        ports = high - low + 1
        wide = ports >= 60_000
        checks.append(
            Check(
                "ephemeral ports (net.ipv4.ip_local_port_range)",
                wide,
                f"{low}-{high}: {ports:,} connections per source address and destination port",
                ""
                if wide
                else "sysctl -w net.ipv4.ip_local_port_range='1024 65535' (and spread "
                "connections over source addresses: --laddr 127.0.0.2-127.0.0.N)",
                None if wide else ("net.ipv4.ip_local_port_range", "1024 65535"),
            )
        )
    for key, want in (("net.core.somaxconn", 65535), ("net.ipv4.tcp_max_syn_backlog", 65535)):
        value = sysctl.get(key)
        if value is not None:
            ok = int(value) >= want
            checks.append(
                Check(
                    f"listen backlog ({key})",
                    ok,
                    value,
                    "" if ok else f"sysctl -w {key}={want}",
                    None if ok else (key, str(want)),
                )
            )
    reuse = sysctl.get("net.ipv4.tcp_tw_reuse")
    if reuse is not None:
        ok = reuse in ("1", "2")
        checks.append(
            Check(
                "TIME_WAIT reuse for new outgoing connections (net.ipv4.tcp_tw_reuse)",
                ok,
                reuse + (" (loopback only)" if reuse == "2" else ""),
                ""
                if ok
                else "sysctl -w net.ipv4.tcp_tw_reuse=1 (closing from the client "
                "leaves ports in TIME_WAIT for 60 s)",
                None if ok else ("net.ipv4.tcp_tw_reuse", "1"),
            )
        )
    ct_max = sysctl.get("net.netfilter.nf_conntrack_max")
    if ct_max is not None:
        count = sysctl.get("net.netfilter.nf_conntrack_count") or "0"
        ok = int(ct_max) >= 2 * connections or int(count) == 0
        checks.append(
            Check(
                "conntrack table (net.netfilter.nf_conntrack_max)",
                ok,
                f"max {int(ct_max):,}, tracking {int(count):,} now",
                "" if ok else f"sysctl -w net.netfilter.nf_conntrack_max={2 * connections}",
                None if ok else ("net.netfilter.nf_conntrack_max", str(2 * connections)),
            )
        )
    return port_range


def _plan_checks(plan: ConnectionPlan, connections: int, available: int | None) -> list[Check]:
    """Memory, processes and source addresses for the connections."""
    return [
        Check(
            f"memory for {connections:,} connections (client and server here)",
            plan.feasible,
            f"about {plan.memory_bytes / 2**30:.2f} GiB needed"
            + (f", {available / 2**30:.1f} GiB available" if available else ""),
            "; ".join(plan.problems),
        ),
        Check(
            "processes and source addresses",
            True,
            f"{plan.client_processes} client process(es), {plan.source_addresses} source "
            f"address(es) per destination port",
        ),
    ]


_TIMEOUT = re.compile(r"^\s*timeout\s+(client|server|tunnel)\s+(\d+)(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 0.001}


def mqtt_timeouts(keepalive_s: float, haproxy_config: str | None) -> Check:
    """An idle MQTT session pings once per keepalive, and the broker waits 1.5x that: a
    proxy between them must let a session stay silent at least as long, or it cuts every
    idle session (HAProxy's usual `timeout client 30s` cuts keepalive-60 sessions at 30 s,
    the article's lesson about long requests, for MQTT)."""
    needed = 1.5 * keepalive_s
    name = "timeouts that cut idle MQTT sessions"
    if haproxy_config is None:
        return Check(
            name,
            needed <= 7200,
            f"keepalive {keepalive_s:g} s needs {needed:g} s of silence allowed; "
            "tippingpoint proxy allows 7200 s (--mqtt-timeout), serve --mqtt and broker "
            "follow the keepalive",
            "" if needed <= 7200 else f"tippingpoint proxy --mqtt-timeout {int(needed) + 1}s",
        )
    found = _mqtt_section_timeouts(haproxy_config)
    if not found:
        return Check(name, True, "no MQTT frontend in the HAProxy configuration")
    shortest = min(found.values())
    ok = shortest >= needed
    words = ", ".join(f"timeout {k} {v:g} s" for k, v in sorted(found.items()))
    return Check(
        name,
        ok,
        f"keepalive {keepalive_s:g} s needs {needed:g} s; HAProxy's MQTT sections: {words}",
        ""
        if ok
        else f"raise them to at least {int(needed) + 1} s (tippingpoint proxy --mqtt-timeout "
        f"{int(needed) + 1}s; in HAProxy: timeout client/server, or timeout tunnel)",
    )


def ws_timeouts(ping_every_s: float, haproxy_config: str | None) -> Check:
    """A held WebSocket is silent between its pings; once upgraded, HAProxy applies
    `timeout tunnel` (else the client and server timeouts) to it, and must let it stay
    silent 1.5x the ping interval (a late ping is not a dead connection)."""
    needed = 1.5 * ping_every_s
    name = "timeouts that cut idle WebSockets"
    if haproxy_config is None:
        ok = needed <= 7200
        return Check(
            name,
            ok,
            f"a ping every {ping_every_s:g} s needs {needed:g} s of silence allowed; "
            "tippingpoint proxy allows 7200 s (timeout tunnel)",
            "" if ok else "ping more often than every 4,800 s",
        )
    found = _http_tunnel_timeouts(haproxy_config)
    if not found:
        return Check(name, True, "no HTTP backend in the HAProxy configuration")
    shortest = min(found.values())
    ok = shortest >= needed
    words = ", ".join(f"{title}: {v:g} s" for title, v in sorted(found.items()))
    return Check(
        name,
        ok,
        f"a ping every {ping_every_s:g} s needs {needed:g} s; idle upgraded connections "
        f"are cut after {words}",
        "" if ok else f"set `timeout tunnel {int(needed) + 1}s` in those backends (or defaults)",
    )


def _sections(text: str) -> tuple[dict[str, float], list[tuple[str, dict[str, float], bool]]]:
    """The defaults' timeouts, and each frontend, backend and listen section's: its
    title, its own timeouts, and whether it carries MQTT."""
    defaults: dict[str, float] = {}
    sections: list[tuple[str, dict[str, float], bool]] = []
    current: dict[str, float] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        head = stripped.split(" ", 1)[0] if stripped else ""
        if head in ("defaults", "frontend", "backend", "listen", "global"):
            current = defaults if head == "defaults" else {}
            if head in ("frontend", "backend", "listen"):
                sections.append((stripped, current, False))
            continue
        if current is None:
            continue
        match = _TIMEOUT.match(line)
        if match:
            current[match.group(1)] = int(match.group(2)) * _UNITS[match.group(3)]
        if "mqtt_" in stripped and sections and sections[-1][1] is current:
            title, values, _ = sections[-1]
            sections[-1] = (title, values, True)
    return defaults, sections


def _http_tunnel_timeouts(text: str) -> dict[str, float]:
    """Per backend that does not carry MQTT: how long an upgraded connection may be idle
    (`timeout tunnel`, else the shorter of client and server)."""
    defaults, sections = _sections(text)
    found: dict[str, float] = {}
    for title, values, mqtt in sections:
        if mqtt or not title.startswith(("backend", "listen")):
            continue
        merged = {**defaults, **values}
        if "tunnel" in merged:
            found[title] = merged["tunnel"]
        elif "client" in merged or "server" in merged:
            found[title] = min(merged.get("client", 1e18), merged.get("server", 1e18))
    return found


def _mqtt_section_timeouts(text: str) -> dict[str, float]:
    """The timeouts that apply to the sections that carry MQTT (frontends and backends in
    TCP mode that validate or route on MQTT), defaults included."""
    defaults, sections = _sections(text)
    found: dict[str, float] = {}
    for _, values, mqtt in sections:
        if not mqtt:
            continue
        merged = {**defaults, **values}
        for key in ("client", "server"):
            if key in merged:
                value = max(merged[key], merged.get("tunnel", 0.0))
                found[key] = min(found.get(key, value), value)
    return found


def apply_fixes(checks: list[Check], proc_sys: Path = Path("/proc/sys")) -> list[str]:
    """Write the sysctls the failed checks name; one line per attempt."""
    lines = []
    for check in checks:
        if check.ok or check.sysctl is None:
            continue
        key, value = check.sysctl
        path = proc_sys / key.replace(".", "/")
        try:
            path.write_text(value + "\n")
            lines.append(f"set {key} = {value}")
        except OSError as e:
            lines.append(f"could not set {key} = {value}: {e.strerror} (run as root)")
    return lines
