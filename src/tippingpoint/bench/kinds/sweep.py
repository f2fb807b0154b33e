"""The request-rate tipping point (``sweep``): HTTP requests, or WebSocket messages,
at rising rates through HAProxy's HTTP frontends until the latency tips over; or with
``closed = true`` a closed loop of rising connections, as wrk runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from tippingpoint.bench.apps import app_of
from tippingpoint.bench.experiments import (
    Bench,
    Outcome,
    attack_config,
    lift,
    step_line,
    sweep_config,
    sweep_row,
)
from tippingpoint.bench.kinds.base import (
    REQUEST_KEYS,
    STEP_KEYS,
    WEB,
    Kind,
    max_connections_of,
    steps_of,
)
from tippingpoint.bench.spec import Experiment, Scenario, Steps
from tippingpoint.search import run_sweep
from tippingpoint.sweep import render_table

__all__ = ["KIND", "SweepSpec", "hits"]


@dataclass(frozen=True, slots=True)
class SweepSpec:
    steps: Steps
    max_connections: int | None = 128
    """A fixed pool, as wrk2 holds (see `tippingpoint sweep`)."""


def parse(raw: dict[str, Any], where: str) -> SweepSpec:
    closed = bool(raw.get("closed", False))
    return SweepSpec(steps_of(raw, where, closed), max_connections_of(raw, where, 128))


def quick(spec: SweepSpec) -> SweepSpec:
    return replace(spec, steps=spec.steps.quick())


def hits(exp: Experiment[Any], url: str, scenario: Scenario) -> str:
    """A sweep's or an attack's hits: HTTP requests, or messages over WebSockets."""
    return app_of(exp).hits(exp, url)


def run(bench: Bench, index: int, exp: Experiment[SweepSpec]) -> Outcome:
    spec = exp.spec
    attack = attack_config(bench, exp, max_connections=spec.max_connections)
    result = run_sweep(
        sweep_config(bench, index, exp, spec.steps, attack),
        bench.monitor,
        lambda row: bench.log(step_line(row)),
    )
    bench.samples.extend(result.monitor)
    bench.log(render_table(result))
    sweep = result.to_json()
    row = sweep_row(result, exp, bench.scenario)
    if result.client_limited:
        sweep["client_limited_at"] = result.rows[-1].key if result.rows else None
        sweep["lift"] = lift(exp, bench.scenario)
    interrupted = result.reason == "interrupted" or any(
        "interrupted" in r.verdict for r in result.rows
    )
    return Outcome(row, {"sweep": sweep}, interrupted)


KIND: Final[Kind[SweepSpec]] = Kind(
    "sweep",
    WEB,
    (*REQUEST_KEYS, *STEP_KEYS, "closed", "max_connections"),
    "sweep",
    parse,
    hits,
    run,
    quick=quick,
    step_duration=lambda spec: spec.steps.step_duration,
)
