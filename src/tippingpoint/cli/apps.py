"""What each application adds to the commands' options, one row each (``Scheme.app``).

HTTP requests take the options as they are. WebSocket messages ride on a connection that
stays open. MQTT sessions publish (``attack``, ``sweep``) or are held (``hold``) with the
session options of :func:`tippingpoint.cli.options.mqtt_session_options`. The commands
ask :func:`commands_of` for their URL's row and never test a scheme's name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from tippingpoint.schemes import SCHEMES

if TYPE_CHECKING:
    from tippingpoint.engine.hold import HoldConfig
    from tippingpoint.model import MQTTOptions, PublishConfig

__all__ = ["Commands", "commands_of", "session_options"]


class Commands:
    """HTTP requests: the base every application's row starts from."""

    def method(self, opts: dict[str, Any]) -> str:
        """The method of a URL's hits."""
        return str(opts["method"]).upper()

    def check(self, opts: dict[str, Any]) -> None:
        """Refuse (ValueError) an option this application cannot take."""

    def attack(self, opts: dict[str, Any], closed: bool, sweep: bool = False) -> dict[str, Any]:
        """What it adds to an attack's or a sweep's config (``closed``: the closed
        model), as AttackConfig's keyword arguments."""
        return {}

    def held(self, config: HoldConfig, opts: dict[str, Any]) -> HoldConfig:
        """A hold's config as this application holds its connections."""
        return config


class _Messages(Commands):
    """WebSocket messages: many on each connection, kept open."""

    def check(self, opts: dict[str, Any]) -> None:
        if opts.get("no_keepalive"):
            raise ValueError("a WebSocket carries many messages: drop --no-keepalive")


class _Sessions(Commands):
    """MQTT sessions: PUBLISH to the URL's topic, or held with a keepalive."""

    def method(self, opts: dict[str, Any]) -> str:
        return "PUBLISH"

    def attack(self, opts: dict[str, Any], closed: bool, sweep: bool = False) -> dict[str, Any]:
        extra: dict[str, Any] = {"mqtt": _publish(opts, closed)}
        if sweep:  # a fixed set of sessions publishes (the cap is their number)
            extra["connections"] = opts["max_connections"]
        return extra

    def held(self, config: HoldConfig, opts: dict[str, Any]) -> HoldConfig:
        """Sessions that ping once per keepalive (none with keepalive 0)."""
        options = session_options(opts, subscribe=opts["subscribe"], subscribe_qos=opts["qos"])
        if opts.get("request_every"):
            raise ValueError("MQTT sessions ping once per --keepalive: drop --request-every")
        return replace(config, mqtt=options, request_every=float(options.keepalive) or None)


_ROWS: Final[dict[str, Commands]] = {
    "http": Commands(),
    "messages": _Messages(),
    "mqtt": _Sessions(),
}


def commands_of(url: str) -> Commands:
    """The row of ``url``'s application (HTTP's for a URL with no known scheme: parsing
    the URL refuses it, with the schemes there are)."""
    scheme = SCHEMES.get(url.partition("://")[0].lower()) if "://" in url else None
    return _ROWS[scheme.app] if scheme is not None else _ROWS["http"]


def session_options(opts: dict[str, Any], **extra: Any) -> MQTTOptions:
    """MQTTOptions from the MQTT session options (ValueError when one is bad)."""
    from tippingpoint.engine.mqtt import parse_version
    from tippingpoint.model import MQTTOptions
    from tippingpoint.pacer import parse_duration

    return MQTTOptions(
        version=parse_version(opts["mqtt_version"]),
        keepalive=round(parse_duration(opts["keepalive"])),
        client_id=opts["client_id"],
        clean=opts["clean_start"],
        username=opts["username"],
        password=opts["password"],
        session_expiry=opts["session_expiry"],
        ws_path=_ws_path(opts),
        **extra,
    )


def _ws_path(opts: dict[str, Any]) -> str | None:
    """MQTT over WebSocket's path (``--ws``), or None."""
    if not opts.get("mqtt_ws"):
        return None
    path = str(opts.get("ws_path") or "/mqtt")
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        raise ValueError(f"--ws-path {path!r}: give a path such as /mqtt")
    return path


def _publish(opts: dict[str, Any], closed: bool) -> PublishConfig:
    """The MQTT side of an mqtt:// attack or sweep; ValueError when it is wrong."""
    from urllib.parse import urlsplit

    from tippingpoint.model import PublishConfig

    url = opts["url"]
    if opts.get("targets_file"):
        raise ValueError("MQTT takes one URL (mqtt://HOST[:PORT]/TOPIC), not --targets")
    topic = urlsplit(url).path.lstrip("/")
    if not topic:
        raise ValueError(f"no topic in {url!r}: use mqtt://HOST[:PORT]/TOPIC, e.g. .../devices/%i")
    if closed and opts["until"] == "delivery":
        raise ValueError("--until delivery needs a --rate (the closed model is for ack and echo)")
    inflight = opts["inflight"] if opts["inflight"] is not None else (1 if closed else 64)
    return PublishConfig(
        options=session_options(opts),
        topic=topic,
        qos=opts["qos"],
        payload_size=opts["payload_size"],
        until=opts["until"],
        subscribers=opts["subscribers"],
        inflight=inflight,
        retain=opts["retain"],
    )
