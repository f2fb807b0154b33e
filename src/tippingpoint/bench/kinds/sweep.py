"""The request-rate tipping point (``sweep``): HTTP requests, or WebSocket messages,
at rising rates through HAProxy's HTTP frontends until the latency tips over; or with
``closed = true`` a closed loop of rising connections, as wrk runs.
"""

from __future__ import annotations

from typing import Final

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
from tippingpoint.bench.kinds.base import REQUEST_KEYS, STEP_KEYS, WEB, Kind
from tippingpoint.bench.spec import Experiment, Scenario
from tippingpoint.search import run_sweep
from tippingpoint.sweep import render_table

__all__ = ["KIND", "hits"]


def hits(exp: Experiment, url: str, scenario: Scenario) -> str:
    """A sweep's or an attack's hits: HTTP requests, or messages over WebSockets."""
    return app_of(exp).hits(exp, url)


def run(bench: Bench, index: int, exp: Experiment) -> Outcome:
    result = run_sweep(
        sweep_config(bench, index, exp, attack_config(bench, exp)),
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


KIND: Final[Kind] = Kind(
    "sweep",
    WEB,
    (*REQUEST_KEYS, *STEP_KEYS, "closed", "max_connections"),
    "sweep",
    hits,
    run,
)
