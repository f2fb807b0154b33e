"""``/metrics``: a running command's figures in Prometheus's text format (version 0.0.4).

Counters count from the start of each experiment (label ``experiment``) and never go
down while the command runs. Latency is a histogram whose buckets are counted from the
HDR histogram of every response so far; the generator's lateness is a summary. The
machine's figures are the newest monitor sample, labelled by ``host`` (and ``role``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from tippingpoint.hdr import Histogram
from tippingpoint.web.feed import Counts, State

__all__ = ["BUCKETS_S", "METRICS", "render_metrics"]

BUCKETS_S: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""The latency histogram's upper bounds, in seconds (``+Inf`` after them)."""

METRICS: Final[dict[str, tuple[str, str]]] = {
    "tippingpoint_sent_total": ("counter", "Requests or messages sent."),
    "tippingpoint_client_sent_total": (
        "counter",
        "Requests or messages sent, by client machine (a cluster run).",
    ),
    "tippingpoint_responses_total": ("counter", "Responses (or acknowledgements) by status."),
    "tippingpoint_failures_total": ("counter", "Requests that got no response, by reason."),
    "tippingpoint_connections_opened_total": ("counter", "Connections the load opened."),
    "tippingpoint_connections_closed_total": ("counter", "Connections the load closed."),
    "tippingpoint_latency_seconds": ("histogram", "Latency of each response."),
    "tippingpoint_lateness_seconds": (
        "summary",
        "How late the generator sent each request against its schedule.",
    ),
    "tippingpoint_offered_per_second": ("gauge", "The rate asked for now (0: closed loop)."),
    "tippingpoint_achieved_per_second": ("gauge", "Responses in the last whole second."),
    "tippingpoint_in_flight": ("gauge", "Requests sent and not yet answered."),
    "tippingpoint_open_connections": ("gauge", "Connections the attack holds open now."),
    "tippingpoint_held_connections": ("gauge", "Connections (or sessions) a hold holds."),
    "tippingpoint_lost_connections_total": ("counter", "Held connections that were lost."),
    "tippingpoint_step": ("gauge", "The step (attack) of the experiment running now."),
    "tippingpoint_running": ("gauge", "1 for the experiment running now."),
    "tippingpoint_run_ended": ("gauge", "1 once the command has ended."),
    "tippingpoint_tcp_established": ("gauge", "TCP connections established on the host."),
    "tippingpoint_memory_used_bytes": ("gauge", "Memory in use on the host."),
    "tippingpoint_network_packets_per_second": ("gauge", "Packets per second, by interface."),
    "tippingpoint_network_bytes_per_second": ("gauge", "Bytes per second, by interface."),
    "tippingpoint_role_cpu_cores": ("gauge", "CPU of a role's processes, in cores."),
    "tippingpoint_role_resident_memory_bytes": ("gauge", "Resident memory of a role."),
    "tippingpoint_haproxy_current_connections": ("gauge", "HAProxy's current connections."),
}
"""Every metric the endpoint exports: its type and help."""


def _escape(value: Any) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, Any]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Out:
    def __init__(self) -> None:
        self.families: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(self, name: str, value: float, suffix: str = "", **labels: Any) -> None:
        self.families[name].append(f"{name}{suffix}{_labels(labels)} {_number(value)}")

    def text(self) -> str:
        lines = []
        for name, samples in self.families.items():
            if not samples:
                continue
            kind, help_ = METRICS[name]
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def render_metrics(state: State) -> str:
    out = _Out()
    running = state.running.name if state.running is not None else None
    for name, counts in state.counts.items():
        _experiment(out, name, counts)
        out.add("tippingpoint_running", int(name == running), experiment=name)
    out.add("tippingpoint_run_ended", int(bool(state.ended)))
    if state.samples:
        sample = state.samples[-1]
        _machine(out, str(sample.get("host") or state.host), sample)
    return out.text()


