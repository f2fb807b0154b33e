"""The bench's experiments: one function per kind, in one table.

Each function runs one experiment of a scenario on the bench's topology and returns
an :class:`Outcome`: the summary row, the JSON entry of the report (with what its
charts need) and whether it was interrupted. A new kind is a new entry in
:data:`tippingpoint.bench.table.EXPERIMENTS`, not a new branch in the bench.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tippingpoint.bench.apps import app_of
from tippingpoint.bench.report import timeline
from tippingpoint.bench.scenario import Backend, Experiment, Scenario
from tippingpoint.bench.tls_cost import PROTOCOLS, TLSCost
from tippingpoint.bench.topology import Topology
from tippingpoint.engine.hold import HoldConfig, HoldTally
from tippingpoint.engine.runner import Load, Local, Sink
from tippingpoint.knee import KneeRule
from tippingpoint.model import AttackConfig, TLSOptions
from tippingpoint.monitor import Monitor, proxy_total, sampling
from tippingpoint.plan import ConnectionPlan, costs_of, loopback_sources
from tippingpoint.proxy.config import ProxyConfig
from tippingpoint.report.merge import Named, summarize
from tippingpoint.report.text import render_text
from tippingpoint.schemes import SCHEMES
from tippingpoint.search import run_sweep
from tippingpoint.stream import HoldRecord, Record
from tippingpoint.sweep import Row, SweepConfig, SweepResult, render_table, run_step
from tippingpoint.targets import Target

__all__ = [
    "Bench",
    "Outcome",
    "Runner",
    "cost_sentence",
    "describe",
    "hold_topology",
    "proxy_cost",
    "step_line",
    "sweep_config",
    "sweep_row",
    "url_of",
]


@dataclass
class Bench:
    """What every experiment runs on: the scenario, the started topology, the monitor."""

    scenario: Scenario
    out: Path
    log: Callable[[str], None]
    topology: Topology
    monitor: Monitor
    samples: list[dict[str, Any]]
    proxy_config: ProxyConfig
    binary: str
    cacert: str
    cpus: dict[str, tuple[int, ...]]
    """Each role's CPUs (proxy, backends, brokers, client)."""
    plans: dict[int, ConnectionPlan] = field(default_factory=dict)
    load: Load = field(default_factory=Local)
    """Where the client side runs: this machine, or the workers of ``[cluster]``."""

    def attack(self, config: AttackConfig, on_record: Sink) -> int:
        return self.load.attack(config, on_record)

    def hold(
        self,
        config: HoldConfig,
        on_record: Sink,
        on_start: Callable[[int], None],
        tally: HoldTally | None = None,
    ) -> int:
        return self.load.hold(config, on_record, on_start, tally)


@dataclass
class Outcome:
    row: str
    """The summary line: a sentence a person can repeat."""
    entry: dict[str, Any]
    """The experiment's part of summary.json and of the HTML report."""
    interrupted: bool = False


def url_of(bench: Bench, exp: Experiment) -> str:
    """The experiment's URL: the proxy's frontend (an MQTT sweep's: with its topic)."""
    scenario = bench.scenario
    host, port = scenario.frontend_address(exp.frontend)
    return f"{exp.frontend}://{host}:{port}{app_of(exp).path(exp, scenario)}"


def describe(exp: Experiment, url: str, scenario: Scenario) -> str:
    """The experiment in a sentence, by its kind (:data:`_DESCRIBE`)."""
    return _DESCRIBE[exp.kind](exp, url, scenario)


def _requests(exp: Experiment, url: str, scenario: Scenario) -> str:
    """A sweep's or an attack's hits: HTTP requests, or messages over WebSockets."""
    return app_of(exp).hits(exp, url)


def _tls_cost(exp: Experiment, url: str, scenario: Scenario) -> str:
    rates = ", ".join(f"{r:,.0f}" for r in exp.rates)
    return (
        f"HAProxy's CPU at {rates} requests/s, {exp.step_duration:g} s each, with plain "
        "HTTP and TLS keep-alive, and TLS with a new connection per request (each stops "
        "at the first rate the client cannot offer)"
    )


