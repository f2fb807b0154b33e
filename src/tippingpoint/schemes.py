"""The URL schemes a target can have, as stacks of layers: one table.

A connection is TCP, then optionally TLS (one memory-BIO pump, ``engine/tls.py``),
then optionally a WebSocket upgrade (``engine/ws.py``), then the application: HTTP/1.1
requests, MQTT packets, or WebSocket messages. Code asks this table what a scheme is
made of rather than testing its name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["SCHEMES", "Scheme", "scheme_list"]


@dataclass(frozen=True, slots=True)
class Scheme:
    name: str
    default_port: int
    tls: bool
    websocket: bool
    """An HTTP connection upgraded to WebSocket (RFC 6455) carries the application."""
    app: str
    """What the connection carries: "http", "mqtt" or "messages" (WebSocket messages)."""
    listener: str
    """What accepts it, on a server or a proxy: an "http" listener (a WebSocket is an HTTP
    connection until its upgrade) or an "mqtt" one."""
    example: str
    noun: str
    """What its connections are called in a report."""
    ping: str
    """What answers a held connection's keep-alive: a request's response, MQTT's PINGRESP,
    a WebSocket's pong frame."""

    @property
    def layers(self) -> tuple[str, ...]:
        below = (
            "tcp",
            *(("tls",) if self.tls else ()),
            *(("websocket",) if self.websocket else ()),
        )
        return (*below, self.app)


_HTTP: Final = ("connections", "request")
_MQTT: Final = ("sessions", "PINGRESP")
_WS: Final = ("WebSockets", "pong")

SCHEMES: Final = {
    s.name: s
    for s in (
        Scheme("http", 80, False, False, "http", "http", "http://HOST[:PORT]/PATH", *_HTTP),
        Scheme("https", 443, True, False, "http", "http", "https://HOST[:PORT]/PATH", *_HTTP),
        Scheme("mqtt", 1883, False, False, "mqtt", "mqtt", "mqtt://HOST[:PORT]/TOPIC", *_MQTT),
        Scheme("mqtts", 8883, True, False, "mqtt", "mqtt", "mqtts://HOST[:PORT]/TOPIC", *_MQTT),
        Scheme("ws", 80, False, True, "messages", "http", "ws://HOST[:PORT]/PATH", *_WS),
        Scheme("wss", 443, True, True, "messages", "http", "wss://HOST[:PORT]/PATH", *_WS),
    )
}


def scheme_list() -> str:
    """The schemes' forms, for an error message."""
    return ", ".join(s.example for s in SCHEMES.values())
