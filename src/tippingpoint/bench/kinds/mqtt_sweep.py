"""The bench's MQTT publish-rate tipping point (``mqtt-sweep``).

A step publishes at one rate from a fixed set of sessions through the proxy's MQTT
frontend; its latency ends where the scenario says (the backend's pong, or delivery to a
subscriber). Held MQTT sessions (``mqtt-hold``) are the bench's hold with MQTT sessions
(``kinds/hold.py``), and the connect storm is ``kinds/storm.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

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
from tippingpoint.bench.kinds.base import MQTT, MQTT_KEYS, STEP_KEYS, Kind, steps_of, whole
from tippingpoint.bench.spec import Experiment, Scenario, ScenarioError, Steps
from tippingpoint.model import AttackConfig, MQTTOptions, PublishConfig, TLSOptions
from tippingpoint.search import run_sweep
from tippingpoint.sweep import render_table
from tippingpoint.targets import Target

__all__ = ["KIND", "PublishSpec"]


@dataclass(frozen=True, slots=True)
class PublishSpec:
    steps: Steps
    sessions: int = 50
    """The sessions that publish (and as many subscribers with delivery)."""
    qos: int = 0
    until: str = ""
    """Where the latency ends: echo (serve's pong), delivery (a subscriber receives it)
    or ack; empty: echo with serve, delivery with mosquitto."""
    payload_size: int = 64


def parse(raw: dict[str, Any], where: str) -> PublishSpec:
    until = str(raw.get("until", ""))
    if until not in ("", "ack", "echo", "delivery"):
        raise ScenarioError(f"{where}.until: use ack, echo or delivery")
    qos = raw.get("qos", 0)
    if qos not in (0, 1, 2):
        raise ScenarioError(f"{where}.qos: 0, 1 or 2")
    return PublishSpec(
        steps=steps_of(raw, where),
        sessions=whole(raw, "sessions", 50, where),
        qos=qos,
        until=until,
        payload_size=whole(raw, "payload_size", 64, where, 0),
    )


def quick(spec: PublishSpec) -> PublishSpec:
    return replace(spec, steps=spec.steps.quick())


def check(exp: Experiment[PublishSpec], scenario: Scenario) -> None:
    """An echo needs serve's ping/pong: a broker does not answer."""
    if scenario.mqtt_backend != "serve" and exp.spec.until == "echo":
        raise ScenarioError(
            f'{exp.name}: until = "echo" needs serve\'s ping/pong: '
            'use until = "delivery" with mosquitto, or backends.mqtt = "serve"'
        )


def path(exp: Experiment[PublishSpec], scenario: Scenario) -> str:
    return f"/{topic_of(scenario.until(exp.spec.until))}"


def _publish_config(bench: Bench, exp: Experiment[PublishSpec]) -> AttackConfig:
    spec = exp.spec
    until = bench.scenario.until(spec.until)
    # Sessions of one run share a user name: a proxy that sticks sessions to a broker
    # by user name puts a publisher and its subscribers on the same mosquitto.
    options = MQTTOptions(keepalive=exp.session.keepalive, username=f"bench-{exp.name}"[:64])
    return AttackConfig(
        targets=(Target("PUBLISH", url_of(bench, exp, path(exp, bench.scenario))),),
        timeout=exp.timeout,
        tls=TLSOptions(cacert=bench.cacert),
        processes=bench.scenario.client_processes,
        rate=spec.steps.start,
        duration=spec.steps.step_duration,
        connections=spec.sessions,
        mqtt=PublishConfig(
            options=options,
            topic=topic_of(until),
            qos=spec.qos,
            payload_size=spec.payload_size,
            until=until,
            subscribers=spec.sessions if until == "delivery" else 0,
        ),
    )


def run(bench: Bench, index: int, exp: Experiment[PublishSpec]) -> Outcome:
    result = run_sweep(
        sweep_config(bench, index, exp, exp.spec.steps, _publish_config(bench, exp)),
        bench.monitor,
        lambda row: bench.log(step_line(row)),
    )
    bench.samples.extend(result.monitor)
    bench.log(render_table(result).replace("requests/s", "messages/s"))
    until = bench.scenario.until(exp.spec.until)
    row = sweep_row(result, exp, bench.scenario).replace("/s", " messages/s", 1)
    row = row.replace(" per request", " per message")
    entry = per_1000_entry(result, "messages/s", f"{until} latency")
    interrupted = result.reason == "interrupted"
    return Outcome(row + at_knee(result), entry, interrupted)


def describe(exp: Experiment[PublishSpec], url: str, scenario: Scenario) -> str:
    spec = exp.spec
    latency = {
        "echo": "the backend's pong",
        "delivery": f"delivery to {spec.sessions} subscribers",
        "ack": "the broker's acknowledgement",
    }[scenario.until(spec.until)]
    return (
        f"QoS {spec.qos} PUBLISH of {spec.payload_size} B to "
        f"{app_of(exp).through(exp, url, scenario)} "
        f"from {spec.sessions} sessions at rising rates from {spec.steps.start:,.0f}/s, "
        f"latency until {latency}"
    )


KIND: Final[Kind[PublishSpec]] = Kind(
    "mqtt-sweep",
    MQTT,
    (*STEP_KEYS, *MQTT_KEYS, "sessions", "qos", "until", "payload_size"),
    "sweep",
    parse,
    describe,
    run,
    quick=quick,
    check=check,
    step_duration=lambda spec: spec.steps.step_duration,
    path=path,
    per_1000=True,
    costs_row=True,
)
