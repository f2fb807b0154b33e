"""The function that runs each experiment kind.

A new kind is a new entry here and a row in :data:`tippingpoint.bench.kinds.KINDS` (its
frontends and its part of the report), not a new branch in the bench.
"""

from __future__ import annotations

from tippingpoint.bench.experiments import (
    Runner,
    run_attack_experiment,
    run_hold_experiment,
    run_sweep_experiment,
    run_tls_cost_experiment,
)
from tippingpoint.bench.mqtt import run_mqtt_sweep
from tippingpoint.bench.storm import run_connect_storm

__all__ = ["EXPERIMENTS"]

EXPERIMENTS: dict[str, Runner] = {
    "sweep": run_sweep_experiment,
    "attack": run_attack_experiment,
    "hold": run_hold_experiment,
    "tls-cost": run_tls_cost_experiment,
    "mqtt-sweep": run_mqtt_sweep,
    "mqtt-hold": run_hold_experiment,
    "connect-storm": run_connect_storm,
}
