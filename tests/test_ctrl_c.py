"""Ctrl-C at random instants (tests/ctrl_c.py): a trial per command in every run of the
suite, at a different instant each time (the seed is printed when one fails); the long
series, 50 per command, is `python -m tests.ctrl_c` (docs/PERFORMANCE.md has its result)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.ctrl_c import commands, trial


@pytest.mark.parametrize("name", ["attack", "hold", "sweep"])
def test_ctrl_c_at_random_instants(serve: Any, tmp_path: Any, name: str) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    server = serve(processes=1)
    args, window = commands(server.url, tmp_path)[name]
    result = trial(name, args, window, rng)
    assert not result.problem, f"seed {seed}: {result}"
