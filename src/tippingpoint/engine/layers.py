"""The client's stack of layers for a target: the connection class and what a hit sends.

TCP, then TLS where the scheme says so (``engine/tls.py``), then a WebSocket upgrade
where it says so (``engine/ws.py``); :data:`tippingpoint.schemes.SCHEMES` says which.
MQTT has its own sessions (``engine/mqtt.py``) and is not built here.
"""

from __future__ import annotations

import ssl

from tippingpoint.engine.client import ClientConn, Pool
from tippingpoint.engine.tls import TLSClientConn
from tippingpoint.engine.ws import WsConn, WsTLSConn, encode_message
from tippingpoint.targets import Origin, Target, encode_request

__all__ = ["conn_type", "encode_hit", "keep_alive_hit", "new_pool", "pool_key"]


def conn_type(origin: Origin) -> type[ClientConn]:
    """The connection class of ``origin``'s stack of layers."""
    if origin.websocket:
        return WsTLSConn if origin.tls else WsConn
    return TLSClientConn if origin.tls else ClientConn


def pool_key(target: Target) -> tuple[Origin, str]:
    """Targets that may share connections: one origin, and for a WebSocket one path too
    (a connection is upgraded at one path)."""
    return target.origin, target.path if target.origin.websocket else ""


def new_pool(
    target: Target, ctx: ssl.SSLContext | None, server_name: str | None, resume: bool = False
) -> Pool:
    origin = target.origin
    return Pool(origin, ctx, server_name, resume, conn_type(origin), target.path)


def encode_hit(target: Target, keep_alive: bool = True) -> bytes:
    """What one hit on ``target`` sends: an HTTP request, or a WebSocket message."""
    if target.origin.websocket:
        return encode_message(target)
    return encode_request(target, keep_alive)


def keep_alive_hit(target: Target) -> bytes:
    """What a hold sends on each connection now and then: an HTTP request, or for a
    WebSocket an empty message, which goes out as a ping frame (``engine/ws.py``)."""
    return b"" if target.origin.websocket else encode_request(target)
