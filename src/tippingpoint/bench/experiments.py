"""What every experiment kind runs on, and the pieces kinds share.

:class:`Bench` is the started bench (scenario, topology, monitor, where the load runs);
a kind's module in ``bench/kinds/`` runs one experiment on it and returns an
:class:`Outcome`: the summary row, the JSON entry of the report (with what its charts
need) and whether it was interrupted. Here too: the URL of an experiment, the attack it
makes, a sweep's steps and summary row, and the backends and HAProxy instances a bigger
hold adds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tippingpoint.bench.apps import app_of
from tippingpoint.bench.lab import Lab, lab_cpus
from tippingpoint.bench.spec import Backend, Experiment, Scenario, Steps
from tippingpoint.bench.topology import Topology
from tippingpoint.engine.runner import Load, Local
from tippingpoint.knee import KneeRule
from tippingpoint.model import AttackConfig, TLSOptions
from tippingpoint.monitor import Monitor
from tippingpoint.plan import ConnectionPlan
from tippingpoint.proxy.config import ProxyConfig
from tippingpoint.sweep import Row, SweepConfig, SweepResult
from tippingpoint.targets import Target

__all__ = [
    "Bench",
    "Outcome",
    "Runner",
    "at_knee",
    "attack_config",
    "hold_topology",
    "lift",
    "per_1000_entry",
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
    lab: Lab | None = None
    """The hosts of the roles, when they are not all this machine (``[hosts]``)."""


@dataclass
class Outcome:
    row: str
    """The summary line: a sentence a person can repeat."""
    entry: dict[str, Any]
    """The experiment's part of summary.json and of the HTML report."""
    interrupted: bool = False


def url_of(bench: Bench, exp: Experiment[Any], path: str | None = None) -> str:
    """The experiment's URL: the proxy's frontend, then ``path``, by default what its
    application puts there (a request's path; nothing for an MQTT session that only
    holds, a topic for one that publishes, which its kind gives)."""
    scenario = bench.scenario
    host, port = scenario.frontend_address(exp.frontend)
    return f"{exp.frontend}://{host}:{port}{app_of(exp).path(exp) if path is None else path}"


def attack_config(
    bench: Bench,
    exp: Experiment[Any],
    rate: float = 100.0,
    duration: float = 10.0,
    max_connections: int | None = None,
) -> AttackConfig:
    """The attack of an experiment's requests or messages (a sweep's steps set their
    own rate and duration)."""
    request = exp.request
    return AttackConfig(
        targets=(Target(request.method, url_of(bench, exp), request.headers, request.body),),
        keepalive=request.keepalive,
        timeout=exp.timeout,
        tls=TLSOptions(cacert=bench.cacert, resume=request.tls_resume),
        processes=bench.scenario.client_processes,
        rate=rate,
        duration=duration,
        max_connections=max_connections,
    )


def step_line(row: Row) -> str:
    key = (
        f"{row.connections:9,d} connections"
        if row.connections is not None
        else f"{row.offered:9,.0f}/s"
    )
    return f"  {key}: achieved {row.achieved:,.0f}/s, p99 {row.p99_ms:.2f} ms  {row.verdict}"


def lift(exp: Experiment[Any], scenario: Scenario) -> str:
    """What would lift a client limit, for this experiment."""
    ways = [f"more client processes ([client] processes, now {scenario.client_processes})"]
    if exp.frontend == "https" and not exp.request.keepalive and not exp.request.tls_resume:
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


def sweep_row(result: SweepResult, exp: Experiment[Any], scenario: Scenario) -> str:
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
            f"behind, not HAProxy{costs}; to go further: {lift(exp, scenario)}"
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


def sweep_config(
    bench: Bench, index: int, exp: Experiment[Any], steps: Steps, attack: AttackConfig
) -> SweepConfig:
    """The steps of a sweep-like experiment (a sweep, an MQTT sweep, a connect storm)."""
    return SweepConfig(
        attack=attack,
        start=steps.start,
        step=steps.step,
        step_duration=steps.step_duration,
        max_steps=steps.max_steps,
        refine=steps.refine,
        rule=KneeRule(slo=steps.slo),
        out=bench.out / f"{index + 1:02d}-{exp.kind}",
        closed=steps.closed,
        runner=bench.load.attack,
        confirm_steps=steps.confirm_steps,
    )


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
    if scenario.external is not None:
        if more_proxy > 0:
            bench.log(
                f"  the plan asks for {plan.proxy_instances} HAProxy instance(s): the external "
                "proxy is as its owner configured it"
            )
        more_proxy = 0
    if scenario.backends_external:
        more_serve = 0
    if bench.lab is not None and bench.lab.remote:
        _hold_lab(bench, bench.lab, extra, more_serve, more_proxy)
    elif more_serve > 0:
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
    if more_proxy > 0 and (bench.lab is None or not bench.lab.remote):
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


def _hold_lab(bench: Bench, lab: Lab, extra: Topology, more_serve: int, more_proxy: int) -> None:
    """A hold's added processes on the lab's hosts: serve on each backend host, HAProxy
    instances on the proxy's, joining the ports of those there."""
    cpus = lab_cpus(bench.scenario)
    if more_serve > 0:
        served = bench.scenario.served()
        lab.start_serve(extra, "backends (hold)", served, more_serve, cpus["backends"], True)
    if more_proxy > 0:
        lab.start_proxy(extra, "proxy (hold)", bench.proxy_config, more_proxy, cpus["proxy"], True)


Runner = Callable[[Bench, int, Experiment[Any]], Outcome]
