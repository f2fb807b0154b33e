"""The experiment kinds a scenario may name, one row each: the frontends it may go
through, and what its part of the report is made of.

The scenario checks an experiment's frontend against its row; the report draws an entry
by its ``shape`` and the row's traits, which the bench writes into the entry, never by
the kind's name. The function that runs each kind is in
:data:`tippingpoint.bench.table.EXPERIMENTS`, under the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tippingpoint.schemes import SCHEMES

__all__ = ["KINDS", "KIND_NAMES", "Kind"]

_WEB: Final = ("http", "https", "ws", "wss")
"""Through HAProxy's HTTP frontend (WebSocket is an upgraded HTTP connection there)."""
_MQTT: Final = ("mqtt", "mqtts")
"""Through HAProxy's MQTT frontend (TCP mode)."""


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    frontends: tuple[str, ...]
    """The proxy frontends it may go through; the first is the default."""
    shape: str
    """What the report draws: "sweep" (latency against offered rate, the knee), "attack"
    (latency and rate over time), "hold" (connections established over time) or
    "tls-cost" (HAProxy's CPU per request, plain against TLS)."""
    per_1000: bool = False
    """A sweep whose steps also chart HAProxy's CPU per 1,000 a second of its unit."""
    costs_row: bool = False
    """A row in the report's table of what each connection costs HAProxy."""
    sends: bool = True
    """Its connections send (requests, messages, PUBLISH): an MQTT URL names a topic. A
    hold's and a storm's only open and keep alive."""

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


KINDS: Final = {
    k.name: k
    for k in (
        Kind("sweep", _WEB, "sweep"),
        Kind("attack", _WEB, "attack"),
        Kind("hold", _WEB, "hold"),
        Kind("tls-cost", ("http", "https"), "tls-cost"),
        Kind("mqtt-sweep", _MQTT, "sweep", per_1000=True, costs_row=True),
        Kind("mqtt-hold", _MQTT, "hold", costs_row=True, sends=False),
        Kind(
            "connect-storm",
            (*_MQTT, "ws", "wss"),
            "sweep",
            per_1000=True,
            costs_row=True,
            sends=False,
        ),
    )
}
KIND_NAMES: Final = tuple(KINDS)
