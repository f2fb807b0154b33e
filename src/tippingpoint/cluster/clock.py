"""Each worker's clock against this one, so that a fleet starts at one instant.

A round asks every worker for its wall clock at once; the worker's answer falls
somewhere between the moment the question left and the moment the answers came back,
so its offset is measured against the midpoint, give or take half the round trip. The
round with the shortest round trip wins, per worker. Within a shard the monotonic
clock keeps time; the wall clock only places time zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Offset", "measure_offsets"]


@dataclass(frozen=True, slots=True)
class Offset:
    seconds: float
    """The worker's clock minus this one's."""
    uncertainty: float
    """Half the round trip of the measuring round: the offset is within this."""


def measure_offsets(client: Any, workers: list[str], rounds: int = 8) -> dict[str, Offset]:
    best: dict[str, Offset] = {}
    for _ in range(rounds):
        before = time.time()
        answers = client.run(time.time, workers=workers)
        after = time.time()
        middle, half = (before + after) / 2, (after - before) / 2
        for worker, their in answers.items():
            if worker not in best or half < best[worker].uncertainty:
                best[worker] = Offset(their - middle, half)
    return best
