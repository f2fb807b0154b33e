"""Connections held (``hold``, and ``mqtt-hold`` for MQTT sessions): opened at
``connect_rate`` through HAProxy and held for ``duration``, idle, with a request every
``request_every``, ping frames, or MQTT's keepalive; with what they cost HAProxy in
memory and CPU. A hold is planned before anything starts (processes, source addresses,
backends, HAProxy instances), and a plan that cannot fit is refused with its numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any, Final

from tippingpoint.bench.apps import app_of
from tippingpoint.bench.experiments import Bench, Outcome, hold_topology, url_of
from tippingpoint.bench.kinds.base import MQTT, MQTT_KEYS, WEB, Kind, check_plan, whole
from tippingpoint.bench.spec import Experiment, Scenario, ScenarioError
from tippingpoint.bench.topology import Topology
from tippingpoint.engine.hold import HoldConfig, HoldTally
from tippingpoint.limits import file_max
from tippingpoint.monitor import proxy_total, sampling
from tippingpoint.pacer import parse_duration, parse_rate
from tippingpoint.plan import ConnectionPlan, costs_of, loopback_sources, plan_connections
from tippingpoint.schemes import SCHEMES
from tippingpoint.stream import HoldRecord, Record
from tippingpoint.targets import Target

__all__ = ["HOLD", "MQTT_HOLD", "HoldSpec", "cost_sentence", "proxy_cost"]

_HOLD_KEYS: Final = ("connections", "connect_rate", "duration")


@dataclass(frozen=True, slots=True)
class HoldSpec:
    connections: int = 10_000
    connect_rate: float = 2_000.0
    duration: float = 10.0
    request_every: float | None = None
    """A request (or a ping frame) on each connection this often; None: idle. MQTT
    sessions ping once per keepalive instead."""


def parse(raw: dict[str, Any], where: str) -> HoldSpec:
    every = raw.get("request_every")
    return HoldSpec(
        connections=whole(raw, "connections", 10_000, where),
        connect_rate=parse_rate(str(raw.get("connect_rate", 2000))),
        duration=parse_duration(str(raw.get("duration", "10s"))),
        request_every=parse_duration(str(every)) if every else None,
    )


def quick(spec: HoldSpec) -> HoldSpec:
    return replace(spec, duration=min(spec.duration, 8.0), connections=min(spec.connections, 2_000))


def describe(exp: Experiment[HoldSpec], url: str, scenario: Scenario) -> str:
    app = app_of(exp)
    return (
        f"{exp.spec.connections:,} {costs_of(exp.frontend).noun} to "
        f"{app.through(exp, url, scenario)} opened at "
        f"{exp.spec.connect_rate:,.0f}/s and held for {exp.spec.duration:g} s from the start, "
        f"{app.pace(exp, exp.spec.request_every)}"
    )


def make_plan(
    scenario: Scenario,
    exp: Experiment[HoldSpec],
    fd_limit: int,
    ports: tuple[int, int],
    memory: int | None,
) -> ConnectionPlan:
    """Every connection open at once, by the end of the ramp, which must end before
    the hold does."""
    spec = exp.spec
    ramp = spec.connections / spec.connect_rate
    if ramp >= spec.duration:
        raise ScenarioError(
            f"{exp.name}: {spec.connections:,} connections at {spec.connect_rate:,.0f}/s take "
            f"{ramp:.0f} s to open, and duration is {spec.duration:g} s: a longer duration "
            "or a higher connect_rate"
        )
    planned = plan_connections(
        exp.spec.connections,
        fd_limit,
        ports,
        1,
        memory,
        proxied=True,
        scheme=exp.frontend,
        idle=exp.spec.request_every is None,
        backend_ports=len(scenario.backend_of(exp).ports),
        file_max=file_max(),
    )
    return check_plan(scenario, exp, planned)


def run(bench: Bench, index: int, exp: Experiment[HoldSpec]) -> Outcome:
    exp_dir = bench.out / f"{index + 1:02d}-{exp.kind}"
    exp_dir.mkdir(parents=True, exist_ok=True)
    plan = bench.plans[index]
    request = exp.request
    config = HoldConfig(
        target=Target(request.method, url_of(bench, exp), request.headers, request.body),
        connections=exp.spec.connections,
        connect_rate=exp.spec.connect_rate,
        duration=exp.spec.duration,
        request_every=exp.spec.request_every,
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
        tally = HoldTally(exp.spec.connections, 1, exp.spec.connect_rate, scheme=exp.frontend)

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
            code = bench.load.hold(config, on_record, on_start, tally)
    if code not in (0, 130, 143):  # a signal's stop is not a failure
        bench.log(f"  a hold process failed (exit {code}); see {exp_dir / 'hold.jsonl'}")
    summary = tally.summary()
    bench.log(summary)
    behind = tally.behind()
    cost = proxy_cost(
        [before, *(s for s in bench.samples if s.get("step") == step)],
        tally.peak,
        max(
            exp.spec.connections / exp.spec.connect_rate, tally.reached or 0.0
        ),  # the ramp as it ran
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


def cost_sentence(exp: Experiment[HoldSpec], cost: dict[str, float] | None) -> str:
    """ "500,000 MQTT sessions through HAProxy cost 0.9 GiB of HAProxy memory and 4 % of
    a core at keepalive 60 s", from the hold's samples."""
    if cost is None:
        return ""
    app = app_of(exp)
    what = costs_of(exp.frontend).noun + (" over TLS" if SCHEMES[exp.frontend].tls else "")
    pace = app.pace(exp, exp.spec.request_every)
    # HAProxy keeps the memory pools that earlier experiments grew: a small hold after
    # them may not grow its RSS at all, and then says only what it had.
    each = cost["bytes_per_connection"]
    growth = f" ({each / 1000:,.1f} KB each over what it had before)" if each >= 100 else ""
    return (
        f"{int(cost['held']):,} {what} through HAProxy cost {cost['rss_bytes'] / 2**30:.2f} GiB "
        f"of HAProxy memory{growth} and {cost['cpu_pct']:.1f} % of a core {pace}"
    )


HOLD: Final[Kind[HoldSpec]] = Kind(
    "hold",
    WEB,
    ("method", "path", "headers", "body_file", *_HOLD_KEYS, "request_every"),
    "hold",
    parse,
    describe,
    run,
    make_plan,
    quick=quick,
)
MQTT_HOLD: Final[Kind[HoldSpec]] = Kind(
    "mqtt-hold",
    MQTT,
    # request_every only to be refused with the reason: a session pings per keepalive.
    (*_HOLD_KEYS, *MQTT_KEYS, "request_every"),
    "hold",
    parse,
    describe,
    run,
    make_plan,
    quick=quick,
    costs_row=True,
)