def _experiment(out: _Out, name: str, c: Counts) -> None:
    out.add("tippingpoint_sent_total", c.sent, experiment=name)
    for host in sorted(c.by_host):
        out.add("tippingpoint_client_sent_total", c.by_host[host], experiment=name, host=host)
    codes = dict(c.codes)
    for per_process in c.hold_codes.values():
        for code, n in per_process.items():
            codes[code] = codes.get(code, 0) + n
    for code in sorted(codes):
        out.add("tippingpoint_responses_total", codes[code], experiment=name, status=code)
    failures = dict(c.errors)
    for failed in c.hold_failed.values():
        for reason, n in failed.items():
            failures[reason] = failures.get(reason, 0) + n
    for reason in sorted(failures):
        out.add("tippingpoint_failures_total", failures[reason], experiment=name, reason=reason)
    out.add("tippingpoint_connections_opened_total", c.opened, experiment=name)
    out.add("tippingpoint_connections_closed_total", c.closed, experiment=name)
    _histogram(out, name, c.latency)
    _summary(out, name, c.lateness)
    out.add("tippingpoint_offered_per_second", float(c.offered), experiment=name)
    out.add("tippingpoint_achieved_per_second", float(c.achieved), experiment=name)
    out.add("tippingpoint_in_flight", sum(c.in_flight.values()), experiment=name)
    out.add("tippingpoint_open_connections", sum(c.open.values()), experiment=name)
    if c.held:
        out.add("tippingpoint_held_connections", sum(c.held.values()), experiment=name)
        out.add("tippingpoint_lost_connections_total", sum(c.lost.values()), experiment=name)
    out.add("tippingpoint_step", c.step, experiment=name)


def _histogram(out: _Out, name: str, h: Histogram) -> None:
    metric = "tippingpoint_latency_seconds"
    for bound in BUCKETS_S:
        below = h.count_between(0, int(bound * 1_000_000) + 1) if h.total else 0
        out.add(metric, below, "_bucket", experiment=name, le=repr(bound))
    out.add(metric, h.total, "_bucket", experiment=name, le="+Inf")
    out.add(metric, h.total_sum / 1_000_000, "_sum", experiment=name)
    out.add(metric, h.total, "_count", experiment=name)


def _summary(out: _Out, name: str, h: Histogram) -> None:
    metric = "tippingpoint_lateness_seconds"
    for q, value in zip((0.5, 0.99), h.percentiles([50, 99]), strict=True):
        out.add(metric, value / 1_000_000, experiment=name, quantile=repr(q))
    out.add(metric, h.total_sum / 1_000_000, "_sum", experiment=name)
    out.add(metric, h.total, "_count", experiment=name)


def _machine(out: _Out, host: str, sample: dict[str, Any]) -> None:
    out.add("tippingpoint_tcp_established", sample.get("tcp_established", 0), host=host)
    out.add("tippingpoint_memory_used_bytes", sample.get("mem_used_kib", 0) * 1024, host=host)
    interfaces: dict[str, dict[str, float]] = sample.get("interfaces", {})
    for iface, rates in sorted(interfaces.items()):
        for direction in ("rx", "tx"):
            out.add(
                "tippingpoint_network_packets_per_second",
                float(rates.get(f"{direction}_packets_per_s", 0.0)),
                host=host, interface=iface, direction=direction,
            )  # fmt: skip
            out.add(
                "tippingpoint_network_bytes_per_second",
                float(rates.get(f"{direction}_bytes_per_s", 0.0)),
                host=host, interface=iface, direction=direction,
            )  # fmt: skip
    roles: Iterable[tuple[str, dict[str, Any]]] = sorted(sample.get("roles", {}).items())
    for role, figures in roles:
        out.add("tippingpoint_role_cpu_cores", figures["cpu_pct"] / 100, host=host, role=role)
        out.add(
            "tippingpoint_role_resident_memory_bytes",
            figures["rss_kib"] * 1024,
            host=host,
            role=role,
        )
    haproxy = sample.get("haproxy") or {}
    if "CurrConns" in haproxy:
        out.add("tippingpoint_haproxy_current_connections", haproxy["CurrConns"], host=host)