def _hold(exp: Experiment, url: str, scenario: Scenario) -> str:
    app = app_of(exp)
    return (
        f"{exp.connections:,} {costs_of(exp.frontend).noun} to "
        f"{app.through(exp, url, scenario)} opened at "
        f"{exp.connect_rate:,.0f}/s and held for {exp.duration:g} s from the start, "
        f"{app.pace(exp)}"
    )


def _storm(exp: Experiment, url: str, scenario: Scenario) -> str:
    scheme = SCHEMES[exp.frontend]
    return (
        f"new {scheme.noun} ({' + '.join(scheme.layers)}) to "
        f"{app_of(exp).through(exp, url, scenario)} "
        f"at rising rates from {exp.start:,.0f}/s, {exp.step_duration:g} s of opens each, "
        "until the open latency tips over"
    )


def _mqtt_sweep(exp: Experiment, url: str, scenario: Scenario) -> str:
    latency = {
        "echo": "the backend's pong",
        "delivery": f"delivery to {exp.sessions} subscribers",
        "ack": "the broker's acknowledgement",
    }[scenario.until(exp)]
    return (
        f"QoS {exp.qos} PUBLISH of {exp.payload_size} B to "
        f"{app_of(exp).through(exp, url, scenario)} "
        f"from {exp.sessions} sessions at rising rates from {exp.start:,.0f}/s, latency "
        f"until {latency}"
    )


_DESCRIBE: dict[str, Callable[[Experiment, str, Scenario], str]] = {
    "sweep": _requests,
    "attack": _requests,
    "hold": _hold,
    "tls-cost": _tls_cost,
    "mqtt-sweep": _mqtt_sweep,
    "mqtt-hold": _hold,
    "connect-storm": _storm,
}


def _attack_config(bench: Bench, exp: Experiment) -> AttackConfig:
    return AttackConfig(
        targets=(Target(exp.method, url_of(bench, exp), exp.headers, exp.body),),
        keepalive=exp.keepalive,
        timeout=exp.timeout,
        tls=TLSOptions(cacert=bench.cacert, resume=exp.tls_resume),
        processes=bench.scenario.client_processes,
        rate=exp.rate,
        duration=exp.duration,
        max_connections=exp.max_connections,
    )


def step_line(row: Row) -> str:
    key = (
        f"{row.connections:9,d} connections"
        if row.connections is not None
        else f"{row.offered:9,.0f}/s"
    )
    return f"  {key}: achieved {row.achieved:,.0f}/s, p99 {row.p99_ms:.2f} ms  {row.verdict}"


def _lift(exp: Experiment, scenario: Scenario) -> str:
    """What would lift a client limit, for this experiment."""
    ways = [f"more client processes ([client] processes, now {scenario.client_processes})"]
    if exp.frontend == "https" and not exp.keepalive and not exp.tls_resume:
        ways.append("TLS session resumption (tls_resume = true)")
    ways.append("more client machines")
    return ", ".join(ways[:-1]) + " or " + ways[-1]


def _costs(row: Row, processes: int) -> str:
    """Why the client was the limit, in CPU per request on each side (a TLS client spends
    more per handshake than the server: it decodes and verifies the certificate)."""
    if not row.client_cpu_pct or not row.proxy_cpu_pct or row.achieved <= 0:
        return ""
    client = row.client_cpu_pct * 10_000 * processes / row.achieved  # mean per process
    proxy = row.proxy_cpu_pct * 10_000 / row.achieved
    return f" (it spent {client:,.0f} µs of CPU per request where HAProxy spent {proxy:,.0f} µs)"


