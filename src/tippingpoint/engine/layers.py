"""The client's stack of layers for a target: the connection class and what a hit sends.

TCP, then TLS where the scheme says so (``engine/tls.py``), then a WebSocket upgrade
where it says so (``engine/ws.py``); :data:`tippingpoint.schemes.SCHEMES` says which.
MQTT has its own sessions (``engine/mqtt.py``) and is not built here; only what a held
session sends now and then (PINGREQ) is.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Final, NamedTuple

from tippingpoint.engine.client import ClientConn, Pool
from tippingpoint.engine.tls import TLSClientConn
from tippingpoint.engine.ws import WsConn, WsTLSConn, encode_message
from tippingpoint.schemes import SCHEMES
from tippingpoint.targets import Origin, Target, encode_request
from tippingpoint.wire import mqtt as m

__all__ = ["conn_type", "encode_hit", "keep_alive_hit", "new_pool", "pool_key"]


_STACKS: Final[dict[tuple[bool, bool], type[ClientConn]]] = {
    # (a WebSocket above, TLS below): the connection class of that stack
    (False, False): ClientConn,
    (False, True): TLSClientConn,
    (True, False): WsConn,
    (True, True): WsTLSConn,
}


def conn_type(origin: Origin) -> type[ClientConn]:
    """The connection class of ``origin``'s stack of layers."""
    return _STACKS[origin.websocket, origin.tls]


def pool_key(target: Target) -> tuple[Origin, str]:
    """Targets that may share connections: one origin, and for a WebSocket one path too
    (a connection is upgraded at one path)."""
    return target.origin, _APPS[SCHEMES[target.origin.scheme].app].pool_path(target)


def new_pool(
    target: Target, ctx: ssl.SSLContext | None, server_name: str | None, resume: bool = False
) -> Pool:
    origin = target.origin
    return Pool(origin, ctx, server_name, resume, conn_type(origin), target.path)


def encode_hit(target: Target, keep_alive: bool = True) -> bytes:
    """What one hit on ``target`` sends: an HTTP request, or a WebSocket message."""
    return _APPS[SCHEMES[target.origin.scheme].app].hit(target, keep_alive)


def keep_alive_hit(target: Target) -> bytes:
    """What a hold sends on each connection now and then: an HTTP request, or for a
    WebSocket an empty message, which goes out as a ping frame (``engine/ws.py``)."""
    return _APPS[SCHEMES[target.origin.scheme].app].keep_alive(target)


class _App(NamedTuple):
    """What the top layer sends: a hit, a hold's keep-alive, and which targets share a
    connection (beyond their origin)."""

    hit: Callable[[Target, bool], bytes]
    keep_alive: Callable[[Target], bytes]
    pool_path: Callable[[Target], str]


def _no_hits(target: Target, keep_alive: bool) -> bytes:
    raise ValueError(f"{target.origin.scheme}: its hits are a session's (engine/mqtt.py)")


def _no_path(target: Target) -> str:
    return ""


def _message(target: Target, keep_alive: bool) -> bytes:
    return encode_message(target)


def _ping_frame(target: Target) -> bytes:
    return b""  # an empty message goes out as a ping frame


def _path(target: Target) -> str:
    return target.path


_HTTP: Final = _App(encode_request, encode_request, _no_path)
_MESSAGES: Final = _App(_message, _ping_frame, _path)


def _pingreq(target: Target) -> bytes:
    return m.PINGREQ_BYTES


_MQTT: Final = _App(_no_hits, _pingreq, _no_path)
_APPS: Final = {"http": _HTTP, "messages": _MESSAGES, "mqtt": _MQTT}
"""By a scheme's application (MQTT's sessions and their hits are engine/mqtt.py's: only
a held session's ping is here)."""
