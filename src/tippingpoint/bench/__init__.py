"""`tippingpoint bench`: the article's whole experiment on this machine, one command.

- :mod:`~tippingpoint.bench.spec`: what a scenario is, as data;
- :mod:`~tippingpoint.bench.scenario`: the TOML scenario, validated (the default ships
  as ``default.toml``);
- :mod:`~tippingpoint.bench.topology`: the processes started, each with its stop;
- :mod:`~tippingpoint.bench.experiments`: the bench every kind runs on;
- :mod:`~tippingpoint.bench.kinds`: one module per experiment kind, with its typed spec;
- :mod:`~tippingpoint.bench.report`: the report directory, rewritten after each one;
- :mod:`~tippingpoint.bench.run`: :func:`run_bench`, which puts them together.
"""

from tippingpoint.bench.report import BenchReport
from tippingpoint.bench.run import run_bench
from tippingpoint.bench.scenario import (
    DEFAULT_SCENARIO,
    Experiment,
    Scenario,
    ScenarioError,
    parse_scenario,
    plan_holds,
    quick,
)
from tippingpoint.bench.topology import BenchFailure

__all__ = [
    "DEFAULT_SCENARIO",
    "BenchFailure",
    "BenchReport",
    "Experiment",
    "Scenario",
    "ScenarioError",
    "parse_scenario",
    "plan_holds",
    "quick",
    "run_bench",
]