def sweep_row(result: SweepResult, exp: Experiment, scenario: Scenario) -> str:
    """The summary row of a sweep; a client-limited sweep gives no tipping point."""
    if result.client_limited and result.rows:
        last = result.rows[-1]
        unit = " connections" if result.closed else "/s"
        cpu = (
            f"HAProxy CPU {last.proxy_cpu_pct:.0f}% at that step"
            if last.proxy_cpu_pct is not None
            else "HAProxy CPU not sampled"
        )
        costs = _costs(last, scenario.client_processes)
        return (
            f"client-limited at {last.key:,.0f}{unit} ({cpu}): the load generator fell "
            f"behind, not HAProxy{costs}; to go further: {_lift(exp, scenario)}"
        )
    if result.tipping_point and result.closed:
        return (
            f"tipping point {result.tipping_point:,.0f}/s with "
            f"{result.knee_connections:,d} connections, the knee between "
            f"{result.knee_range()} ({result.reason})"
        )
    if result.tipping_point:
        return f"tipping point {result.knee_range()} ({result.reason})"
    return f"no tipping point ({result.reason})"


def _per_thousand(rows: list[Row]) -> list[float | None]:
    """HAProxy's CPU per 1,000 messages (or opens) a second, at each step."""
    return [
        round(r.proxy_cpu_pct * 1000 / r.achieved, 3)
        if r.proxy_cpu_pct is not None and r.achieved > 0
        else None
        for r in rows
    ]


def per_1000_entry(result: SweepResult, unit: str, latency: str) -> dict[str, Any]:
    """A sweep's entry whose steps carry HAProxy's CPU per 1,000 a second of ``unit``."""
    sweep = result.to_json()
    for step, cost in zip(sweep["steps"], _per_thousand(result.rows), strict=True):
        step["proxy_cpu_per_1000"] = cost
    return {"sweep": sweep, "unit": unit, "latency": latency}


def at_knee(result: SweepResult) -> str:
    """HAProxy's CPU at the tipping point, per 1,000 a second."""
    at = [r for r in result.rows if r.key == result.tipping_point]
    cost = _per_thousand(at)
    if not at or cost[0] is None:
        return ""
    return f"; HAProxy there: {at[0].proxy_cpu_pct:.0f} % of a core, {cost[0]:.2f} % per 1,000/s"


def sweep_config(bench: Bench, index: int, exp: Experiment, attack: AttackConfig) -> SweepConfig:
    """The steps of a sweep-like experiment (a sweep, an MQTT sweep, a connect storm)."""
    return SweepConfig(
        attack=attack,
        start=exp.start,
        step=exp.step,
        step_duration=exp.step_duration,
        max_steps=exp.max_steps,
        refine=exp.refine,
        rule=KneeRule(slo=exp.slo),
        out=bench.out / f"{index + 1:02d}-{exp.kind}",
        closed=exp.closed,
        runner=bench.load.attack,
        confirm_steps=exp.confirm_steps,
    )


def run_sweep_experiment(bench: Bench, index: int, exp: Experiment) -> Outcome:
    result = run_sweep(
        sweep_config(bench, index, exp, _attack_config(bench, exp)),
        bench.monitor,
        lambda row: bench.log(step_line(row)),
    )
    bench.samples.extend(result.monitor)
    bench.log(render_table(result))
    sweep = result.to_json()
    row = sweep_row(result, exp, bench.scenario)
    if result.client_limited:
        sweep["client_limited_at"] = result.rows[-1].key if result.rows else None
        sweep["lift"] = _lift(exp, bench.scenario)
    interrupted = result.reason == "interrupted" or any(
        "interrupted" in r.verdict for r in result.rows
    )
    return Outcome(row, {"sweep": sweep}, interrupted)


def run_attack_experiment(bench: Bench, index: int, exp: Experiment) -> Outcome:
    exp_dir = bench.out / f"{index + 1:02d}-{exp.kind}"
    exp_dir.mkdir(parents=True, exist_ok=True)
    step = f"attack {index}"
    records: list[Named] = []
    with (
        open(exp_dir / "attack.jsonl", "wb") as stream,
        sampling(bench.monitor, bench.samples, step=step),
    ):

        def on_record(record: Record, line: bytes) -> None:
            stream.write(line)
            records.append((exp.name, record))

        bench.attack(_attack_config(bench, exp), on_record)
    summary = summarize(records)
    report = render_text(summary)
    bench.log(report)
    peak = max((s["tcp_established"] for s in bench.samples if s.get("step") == step), default=0)
    p99 = summary.hists["latency"].percentile(99) / 1000
    row = (
        f"{summary.requests:,} requests, success {summary.success_ratio * 100:.2f}%, "
        f"p99 {p99:.1f} ms, peak TCP established {peak:,}"
    )
    entry = {"report": report, "timeline": timeline([r for _, r in records])}
    return Outcome(row, entry, summary.interrupted)


