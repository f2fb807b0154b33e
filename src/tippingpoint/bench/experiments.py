"""The bench's experiments: one function per kind, in one table.

Each function runs one experiment of a scenario on the bench's topology and returns
an :class:`Outcome`: the summary row, the JSON entry of the report (with what its
charts need) and whether it was interrupted. A new kind is a new entry in
:data:`EXPERIMENTS`, not a new branch in the bench.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tippingpoint.bench.report import timeline
from tippingpoint.bench.scenario import Experiment, Scenario
from tippingpoint.bench.tls_cost import PROTOCOLS, TLSCost
from tippingpoint.bench.topology import Topology
from tippingpoint.engine.hold import HoldConfig, HoldTally
from tippingpoint.engine.runner import run_attack, run_hold
from tippingpoint.knee import KneeRule
from tippingpoint.model import AttackConfig, TLSOptions
from tippingpoint.monitor import Monitor, sampling
from tippingpoint.plan import ConnectionPlan, loopback_sources
from tippingpoint.proxy.config import ProxyConfig
from tippingpoint.report.merge import Named, summarize
from tippingpoint.report.text import render_text
from tippingpoint.stream import HoldRecord, Record
from tippingpoint.sweep import Row, SweepConfig, SweepResult, render_table, run_step, run_sweep
from tippingpoint.targets import Target

__all__ = ["EXPERIMENTS", "Bench", "Outcome", "describe", "url_of"]


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
    fd_limit: int
    cacert: str
    plans: dict[int, ConnectionPlan] = field(default_factory=dict)


@dataclass
class Outcome:
    row: str
    """The summary line: a sentence a person can repeat."""
    entry: dict[str, Any]
    """The experiment's part of summary.json and of the HTML report."""
    interrupted: bool = False


def url_of(bench: Bench, exp: Experiment) -> str:
    host, port = bench.scenario.http if exp.frontend == "http" else bench.scenario.https
    return f"{exp.frontend}://{host}:{port}{exp.path}"


def describe(exp: Experiment, url: str) -> str:
    if exp.kind == "tls-cost":
        rates = ", ".join(f"{r:,.0f}" for r in exp.rates)
        return (
            f"HAProxy's CPU at {rates} requests/s, {exp.step_duration:g} s each, with plain "
            "HTTP and TLS keep-alive, and TLS with a new connection per request (each stops "
            "at the first rate the client cannot offer)"
        )
    if exp.kind == "hold":
        asks = f"each asking {exp.path} every {exp.request_every:g} s" if exp.request_every else ""
        return (
            f"{exp.connections:,} connections to {url} opened at {exp.connect_rate:,.0f}/s "
            f"and held for {exp.duration:g} s from the start, " + (asks or "idle")
        )
    reuse = "keep-alive" if exp.keepalive else "a new connection per request"
    return f"{exp.method} {url}, {reuse}" + "".join(f", {n}: {v}" for n, v in exp.headers)


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


def _step_line(row: Row) -> str:
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
    if result.tipping_point:
        with_conns = (
            f" with {result.knee_connections:,d} connections"
            if result.knee_connections is not None
            else ""
        )
        return f"tipping point {result.tipping_point:,.0f}/s{with_conns} ({result.reason})"
    return f"no tipping point ({result.reason})"


def run_sweep_experiment(bench: Bench, index: int, exp: Experiment) -> Outcome:
    result = run_sweep(
        SweepConfig(
            attack=_attack_config(bench, exp),
            start=exp.start,
            step=exp.step,
            step_duration=exp.step_duration,
            max_steps=exp.max_steps,
            refine=exp.refine,
            rule=KneeRule(slo=exp.slo),
            out=bench.out / f"{index + 1:02d}-{exp.kind}",
            closed=exp.closed,
        ),
        bench.monitor,
        lambda row: bench.log(_step_line(row)),
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

        run_attack(_attack_config(bench, exp), on_record)
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


def _hold_topology(bench: Bench, extra: Topology, plan: ConnectionPlan, exp_dir: Path) -> None:
    """The backends and HAProxy instances a hold's plan needs beyond the bench's own: on
    the same ports (SO_REUSEPORT), for this experiment only, so that the other
    experiments keep the topology the scenario asked for."""
    scenario = bench.scenario
    more_serve = plan.server_processes - scenario.backend_processes
    more_proxy = plan.proxy_instances - scenario.proxy_instances
    if more_serve > 0:
        proc = extra.start_backends(
            scenario.backend_ports, more_serve, exp_dir / "serve.log", "backends (hold)", share=True
        )
        bench.monitor.add_role("backends (hold)", [proc.pid])
        extra.on_exit(lambda: bench.monitor.remove_role("backends (hold)"))
    if more_proxy > 0:
        fleet = extra.start_proxy(
            bench.binary,
            exp_dir / "proxy",
            bench.proxy_config,
            more_proxy,
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
    with Topology(bench.topology) as extra, open(exp_dir / "hold.jsonl", "wb") as stream:
        _hold_topology(bench, extra, plan, exp_dir)
        tally = HoldTally(exp.connections, 1, exp.connect_rate)

        def on_record(record: Record, line: bytes) -> None:
            stream.write(line)
            stream.flush()
            progress = tally.add(record) if isinstance(record, HoldRecord) else None
            if progress is not None:
                bench.log("  " + progress)

        def on_start(shards: int) -> None:
            tally.processes = shards

        with sampling(bench.monitor, bench.samples, step=f"hold {index}"):
            code = run_hold(config, on_record, bench.fd_limit, on_start)
    if code != 0:
        bench.log(f"  a hold process failed (exit {code}); see {exp_dir / 'hold.jsonl'}")
    summary = tally.summary()
    bench.log(summary)
    behind = tally.behind()
    entry = {"report": summary, "hold": tally.timeline, "client_behind": behind}
    row = summary.splitlines()[0] + (f"; {behind}" if behind else "")
    return Outcome(row, entry, tally.interrupted)


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

EXPERIMENTS: dict[str, Runner] = {
    "sweep": run_sweep_experiment,
    "attack": run_attack_experiment,
    "hold": run_hold_experiment,
    "tls-cost": run_tls_cost_experiment,
}
"""Experiment kinds: what a scenario's ``kind`` names, and the function that runs it."""
