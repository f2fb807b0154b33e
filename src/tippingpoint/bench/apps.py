"""The bench's side of each application a frontend carries, one object each: what its
URL ends with, what stands behind the proxy for it, and how a held connection keeps
alive. (What answers it behind the proxy is the scenario's: ``Scenario.backend``.)

The experiments ask :func:`app_of` and never test a protocol's name: HTTP requests and
WebSocket messages go through HAProxy's HTTP frontends to ``serve``; MQTT sessions go
through its MQTT frontends in TCP mode to ``serve --mqtt`` or mosquitto.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from tippingpoint.bench.spec import Experiment, Scenario
from tippingpoint.engine.hold import HoldConfig
from tippingpoint.model import MQTTOptions
from tippingpoint.schemes import SCHEMES

__all__ = ["App", "app_of", "topic_of"]

_WORDS: Final = ("sleep", "times")


def topic_of(until: str) -> str:
    """An MQTT sweep's topic: one the backend answers (``until`` echo), or one per
    session."""
    return "ping/%i" if until == "echo" else "devices/%i/data"


class App:
    """HTTP requests: the base every application's row starts from. (What its
    connections are called is the planner's: ``plan.COSTS``.)"""

    ask = "a request"

    def path(self, exp: Experiment[Any]) -> str:
        """What follows ``scheme://host:port`` in the experiment's URL, unless its kind
        says (an MQTT sweep's topic)."""
        return exp.request.path

    def through(self, exp: Experiment[Any], url: str, scenario: Scenario) -> str:
        """The URL, and what stands behind the proxy for it where that is not plain."""
        return url

    def hits(self, exp: Experiment[Any], url: str) -> str:
        """What a sweep's or an attack's hits are, in words."""
        request = exp.request
        reuse = "keep-alive" if request.keepalive else "a new connection per request"
        heads = "".join(f", {n}: {v}" for n, v in request.headers)
        return f"{request.method} {url}, {reuse}" + heads

    def pace(self, exp: Experiment[Any], every: float | None) -> str:
        """How a held connection keeps alive (``every``: the hold's request_every), in
        words."""
        if not every:
            return "idle"
        return f"with {self.ask} every {every:g} s each"

    def held(
        self, exp: Experiment[Any], config: HoldConfig, client_id: str | None = None
    ) -> HoldConfig:
        """A hold's config as this application holds its connections (``client_id``: the
        pattern of their ids, where they have one)."""
        return config


class _Messages(App):
    """WebSocket messages: an HTTP connection upgraded, kept alive by ping frames."""

    ask = "a ping frame"

    def hits(self, exp: Experiment[Any], url: str) -> str:
        # The message's sleep and times, as serve --ws reads them.
        heads = exp.request.headers
        words = "".join(f" {n.lower()}={v}" for n, v in heads if n.lower() in _WORDS)
        return f'messages "ping{words}" over WebSockets held to {url}'


class _Sessions(App):
    """MQTT sessions: a topic in the URL, a broker behind HAProxy in TCP mode, and a
    keepalive instead of requests."""

    def path(self, exp: Experiment[Any]) -> str:
        return ""  # a session that only holds; a publishing one's kind gives its topic

    def through(self, exp: Experiment[Any], url: str, scenario: Scenario) -> str:
        broker = "tippingpoint serve --mqtt" if scenario.mqtt_backend == "serve" else "mosquitto"
        tls = ", TLS" if SCHEMES[exp.frontend].tls else ""
        return f"{url} (HAProxy in TCP mode{tls}, then {broker})"

    def pace(self, exp: Experiment[Any], every: float | None) -> str:
        keepalive = exp.session.keepalive
        return f"at keepalive {keepalive} s" if keepalive else "without pings"

    def held(
        self, exp: Experiment[Any], config: HoldConfig, client_id: str | None = None
    ) -> HoldConfig:
        # Sessions that ping once per keepalive.
        options = MQTTOptions(keepalive=exp.session.keepalive)
        if client_id is not None:
            options = replace(options, client_id=client_id)
        every = float(exp.session.keepalive) or None
        return replace(config, mqtt=options, request_every=every)


_APPS: Final[dict[str, App]] = {"http": App(), "messages": _Messages(), "mqtt": _Sessions()}


def app_of(exp: Experiment[Any]) -> App:
    """The application ``exp``'s frontend carries (its scheme's ``app``)."""
    return _APPS[SCHEMES[exp.frontend].app]