def hold_topology(
    bench: Bench, extra: Topology, plan: ConnectionPlan, exp_dir: Path, backend: Backend
) -> None:
    """The backends and HAProxy instances a hold's plan needs beyond the bench's own: on
    the same ports (SO_REUSEPORT), for this experiment only, so that the other
    experiments keep the topology the scenario asked for. (mosquitto cannot share a
    port: its instances are the scenario's, one per MQTT port, checked by the plan.)"""
    scenario = bench.scenario
    more_serve = plan.server_processes - scenario.backend_processes
    if not backend.shares_ports:
        more_serve = 0
    more_proxy = plan.proxy_instances - scenario.proxy_instances
    if more_serve > 0:
        proc = extra.start_backends(
            scenario.served(),
            more_serve,
            exp_dir / "serve.log",
            bench.cpus["backends"],
            "backends (hold)",
            share=True,
        )
        bench.monitor.add_role("backends (hold)", [proc.pid])
        extra.on_exit(lambda: bench.monitor.remove_role("backends (hold)"))
    if more_proxy > 0:
        fleet = extra.start_proxy(
            bench.binary,
            exp_dir / "proxy",
            bench.proxy_config,
            more_proxy,
            bench.cpus["proxy"],
            "proxy (hold)",
            share=True,
            grace=1.0,
        )
        bench.monitor.add_role("proxy (hold)", fleet.pids)
        extra.on_exit(lambda: bench.monitor.remove_role("proxy (hold)"))
    if more_serve > 0 or more_proxy > 0:
        bench.log(
            f"  started {max(0, more_serve)} more backend process(es) and "
            f"{max(0, more_proxy)} more HAProxy instance(s) for this hold"
        )


def run_hold_experiment(bench: Bench, index: int, exp: Experiment) -> Outcome:
    exp_dir = bench.out / f"{index + 1:02d}-{exp.kind}"
    exp_dir.mkdir(parents=True, exist_ok=True)
    plan = bench.plans[index]
    config = HoldConfig(
        target=Target(exp.method, url_of(bench, exp), exp.headers, exp.body),
        connections=exp.connections,
        connect_rate=exp.connect_rate,
        duration=exp.duration,
        request_every=exp.request_every,
        laddrs=loopback_sources(plan.source_addresses),
        timeout=exp.timeout,
        cacert=bench.cacert,
        processes=bench.scenario.client_processes,
    )
    app = app_of(exp)
    config = app.held(exp, config)
    step = f"hold {index}"
    with Topology(bench.topology) as extra, open(exp_dir / "hold.jsonl", "wb") as stream:
        hold_topology(bench, extra, plan, exp_dir, bench.scenario.backend_of(exp))
        tally = HoldTally(exp.connections, 1, exp.connect_rate, scheme=exp.frontend)

        def on_record(record: Record, line: bytes) -> None:
            stream.write(line)
            stream.flush()
            progress = tally.add(record) if isinstance(record, HoldRecord) else None
            if progress is not None:
                bench.log("  " + progress)

        def on_start(shards: int) -> None:
            tally.processes = shards

        before = bench.monitor.sample()  # HAProxy's memory before the first connection
        with sampling(bench.monitor, bench.samples, step=step):
            code = bench.hold(config, on_record, on_start, tally)
    if code not in (0, 130, 143):  # a signal's stop is not a failure
        bench.log(f"  a hold process failed (exit {code}); see {exp_dir / 'hold.jsonl'}")
    summary = tally.summary()
    bench.log(summary)
    behind = tally.behind()
    cost = proxy_cost(
        [before, *(s for s in bench.samples if s.get("step") == step)],
        tally.peak,
        max(exp.connections / exp.connect_rate, tally.reached or 0.0),  # the ramp as it ran
    )
    entry = {"report": summary, "hold": tally.timeline, "client_behind": behind, "cost": cost}
    row = summary.splitlines()[0] + (f"; {behind}" if behind else "")
    sentence = cost_sentence(exp, cost)
    if sentence:
        bench.log("  " + sentence)
        row = sentence + "; " + row
    return Outcome(row, entry, tally.interrupted)


