"""`tippingpoint sweep`: step the rate (or, closed, the connections) up to the tipping point."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from tippingpoint.cli.apps import commands_of
from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.fleet import cluster_options, load_of
from tippingpoint.cli.options import (
    attack_config,
    mqtt_publish_options,
    parse_roles,
    request_options,
    user_errors,
    warn_timeout,
)
from tippingpoint.cli.web import live_page, web_options

if TYPE_CHECKING:
    from tippingpoint.sweep import SweepConfig

_SWEEP_CONNECTIONS = 128


@cli.command()
@request_options
@click.option(
    "--closed",
    is_flag=True,
    help="Step the connections of a closed loop (as wrk -c), not the rate.",
)
@click.option(
    "--start",
    "start_rate",
    default=None,
    help="First rate (requests per second) [default: 1000]; --closed: first connections "
    "[default: 1].",
)
@click.option(
    "--step",
    "step_spec",
    default=None,
    help="Next rate (connections): x1.5 (multiply) or +1000 (add) [default: x1.5; --closed: x2].",
)
@click.option("--step-duration", default="10s", show_default=True, help="Length of each step.")
@click.option(
    "--max-steps",
    type=int,
    default=10,
    show_default=True,
    help="Steps in all, refinement included.",
)
@click.option("--max-rate", default=None, help="Never offer more than this rate.")
@click.option(
    "--refine",
    type=int,
    default=2,
    show_default=True,
    help="Bisection steps between the last good and the first bad rate.",
)
@click.option("--slo", default=None, help="Also a knee when above, e.g. 'p99<50ms'.")
@click.option(
    "--factor",
    type=float,
    default=3.0,
    show_default=True,
    help="A knee when p99 > FACTOR x the low-load p99 ...",
)
@click.option(
    "--floor",
    "floor_ms",
    type=float,
    default=5.0,
    show_default=True,
    help="... and more than FLOOR ms above it.",
)
@click.option(
    "--proxy-dir",
    default=None,
    help="A `tippingpoint proxy` directory: watch its HAProxy (CPU, counters).",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="NAME=PID[,PID...] to watch (CPU %, RSS) beside the proxy.",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    help="Directory for each step's result stream and the monitor series.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@cluster_options
@mqtt_publish_options
@web_options
def sweep(**opts: Any) -> None:
    """Step the rate up until latency tips over; print the table and the tipping point.

    With --closed, step the number of connections of a closed loop instead (each sends
    its next request when the last is answered, as wrk does): the tipping point is then
    the most the server carries while its latency stays near its low-load level."""
    with user_errors():
        sweep_config, roles = _sweep_config(opts)
    url = opts["url"] or sweep_config.attack.targets[0].url
    with live_page(opts, f"tippingpoint sweep {url}", "sweep", None, ("sweep", "sweep", url)):
        _sweep(sweep_config, roles, opts)


def _sweep(sweep_config: SweepConfig, roles: dict[str, list[int]], opts: dict[str, Any]) -> None:
    import json

    from tippingpoint import tap
    from tippingpoint.monitor import Monitor
    from tippingpoint.search import run_sweep
    from tippingpoint.sweep import render_table

    config = sweep_config.attack
    closed = sweep_config.closed
    warn_timeout(config, "sweep")
    sockets = _proxy_roles(opts["proxy_dir"], roles) if opts["proxy_dir"] else None
    monitor = Monitor(roles, sockets)
    if not opts["cluster"]:
        monitor.cores = _ledger(roles)

    def on_row(row: Any) -> None:
        label = f"{row.connections:,d} connections" if closed else f"{row.offered:,.0f}/s"
        line = (
            f"step {label}: achieved {row.achieved:,.0f}/s, "
            f"p99 {row.p99_ms:.2f} ms, success {row.success * 100:.2f}%"
            + (f" - {row.verdict}" if row.verdict else "")
        )
        tap.log(line)
        if not opts["as_json"]:
            click.echo(line, err=True)

    from dataclasses import replace

    from tippingpoint import interrupt

    # A Ctrl-C between steps ends the sweep there.
    with interrupt.catching(), load_of(opts, "sweep") as load:
        result = run_sweep(replace(sweep_config, runner=load.attack), monitor, on_row)
    tap.result(result.to_json())
    if opts["as_json"]:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(render_table(result), nl=False)
    if result.interrupted:
        sys.exit(130)  # what was measured is above; the exit status says it was cut short
    if result.rows and not any(row.success for row in result.rows):
        fail(
            "not one request of the sweep succeeded: is the target up, at that address and "
            "scheme? (the step's errors: tippingpoint attack URL --rate 10 | tippingpoint report)",
            1,
        )


def _proxy_roles(proxy_dir: str, roles: dict[str, list[int]]) -> Any:
    """HAProxy's processes (and its backends') from ``tippingpoint proxy``'s sockets in
    ``proxy_dir``, added to ``roles``; returns how the monitor finds the sockets."""
    from pathlib import Path

    from tippingpoint.proxy.stats import show_info, stats_sockets

    directory = Path(proxy_dir)
    try:
        found = stats_sockets(directory, "--proxy-dir")
    except ValueError as e:
        fail(str(e))
    try:
        roles["proxy"] = [int(show_info(p)["Pid"]) for p in found]
        if "backends" not in roles:
            roles["backends"] = _backends(found)
    except (OSError, KeyError, ValueError):
        fail(f"cannot read HAProxy's sockets in {directory}: is `tippingpoint proxy` running?")
    if not roles["backends"]:
        del roles["backends"]

    return lambda: stats_sockets(directory)


def _sweep_config(opts: dict[str, Any]) -> tuple[SweepConfig, dict[str, list[int]]]:
    """The sweep's config and the monitor's roles, from the options (ValueError if bad)."""

    from tippingpoint.knee import KneeRule, parse_slo
    from tippingpoint.pacer import parse_duration, parse_rate
    from tippingpoint.sweep import SweepConfig, parse_step

    closed = opts["closed"]
    if closed and opts["max_connections"] is not None:
        raise ValueError("--closed steps the connections itself: drop --max-connections")
    if closed and opts["max_rate"]:
        raise ValueError("--closed offers no rate: drop --max-rate (--max-steps bounds it)")
    if opts["max_connections"] is None:
        # A fixed pool, as wrk2 holds: the sweep measures the server's request capacity;
        # past it, hits queue and the latency shows the knee. Without a cap, a slowing
        # server makes the client open connection after connection, and the run measures
        # the proxy's connection handling instead.
        opts["max_connections"] = _SWEEP_CONNECTIONS
    extra = commands_of(opts["url"] or "").attack(opts, closed=closed, sweep=True)
    config = attack_config(opts, rate=1.0, duration=1.0, **extra)
    step_duration = parse_duration(opts["step_duration"])
    if step_duration < 1:
        raise ValueError("--step-duration must be >= 1s")
    sweep_config = SweepConfig(
        attack=config,
        start=(
            _connections(opts["start_rate"] or "1")
            if closed
            else parse_rate(opts["start_rate"] or "1000")
        ),
        step=parse_step(opts["step_spec"] or ("x2" if closed else "x1.5")),
        step_duration=step_duration,
        max_steps=opts["max_steps"],
        refine=opts["refine"],
        max_rate=parse_rate(opts["max_rate"]) if opts["max_rate"] else None,
        rule=KneeRule(
            factor=opts["factor"],
            floor_ms=opts["floor_ms"],
            slo=parse_slo(opts["slo"]) if opts["slo"] else None,
        ),
        out=_out_dir(opts["out_dir"]),
        closed=closed,
    )
    if sweep_config.start <= 0 or sweep_config.max_steps < 1:
        raise ValueError("--start must be > 0 and --max-steps >= 1")
    roles = parse_roles(opts["roles"])
    return sweep_config, roles


def _backends(sockets: list[Any]) -> list[int]:
    """The processes listening where the proxy's servers are: the backends, part of
    the system under test (their CPU is not foreign load)."""
    from tippingpoint.listeners import listeners
    from tippingpoint.proxy.stats import show_stat

    ports: dict[str, set[int]] = {}
    for path in sockets[:1]:  # every instance has the same servers
        for row in show_stat(path):
            host, _, port = (row.get("addr") or "").rpartition(":")
            if row.get("svname") not in ("FRONTEND", "BACKEND") and port.isdigit():
                ports.setdefault(host.strip("[]"), set()).add(int(port))
    found = (s.pid for host, wanted in ports.items() for s in listeners(host, wanted))
    return sorted({pid for pid in found if pid is not None})


def _ledger(roles: dict[str, list[int]]) -> Any:
    """Every core accounted for per step: the watched roles where /proc says they run,
    the load on this process's CPUs."""
    import os

    from tippingpoint.cores import Ledger
    from tippingpoint.placement import cpus_of

    placed = {name: cpus_of(pids) for name, pids in roles.items()}
    return Ledger(
        lambda: {name: (placed[name], pids) for name, pids in roles.items()},
        os.sched_getaffinity(0),
    )


def _connections(text: str) -> float:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"bad --start {text!r}: with --closed, a number of connections >= 1")
    return float(value)


def _out_dir(text: str | None) -> Any:
    """``--out DIR`` as a Path (None when not given); ValueError when a file is there."""
    from pathlib import Path

    if not text:
        return None
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {text}: a file is there: give a directory (made if missing)")
    return path
