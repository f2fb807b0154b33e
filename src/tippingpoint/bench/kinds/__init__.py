"""The experiment kinds a scenario may name: one module each, one row each.

A kind's module holds all of it: the frontends it may go through, the keys of its
``[[experiment]]`` table, its sentence, how it runs, its plan where it holds
connections, and its part of the report (the traits the report draws it by). A new kind
is a new module and a line here, not a branch in the bench.
"""

from __future__ import annotations

from typing import Any, Final

from tippingpoint.bench.kinds import attack, hold, mqtt_sweep, storm, sweep, tls_cost
from tippingpoint.bench.kinds.base import COMMON_KEYS, Kind

__all__ = ["EXPERIMENT_KEYS", "KINDS", "KIND_NAMES", "Kind"]

KINDS: Final[dict[str, Kind[Any]]] = {
    k.name: k
    for k in (
        sweep.KIND,
        attack.KIND,
        hold.HOLD,
        tls_cost.KIND,
        mqtt_sweep.KIND,
        hold.MQTT_HOLD,
        storm.KIND,
    )
}
KIND_NAMES: Final = tuple(KINDS)

EXPERIMENT_KEYS: Final = tuple(
    dict.fromkeys((*COMMON_KEYS, *(key for k in KINDS.values() for key in k.keys)))
)
"""The keys of an ``[[experiment]]`` table, of one kind or another."""
