"""What an experiment kind is: one row, made in the kind's own module.

A kind names the frontends it may go through, the keys of its ``[[experiment]]`` table,
its sentence, how it runs, its plan where it holds connections, and what its part of the
report is made of. The report draws an entry by its ``shape`` and the traits the bench
writes into it, never by the kind's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tippingpoint.bench.experiments import Bench, Outcome, url_of
from tippingpoint.bench.spec import Experiment, Scenario, ScenarioError
from tippingpoint.plan import ConnectionPlan, costs_of
from tippingpoint.schemes import SCHEMES

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

Planner = Callable[[Scenario, Experiment, int, tuple[int, int], int | None], ConnectionPlan]
"""A kind that holds connections plans them before anything starts: (scenario,
experiment, open-file limit, local port range, memory available)."""


@dataclass(frozen=True, slots=True)
class Kind:
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
    describe: Callable[[Experiment, str, Scenario], str]
    """The experiment in a sentence, given its URL."""
    run: Callable[[Bench, int, Experiment], Outcome]
    plan: Planner | None = None
    per_1000: bool = False
    """A sweep whose steps also chart HAProxy's CPU per 1,000 a second of its unit."""
    costs_row: bool = False
    """A row in the report's table of what each connection costs HAProxy."""
    sends: bool = True
    """Its connections send (requests, messages, PUBLISH): an MQTT URL names a topic. A
    hold's and a storm's only open and keep alive."""

    def url(self, bench: Bench, exp: Experiment) -> str:
        return url_of(bench, exp, self.sends)

    def traits(self, frontend: str) -> dict[str, Any]:
        """What the report needs of this kind through ``frontend``, for its entry."""
        scheme = SCHEMES[frontend]
        return {
            "shape": self.shape,
            "per_1000": self.per_1000,
            "costs_row": self.costs_row,
            "tls": scheme.tls,
            "noun": scheme.noun,
            "ping": scheme.ping,
        }


def check_plan(scenario: Scenario, exp: Experiment, plan: ConnectionPlan) -> ConnectionPlan:
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
