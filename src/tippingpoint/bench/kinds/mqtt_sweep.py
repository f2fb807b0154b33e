"""The bench's MQTT publish-rate tipping point (``mqtt-sweep``).

A step publishes at one rate from a fixed set of sessions through the proxy's MQTT
frontend; its latency ends where the scenario says (the backend's pong, or delivery to a
subscriber). Held MQTT sessions (``mqtt-hold``) are the bench's hold with MQTT sessions
(``kinds/hold.py``), and the connect storm is ``kinds/storm.py``.
"""

from __future__ import annotations

from typing import Final

from tippingpoint.bench.apps import app_of, topic_of
from tippingpoint.bench.experiments import (
    Bench,
    Outcome,
    at_knee,
    per_1000_entry,
    step_line,
    sweep_config,
    sweep_row,
    url_of,
)
from tippingpoint.bench.kinds.base import MQTT, MQTT_KEYS, STEP_KEYS, Kind
from tippingpoint.bench.spec import Experiment, Scenario
from tippingpoint.model import AttackConfig, MQTTOptions, PublishConfig, TLSOptions
from tippingpoint.search import run_sweep
from tippingpoint.sweep import render_table
from tippingpoint.targets import Target

__all__ = ["KIND"]


def _publish_config(bench: Bench, exp: Experiment) -> AttackConfig:
    until = bench.scenario.until(exp)
    # Sessions of one run share a user name: a proxy that sticks sessions to a broker
    # by user name puts a publisher and its subscribers on the same mosquitto.
    options = MQTTOptions(keepalive=exp.mqtt_keepalive, username=f"bench-{exp.name}"[:64])
    return AttackConfig(
        targets=(Target("PUBLISH", url_of(bench, exp, True)),),
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


def run(bench: Bench, index: int, exp: Experiment) -> Outcome:
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
    entry = per_1000_entry(result, "messages/s", f"{until} latency")
    interrupted = result.reason == "interrupted"
    return Outcome(row + at_knee(result), entry, interrupted)


def describe(exp: Experiment, url: str, scenario: Scenario) -> str:
    latency = {
        "echo": "the backend's pong",
        "delivery": f"delivery to {exp.sessions} subscribers",
        "ack": "the broker's acknowledgement",
    }[scenario.until(exp)]
    return (
        f"QoS {exp.qos} PUBLISH of {exp.payload_size} B to "
        f"{app_of(exp).through(exp, url, scenario)} "
        f"from {exp.sessions} sessions at rising rates from {exp.start:,.0f}/s, latency "
        f"until {latency}"
    )


KIND: Final[Kind] = Kind(
    "mqtt-sweep",
    MQTT,
    (*STEP_KEYS, *MQTT_KEYS, "sessions", "qos", "until", "payload_size"),
    "sweep",
    describe,
    run,
    per_1000=True,
    costs_row=True,
)
