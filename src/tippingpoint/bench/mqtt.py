"""The bench's MQTT experiments: the publish-rate tipping point and the connect storm.

Both are sweeps. An ``mqtt-sweep`` step publishes at one rate from a fixed set of
sessions through the proxy's MQTT frontend; its latency ends where the scenario says
(the backend's pong, or delivery to a subscriber). A ``connect-storm`` step is a short
hold: ``rate`` new sessions a second for ``step_duration``, as a fleet of devices
reconnecting after an outage, judged on how long an open takes (TCP connect and
CONNACK). Held MQTT sessions (``mqtt-hold``) are the bench's hold with MQTT sessions.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tippingpoint.bench.experiments import (
    Bench,
    Outcome,
    hold_topology,
    step_line,
    sweep_config,
    sweep_row,
    topic_of,
    url_of,
)
from tippingpoint.bench.scenario import Experiment, storm_sessions
from tippingpoint.bench.topology import Topology
from tippingpoint.engine.hold import HoldConfig, HoldTally
from tippingpoint.model import AttackConfig, MQTTOptions, PublishConfig, TLSOptions
from tippingpoint.monitor import Monitor, sampling
from tippingpoint.plan import loopback_sources
from tippingpoint.search import run_sweep
from tippingpoint.stream import HoldRecord, Record
from tippingpoint.sweep import (
    Row,
    SweepConfig,
    SweepResult,
    machine_figures,
    render_table,
)
from tippingpoint.targets import Target

__all__ = ["run_connect_storm", "run_mqtt_sweep"]

_STORM_SETTLE_S = 2.0
"""A storm step's sessions have this long after the last CONNECT to get their CONNACK;
an open that takes longer fails as a timeout."""


def _publish_config(bench: Bench, exp: Experiment) -> AttackConfig:
    until = bench.scenario.until(exp)
    # Sessions of one run share a user name: a proxy that sticks sessions to a broker
    # by user name puts a publisher and its subscribers on the same mosquitto.
    options = MQTTOptions(keepalive=exp.mqtt_keepalive, username=f"bench-{exp.name}"[:64])
    return AttackConfig(
        targets=(Target("PUBLISH", url_of(bench, exp)),),
        timeout=exp.timeout,
        tls=TLSOptions(cacert=bench.cacert),
        processes=bench.scenario.client_processes,
        rate=exp.start,
        duration=exp.step_duration,
        connections=exp.sessions,
        mqtt=PublishConfig(
            options=options,
            topic=topic_of(bench.scenario, exp),
            qos=exp.qos,
            payload_size=exp.payload_size,
            until=until,
            subscribers=exp.sessions if until == "delivery" else 0,
        ),
    )


def _per_thousand(rows: list[Row]) -> list[float | None]:
    """HAProxy's CPU per 1,000 messages (or opens) a second, at each step."""
    return [
        round(r.proxy_cpu_pct * 1000 / r.achieved, 3)
        if r.proxy_cpu_pct is not None and r.achieved > 0
        else None
        for r in rows
    ]


def _entry(result: SweepResult, unit: str, latency: str) -> dict[str, Any]:
    sweep = result.to_json()
    for step, cost in zip(sweep["steps"], _per_thousand(result.rows), strict=True):
        step["proxy_cpu_per_1000"] = cost
    return {"sweep": sweep, "unit": unit, "latency": latency}


def _at_knee(result: SweepResult) -> str:
    """HAProxy's CPU at the tipping point, per 1,000 a second."""
    at = [r for r in result.rows if r.key == result.tipping_point]
    cost = _per_thousand(at)
    if not at or cost[0] is None:
        return ""
    return f"; HAProxy there: {at[0].proxy_cpu_pct:.0f} % of a core, {cost[0]:.2f} % per 1,000/s"


