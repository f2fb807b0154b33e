"""What an experiment kind is: one row, made in the kind's own module.

A kind names the frontends it may go through, the keys of its ``[[experiment]]`` table,
its sentence, how it runs, its plan where it holds connections, and what its part of the
report is made of. The report draws an entry by its ``shape`` and the traits the bench
writes into it, never by the kind's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from tippingpoint.bench.experiments import Bench, Outcome, url_of
from tippingpoint.bench.report import EntryHead
from tippingpoint.bench.spec import Experiment, Scenario, ScenarioError, Steps
from tippingpoint.knee import parse_slo
from tippingpoint.pacer import parse_duration, parse_rate
from tippingpoint.plan import ConnectionPlan, costs_of
from tippingpoint.schemes import SCHEMES
from tippingpoint.sweep import parse_step

__all__ = [
    "COMMON_KEYS",
    "MQTT",
    "MQTT_KEYS",
    "REQUEST_KEYS",
    "STEP_KEYS",
    "WEB",
    "Kind",
    "Planner",
    "check_plan",
    "max_connections_of",
    "steps_of",
    "whole",
]

WEB: Final = ("http", "https", "ws", "wss")
"""Through HAProxy's HTTP frontend (WebSocket is an upgraded HTTP connection there)."""
MQTT: Final = ("mqtt", "mqtts")
"""Through HAProxy's MQTT frontend (TCP mode)."""

COMMON_KEYS: Final = ("name", "kind", "frontend", "timeout")
"""Every kind's keys."""
REQUEST_KEYS: Final = ("keepalive", "tls_resume", "headers", "method", "path", "body_file")
"""What a request (or a WebSocket message) is made of."""
STEP_KEYS: Final = ("start", "step", "step_duration", "max_steps", "refine", "slo")
"""How a sweep's steps rise and when the knee is found."""
MQTT_KEYS: Final = ("keepalive",)
"""An MQTT session's own (keepalive in seconds); the frontend says whether it is one."""

S = TypeVar("S")

Planner = Callable[[Scenario, Experiment[S], int, tuple[int, int], int | None], ConnectionPlan]
"""A kind that holds connections plans them before anything starts: (scenario,
experiment, open-file limit, local port range, memory available)."""


def _same(spec: S) -> S:
    return spec


@dataclass(frozen=True, slots=True)
class Kind(Generic[S]):
    """An experiment kind, ``S`` its spec: the keys of its table beyond every kind's and
    its application's, parsed and typed."""

    name: str
    frontends: tuple[str, ...]
    """The proxy frontends it may go through; the first is the default."""
    keys: tuple[str, ...]
    """The keys of its ``[[experiment]]`` table beyond :data:`COMMON_KEYS`; any other is
    refused, not ignored."""
    shape: str
    """What the report draws: "sweep" (latency against offered rate, the knee), "attack"
    (latency and rate over time), "hold" (connections established over time) or
    "tls-cost" (HAProxy's CPU per request, plain against TLS)."""
    parse: Callable[[dict[str, Any], str], S]
    """Its spec from its table (``raw``, and the table's name for messages)."""
    describe: Callable[[Experiment[S], str, Scenario], str]
    """The experiment in a sentence, given its URL."""
    run: Callable[[Bench, int, Experiment[S]], Outcome]
    plan: Planner[S] | None = None
    quick: Callable[[S], S] = _same
    """Its spec for ``bench --quick``: a few minutes in all."""
    check: Callable[[Experiment[S], Scenario], None] | None = None
    """Refuses (ScenarioError) what the rest of the scenario cannot run."""
    step_duration: Callable[[S], float] | None = None
    """How long a step lasts, for a kind that runs in steps (for its report entry)."""
    path: Callable[[Experiment[S], Scenario], str] | None = None
    """What its URL ends with where its application's default does not do (an MQTT
    sweep's topic)."""
    per_1000: bool = False
    """A sweep whose steps also chart HAProxy's CPU per 1,000 a second of its unit."""
    costs_row: bool = False
    """A row in the report's table of what each connection costs HAProxy."""

    def url(self, bench: Bench, exp: Experiment[S]) -> str:
        path = self.path(exp, bench.scenario) if self.path is not None else None
        return url_of(bench, exp, path)

    def head(
        self,
        number: int,
        exp: Experiment[S],
        description: str,
        setup: str,
        restarts: list[str],
        bench_cpu_pct: float,
    ) -> EntryHead:
        """The start of the experiment's report entry: what the report needs of this
        kind through its frontend."""
        scheme = SCHEMES[exp.frontend]
        step = self.step_duration
        return EntryHead(
            id=number,
            name=exp.name,
            kind=exp.kind,
            description=description,
            setup=setup,
            frontend=exp.frontend,
            shape=self.shape,
            per_1000=self.per_1000,
            costs_row=self.costs_row,
            tls=scheme.tls,
            noun=scheme.noun,
            ping=scheme.ping,
            keepalive=exp.request.keepalive,
            step_duration=step(exp.spec) if step is not None else None,
            worker_restarts=restarts,
            bench_cpu_pct=bench_cpu_pct,
        )


def check_plan(scenario: Scenario, exp: Experiment[Any], plan: ConnectionPlan) -> ConnectionPlan:
    """``plan``, refused with its numbers when it cannot fit, or when its backend takes
    one port per process and the scenario gives too few."""
    if not plan.feasible:
        raise ScenarioError(f"{exp.name}: this plan cannot fit: " + "; ".join(plan.problems))
    backend = scenario.backend_of(exp)
    first, have = backend.ports[0], len(backend.ports)
    if not backend.shares_ports and plan.server_processes > have:
        raise ScenarioError(
            f"{exp.name}: {plan.connections:,} {costs_of(exp.frontend).noun} need "
            f"{plan.server_processes} {backend.program} instances under this open-file limit, "
            f"one per port, and {backend.key} has {have}: give {plan.server_processes} ports, "
            f'e.g. "{first}-{first + plan.server_processes - 1}"'
        )
    return plan


def whole(raw: dict[str, Any], key: str, default: int, where: str, least: int = 1) -> int:
    """``raw[key]`` as a whole number >= ``least`` (``default`` when absent)."""
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ScenarioError(f"{where}.{key}: a whole number >= {least}, got {value!r}")
    return value


def steps_of(raw: dict[str, Any], where: str, closed: bool = False) -> Steps:
    """The :data:`STEP_KEYS` of a table (``closed``: its steps count connections)."""
    start = raw.get("start", 1 if closed else 1000)
    if closed and (not isinstance(start, int) or isinstance(start, bool) or start < 1):
        raise ScenarioError(
            f"{where}.start: a closed sweep starts at a whole number of connections >= 1"
        )
    slo = raw.get("slo")
    return Steps(
        start=float(start) if closed else parse_rate(str(start)),
        step=parse_step(str(raw.get("step", "x2" if closed else "x1.5"))),
        step_duration=parse_duration(str(raw.get("step_duration", "5s"))),
        max_steps=whole(raw, "max_steps", 8, where),
        refine=whole(raw, "refine", 1, where, 0),
        slo=parse_slo(slo) if slo else None,
        closed=closed,
    )


def max_connections_of(raw: dict[str, Any], where: str, default: int | None) -> int | None:
    """The connection cap of an attack or a sweep (None: as many as it needs)."""
    if "max_connections" not in raw:
        return default
    return whole(raw, "max_connections", 1, where)
