"""`tippingpoint attack`: constant-rate (or planned, or closed-loop) load."""

from __future__ import annotations

import sys
from typing import Any

import click

from tippingpoint.cli.apps import commands_of
from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.fleet import cluster_options, load_of
from tippingpoint.cli.options import (
    attack_config,
    mqtt_publish_options,
    request_options,
    user_errors,
    warn_timeout,
)
from tippingpoint.cli.web import live_page, web_options


@cli.command()
@request_options
@click.option(
    "--rate",
    default="50/1s",
    show_default=True,
    help="Requests per second (1000, 1000/1s, 5/100ms); 0 = closed model.",
)
@click.option(
    "--pace", default=None, help="Step/ramp plan, e.g. '10s@1000, 30s@1000->5000, 20s@5000'."
)
@click.option("--duration", default=None, help="How long to send, e.g. 30s, 5m.")
@click.option("--requests", type=int, default=None, help="How many requests in all.")
@click.option(
    "--connections",
    type=int,
    default=10,
    show_default=True,
    help="Closed model (--rate 0): connections sending back to back.",
)
@click.option(
    "-o", "--output", default="-", show_default=True, help="Result stream file ('-' for stdout)."
)
@click.option(
    "--records",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write one line per request (Vegeta's JSON result format).",
)
@cluster_options
@mqtt_publish_options
@web_options
def attack(**opts: Any) -> None:
    """Send load at a constant rate (or a plan, or closed-loop) and stream the results.

    Latency counts from each request's intended send time. The result stream (JSON
    lines, HDR histograms per second and per process) goes to --output; read it with
    `tippingpoint report`.

    With mqtt://HOST[:PORT]/TOPIC (or mqtts://), --connections sessions publish to
    TOPIC (%i: the session's number) and latency ends where --until says.
    """
    with user_errors():
        config = _attack_from(opts)
    url = opts["url"] or config.targets[0].url
    with live_page(
        opts, f"tippingpoint attack {url}", "attack", None, ("attack", "attack", url), True
    ):
        _attack(config, opts)


def _attack(config: Any, opts: dict[str, Any]) -> None:
    from contextlib import nullcontext

    from tippingpoint.report.merge import succeeded
    from tippingpoint.stream import Interval, Record

    warn_timeout(config, "attack")
    from tippingpoint.cli.output import OutputError, ResultFile

    try:
        out = ResultFile(opts["output"])
    except OutputError as e:
        fail(str(e))
        return
    live = _live(config)
    answered = [0, 0]  # requests done, succeeded
    errors: dict[str, list[Any]] = {}  # kind: [count, a message]

    def on_record(record: Record, line: bytes) -> None:
        out.write(line)
        if live is not None:
            live.on_record(record)
        if isinstance(record, Interval):
            answered[0] += record.done
            answered[1] += succeeded(record.codes)
            for kind, error in record.errors.items():
                errors.setdefault(kind, [0, error.sample])[0] += error.count

    try:
        with live if live is not None else nullcontext(), load_of(opts, "attack") as load:
            code = load.attack(config, on_record)
    except OutputError as e:
        fail(str(e), 1)
        return
    except OSError as e:
        fail(f"cannot attack: {e}")
        return
    finally:
        out.close()
    if code == 0 and answered[0] and not answered[1]:
        kind, (count, sample) = max(errors.items(), key=lambda e: e[1][0], default=("", (0, "")))
        why = f" ({kind} {count:,}: {sample})" if kind else ""
        click.echo(
            f"tippingpoint: none of the {answered[0]:,} requests succeeded{why}: is the target "
            "up, at that address and scheme? (`tippingpoint report` shows the errors)",
            err=True,
        )
        code = 1
    sys.exit(code)


def _check_plan(opts: dict[str, Any]) -> None:
    """The load plan's options, each alone and together (ValueError, one line)."""
    from click.core import ParameterSource

    from tippingpoint.pacer import parse_duration

    if opts["duration"] and parse_duration(opts["duration"]) <= 0:
        raise ValueError(f"--duration {opts['duration']}: give a time > 0, e.g. 10s")
    if opts["requests"] is not None and opts["requests"] < 1:
        raise ValueError(f"--requests {opts['requests']}: give a count >= 1")
    if opts["pace"]:
        source = click.get_current_context().get_parameter_source("rate")
        if source is ParameterSource.COMMANDLINE:
            raise ValueError("--pace sets the rates itself: give --pace or --rate, not both")


def _attack_from(opts: dict[str, Any]) -> Any:
    """The attack's config from its options (ValueError and the like, one line each)."""
    from tippingpoint.pacer import parse_duration, parse_pace, parse_rate

    duration, requests = opts["duration"], opts["requests"]
    _check_plan(opts)
    config = attack_config(
        opts,
        rate=parse_rate(opts["rate"]),
        pace=tuple(parse_pace(opts["pace"])) if opts["pace"] else (),
        duration=parse_duration(duration) if duration else None,
        requests=requests,
        connections=opts["connections"],
        records=opts["records"],
        **commands_of(opts["url"] or "").attack(
            opts, closed=opts["rate"] in ("0", "0/1s") and not opts["pace"]
        ),
    )
    if not config.closed and not config.pace and duration is None and requests is None:
        raise ValueError("give --duration or --requests (or --pace) so the attack ends")
    if config.closed and duration is None and requests is None:
        raise ValueError("the closed model (--rate 0) needs --duration or --requests")
    if config.closed and config.connections < 1:
        raise ValueError("--connections must be >= 1")
    if not config.closed:
        config.pacer()
    return config


def _live(config: Any) -> Any:
    """The live view on a terminal's stderr (None when stderr is not a terminal)."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    from tippingpoint.report.live import LiveView

    planned = offered = None
    if not config.closed:
        pacer = config.pacer()
        planned, offered = pacer.total_hits(), pacer.total_hits() / max(pacer.end, 1e-9)
    return LiveView(Console(stderr=True), planned, offered)