def run_mqtt_sweep(bench: Bench, index: int, exp: Experiment) -> Outcome:
    result = run_sweep(
        sweep_config(bench, index, exp, _publish_config(bench, exp)),
        bench.monitor,
        lambda row: bench.log(step_line(row)),
    )
    bench.samples.extend(result.monitor)
    bench.log(render_table(result).replace("requests/s", "messages/s"))
    until = bench.scenario.until(exp)
    row = sweep_row(result, exp, bench.scenario).replace("/s", " messages/s", 1)
    row = row.replace(" per request", " per message")
    entry = _entry(result, "messages/s", f"{until} latency")
    interrupted = result.reason == "interrupted"
    return Outcome(row + _at_knee(result), entry, interrupted)


def run_connect_storm(bench: Bench, index: int, exp: Experiment) -> Outcome:
    out = bench.out / f"{index + 1:02d}-{exp.kind}"
    plan = bench.plans[index]
    hold = HoldConfig(
        target=Target("GET", url_of(bench, exp)),
        connections=1,
        connect_rate=exp.start,
        duration=1.0,
        laddrs=loopback_sources(plan.source_addresses),
        timeout=_STORM_SETTLE_S,
        cacert=bench.cacert,
        processes=bench.scenario.client_processes,
        mqtt=MQTTOptions(keepalive=exp.mqtt_keepalive, client_id="storm-%p-%i"),
    )

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
        hold_topology(bench, extra, plan, out, mqtt=True)
        result = run_sweep(
            sweep_config(bench, index, exp, AttackConfig(targets=(hold.target,))),
            bench.monitor,
            lambda row: bench.log(_storm_line(row)),
            step,
        )
    bench.samples.extend(result.monitor)
    bench.log(render_table(result).replace("requests/s", "new sessions/s"))
    row = sweep_row(result, exp, bench.scenario).replace("/s", " new sessions/s", 1)
    row = row.replace(" per request", " per session opened")
    entry = _entry(result, "new sessions/s", "open latency (TCP connect or CONNACK)")
    return Outcome(row + _at_knee(result), entry, result.reason == "interrupted")


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
    exp: Experiment,
    hold: HoldConfig,
    out: Path,
    rate: float,
    n: int,
    samples: list[dict[str, Any]],
) -> tuple[Row, bool]:
    """``rate`` new sessions a second for ``step_duration``, then all of them closed."""
    sessions = storm_sessions(exp, rate)
    config = replace(
        hold,
        connections=sessions,
        connect_rate=rate,
        duration=exp.step_duration + _STORM_SETTLE_S,
        request_every=None,
    )
    tally = HoldTally(sessions, 1, rate, mqtt=True)
    step_samples: list[dict[str, Any]] = []
    with open(out / f"step-{n:02d}-{rate:.0f}.jsonl", "wb") as stream:

        def on_record(record: Record, line: bytes) -> None:
            stream.write(line)
            if isinstance(record, HoldRecord):
                tally.add(record)

        def on_start(shards: int) -> None:
            tally.processes = shards

        with sampling(bench.monitor, step_samples, step=n, offered=rate) as sampled:
            bench.hold(config, on_record, on_start, tally)
    samples.extend(step_samples)
    row = storm_row(tally, rate, step_samples)
    row.account(sampled.cores)
    if row.client_load_pct is not None and row.client_load_pct >= 95:
        row.saturated = True  # the client's CPUs were full, whoever for
    return row, tally.interrupted


def storm_row(tally: HoldTally, rate: float, samples: list[dict[str, Any]]) -> Row:
    """One storm step as a sweep's row: its open latency is the larger of the TCP
    connect and the CONNACK p99 (a device waits for both); its success is the share of
    sessions that got their CONNACK."""
    connect, connack = tally.hists["connect"], tally.hists["connack"]
    p50 = max(connect.percentile(50), connack.percentile(50)) / 1000
    p99 = max(connect.percentile(99), connack.percentile(99)) / 1000
    mean = (connect.mean + connack.mean) / 1000 if connack.total else 0.0
    success = min(1.0, tally.peak / tally.connections)
    # HAProxy's CPU over the seconds in which CONNECTs went out, not the settling after.
    opening = samples[: max(1, len(samples) - round(_STORM_SETTLE_S))]
    busy_client = tally.cpu_busy()
    return Row(
        offered=rate,
        achieved=rate * success,
        mean_ms=mean,
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
