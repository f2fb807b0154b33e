"""The connect storm (``connect-storm``): a fleet of devices reconnecting after an outage.

A step is a short hold: ``rate`` new connections a second for ``step_duration`` through
the proxy, MQTT sessions (``mqtt``, ``mqtts``: TCP, TLS, CONNECT and CONNACK) or
WebSockets (``ws``, ``wss``: TCP, TLS and the upgrade), judged on how long an open takes,
from connect() to open in every layer. The steps rise until that latency tips over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from tippingpoint.bench.apps import app_of
from tippingpoint.bench.experiments import (
    Bench,
    Outcome,
    at_knee,
    hold_topology,
    per_1000_entry,
    step_line,
    sweep_config,
    sweep_row,
    url_of,
)
from tippingpoint.bench.kinds.base import MQTT, MQTT_KEYS, STEP_KEYS, Kind, check_plan, steps_of
from tippingpoint.bench.spec import Experiment, Scenario, Steps
from tippingpoint.bench.topology import Topology
from tippingpoint.engine.hold import HoldConfig, HoldTally
from tippingpoint.limits import file_max
from tippingpoint.model import AttackConfig
from tippingpoint.monitor import Monitor, sampling
from tippingpoint.plan import ConnectionPlan, loopback_sources, plan_connections
from tippingpoint.schemes import SCHEMES
from tippingpoint.search import run_sweep
from tippingpoint.stream import HoldRecord, Record
from tippingpoint.sweep import Row, SweepConfig, machine_figures, render_table
from tippingpoint.targets import Target

__all__ = ["KIND", "StormSpec", "storm_rates", "storm_row", "storm_sessions"]


@dataclass(frozen=True, slots=True)
class StormSpec:
    steps: Steps


def parse(raw: dict[str, Any], where: str) -> StormSpec:
    return StormSpec(steps_of(raw, where))


def quick(spec: StormSpec) -> StormSpec:
    return StormSpec(spec.steps.quick())


_SETTLE_S: Final = 2.0
"""A step's connections have this long after the last open began to finish opening; an
open that takes longer fails as a timeout."""


def run(bench: Bench, index: int, exp: Experiment[StormSpec]) -> Outcome:
    out = bench.out / f"{index + 1:02d}-{exp.kind}"
    plan = bench.plans[index]
    hold = HoldConfig(
        target=Target("GET", url_of(bench, exp)),
        connections=1,
        connect_rate=exp.spec.steps.start,
        duration=1.0,
        laddrs=loopback_sources(plan.source_addresses),
        timeout=_SETTLE_S,
        cacert=bench.cacert,
        processes=bench.scenario.client_processes,
    )
    app = app_of(exp)
    hold = app.held(exp, hold, client_id="storm-%p-%i")
    scheme = SCHEMES[exp.frontend]
    noun = scheme.noun

    def step(
        config: SweepConfig,
        rate: float,
        n: int,
        monitor: Monitor | None,
        samples: list[dict[str, Any]],
    ) -> tuple[Row, bool]:
        return _storm_step(bench, exp, hold, out, rate, n, samples)

    out.mkdir(parents=True, exist_ok=True)
    with Topology(bench.topology) as extra:
        hold_topology(bench, extra, plan, out, bench.scenario.backend_of(exp))
        result = run_sweep(
            sweep_config(bench, index, exp, exp.spec.steps, AttackConfig(targets=(hold.target,))),
            bench.monitor,
            lambda row: bench.log(_storm_line(row)),
            step,
        )
    bench.samples.extend(result.monitor)
    bench.log(render_table(result).replace("requests/s", f"new {noun}/s"))
    row = sweep_row(result, exp, bench.scenario).replace("/s", f" new {noun}/s", 1)
    row = row.replace(" per request", " per open")
    entry = per_1000_entry(result, f"new {noun}/s", f"open latency ({' + '.join(scheme.layers)})")
    return Outcome(row + at_knee(result), entry, result.reason == "interrupted")


def _storm_line(row: Row) -> str:
    """A storm step as it ends; the client's CPU too, as a TLS client pays more per
    handshake than HAProxy does and its own queueing shows in the open latency."""
    cpu = [f"HAProxy CPU {row.proxy_cpu_pct:.0f}%"] if row.proxy_cpu_pct is not None else []
    if row.client_cpu_pct is not None:
        cpu.append(f"client CPU {row.client_cpu_pct:.0f}%")
    line = step_line(row).replace("/s:", " opens/s:", 1)
    return line + (f" ({', '.join(cpu)})" if cpu else "")


def _storm_step(
    bench: Bench,
    exp: Experiment[StormSpec],
    hold: HoldConfig,
    out: Path,
    rate: float,
    n: int,
    samples: list[dict[str, Any]],
) -> tuple[Row, bool]:
    """``rate`` new connections a second for ``step_duration``, then all of them closed."""
    steps = exp.spec.steps
    sessions = storm_sessions(steps, rate)
    config = replace(
        hold,
        connections=sessions,
        connect_rate=rate,
        duration=steps.step_duration + _SETTLE_S,
        request_every=None,
    )
    tally = HoldTally(sessions, 1, rate, scheme=exp.frontend)
    step_samples: list[dict[str, Any]] = []
    with open(out / f"step-{n:02d}-{rate:.0f}.jsonl", "wb") as stream:

        def on_record(record: Record, line: bytes) -> None:
            stream.write(line)
            if isinstance(record, HoldRecord):
                tally.add(record)

        def on_start(shards: int) -> None:
            tally.processes = shards

        with sampling(bench.monitor, step_samples, step=n, offered=rate) as sampled:
            bench.load.hold(config, on_record, on_start, tally)
    samples.extend(step_samples)
    row = storm_row(tally, rate, step_samples)
    row.account(sampled.cores)
    if row.client_load_pct is not None and row.client_load_pct >= 95:
        row.saturated = True  # the client's CPUs were full, whoever for
    return row, tally.interrupted


def storm_row(tally: HoldTally, rate: float, samples: list[dict[str, Any]]) -> Row:
    """One storm step as a sweep's row: its latency is the open's, from connect() to
    open in every layer (a device waits for all of them); its success is the share of
    connections that opened."""
    opened = tally.hists["open"]
    p50, p99 = (v / 1000 for v in opened.percentiles([50, 99]))
    success = min(1.0, tally.peak / tally.connections)
    # HAProxy's CPU over the seconds in which opens went out, not the settling after.
    opening = samples[: max(1, len(samples) - round(_SETTLE_S))]
    busy_client = tally.cpu_busy()
    return Row(
        offered=rate,
        achieved=rate * success,
        mean_ms=opened.mean / 1000 if opened.total else 0.0,
        p50_ms=p50,
        p99_ms=p99,
        success=success,
        **machine_figures(samples, opening),
        saturated=tally.behind() is not None,
        verdict="",
        p99_sustained_ms=p99,
        client_cpu_pct=None if busy_client is None else round(busy_client * 100, 1),
        fixed_pool=True,
    )


def describe(exp: Experiment[StormSpec], url: str, scenario: Scenario) -> str:
    steps = exp.spec.steps
    scheme = SCHEMES[exp.frontend]
    return (
        f"new {scheme.noun} ({' + '.join(scheme.layers)}) to "
        f"{app_of(exp).through(exp, url, scenario)} "
        f"at rising rates from {steps.start:,.0f}/s, {steps.step_duration:g} s of opens each, "
        "until the open latency tips over"
    )


def storm_rates(steps: Steps) -> list[float]:
    """The connect rates a storm steps through, before any refinement."""
    rates = [steps.start]
    for _ in range(steps.max_steps - 1):
        kind, amount = steps.step
        rates.append(rates[-1] * amount if kind == "x" else rates[-1] + amount)
    return rates


def storm_sessions(steps: Steps, rate: float) -> int:
    """A storm step opens ``rate`` sessions a second for ``step_duration``."""
    return max(1, round(rate * steps.step_duration))


def make_plan(
    scenario: Scenario,
    exp: Experiment[StormSpec],
    fd_limit: int,
    ports: tuple[int, int],
    memory: int | None,
) -> ConnectionPlan:
    """A storm is planned for its largest step: every session of it open at the end."""
    planned = plan_connections(
        storm_sessions(exp.spec.steps, storm_rates(exp.spec.steps)[-1]),
        fd_limit,
        ports,
        1,
        memory,
        proxied=True,
        scheme=exp.frontend,
        backend_ports=len(scenario.backend_of(exp).ports),
        file_max=file_max(),
    )
    return check_plan(scenario, exp, planned)


KIND: Final[Kind[StormSpec]] = Kind(
    "connect-storm",
    (*MQTT, "ws", "wss"),
    (*STEP_KEYS, *MQTT_KEYS, "path"),
    "sweep",
    parse,
    describe,
    run,
    make_plan,
    quick=quick,
    step_duration=lambda spec: spec.steps.step_duration,
    per_1000=True,
    costs_row=True,
)