def proxy_cost(samples: list[dict[str, Any]], held: int, ramp_s: float) -> dict[str, float] | None:
    """HAProxy's memory and CPU while ``held`` connections or sessions stay open: its
    RSS at the peak over its RSS in the first sample (taken before the hold began), and
    its mean CPU over the samples after the ramp (all its instances, the hold's own
    included)."""
    if not samples or held <= 0:
        return None

    def proxy(sample: dict[str, Any], key: str) -> float:
        return proxy_total(sample, key) or 0.0

    start = samples[0]["t"]
    after = [s for s in samples if s["t"] - start >= ramp_s + 2]
    if not after:
        return None
    rss = max(proxy(s, "rss_kib") for s in samples) * 1024
    grown = rss - proxy(samples[0], "rss_kib") * 1024
    cpu = statistics.mean(proxy(s, "cpu_pct") for s in after)
    return {
        "held": held,
        "rss_bytes": rss,
        "bytes_per_connection": max(0.0, grown) / held,
        "cpu_pct": round(cpu, 2),
        "cpu_pct_per_1000": round(cpu * 1000 / held, 4),
    }


def cost_sentence(exp: Experiment, cost: dict[str, float] | None) -> str:
    """ "500,000 MQTT sessions through HAProxy cost 0.9 GiB of HAProxy memory and 4 % of
    a core at keepalive 60 s", from the hold's samples."""
    if cost is None:
        return ""
    app = app_of(exp)
    what = costs_of(exp.frontend).noun + (" over TLS" if SCHEMES[exp.frontend].tls else "")
    pace = app.pace(exp)
    # HAProxy keeps the memory pools that earlier experiments grew: a small hold after
    # them may not grow its RSS at all, and then says only what it had.
    each = cost["bytes_per_connection"]
    growth = f" ({each / 1000:,.1f} KB each over what it had before)" if each >= 100 else ""
    return (
        f"{int(cost['held']):,} {what} through HAProxy cost {cost['rss_bytes'] / 2**30:.2f} GiB "
        f"of HAProxy memory{growth} and {cost['cpu_pct']:.1f} % of a core {pace}"
    )


def run_tls_cost_experiment(bench: Bench, index: int, exp: Experiment) -> Outcome:
    """The same rates three ways (see bench/tls_cost.py); each way stops at its first
    rate that the client could not offer or the proxy could not serve."""
    out = bench.out / f"{index + 1:02d}-{exp.kind}"
    cost = TLSCost()
    for protocol in PROTOCOLS:
        way = replace(exp, frontend=protocol.frontend, keepalive=protocol.keepalive)
        config = SweepConfig(
            attack=_attack_config(bench, way),
            start=exp.rates[0],
            step_duration=exp.step_duration,
            out=out / protocol.key,
        )
        for step, rate in enumerate(exp.rates):
            row, summary = run_step(config, rate, step, bench.monitor, bench.samples)
            point = cost.add(protocol.key, row)
            cpu = "-" if point.proxy_cpu_pct is None else f"{point.proxy_cpu_pct:.1f}%"
            bench.log(
                f"  {protocol.label}, {rate:,.0f}/s: achieved {row.achieved:,.0f}/s, "
                f"HAProxy CPU {cpu}, p99 {row.p99_ms:.2f} ms"
                + (f" - {point.limited}" if point.limited else "")
            )
            if summary.interrupted:
                return Outcome(cost.sentence(), {"tls_cost": cost.to_json()}, True)
            if point.limited:
                break
    bench.log(cost.table())
    return Outcome(cost.sentence(), {"tls_cost": cost.to_json()})


Runner = Callable[[Bench, int, Experiment], Outcome]
