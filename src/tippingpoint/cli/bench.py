"""`tippingpoint bench`: the whole experiment, one command."""

from __future__ import annotations

from typing import Any

import click

from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.web import live_page, web_options


@cli.command()
@click.argument("scenario", required=False, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "-o",
    "--out",
    "out_dir",
    default="./tippingpoint-report",
    show_default=True,
    help="Report directory (index.html, HAProxy config, streams, monitor series).",
)
@click.option("--quick", is_flag=True, help="Short steps: about 2 min 20 s here.")
@click.option("--haproxy-bin", default=None, help="HAProxy executable  [default: haproxy].")
@click.option("--print-scenario", is_flag=True, help="Print the default scenario and exit.")
@click.option(
    "--cluster",
    default=None,
    help="Run the client side on the workers of this Dask scheduler (the scenario's "
    "[cluster] otherwise), e.g. tcp://127.0.0.1:8786.",
)
@web_options
def bench(
    scenario: str | None,
    out_dir: str,
    quick: bool,
    haproxy_bin: str | None,
    print_scenario: bool,
    cluster: str | None,
    **web: Any,
) -> None:
    """Build the bench (backends, HAProxy, monitor), run the scenario, write the report.

    Without SCENARIO: the article's three questions on this machine (HTTP and TLS
    tipping points, long requests building up connections) in a few minutes.
    """
    from pathlib import Path

    from tippingpoint.bench import DEFAULT_SCENARIO, ScenarioError, parse_scenario
    from tippingpoint.bench import quick as make_quick

    if print_scenario:
        click.echo(DEFAULT_SCENARIO, nl=False)
        return
    try:
        text = Path(scenario).read_text() if scenario else DEFAULT_SCENARIO
        parsed = parse_scenario(text)
    except (ScenarioError, OSError) as e:
        fail(f"scenario {scenario or '(default)'}: {e}")
        return
    if quick:
        parsed = make_quick(parsed)
    if cluster:
        from dataclasses import replace

        from tippingpoint.bench.spec import ClusterSpec

        old = parsed.cluster or ClusterSpec()
        parsed = replace(parsed, cluster=replace(old, address=cluster, workers=0, names=()))
    out = Path(out_dir).absolute()
    with live_page(web, parsed.title, "bench", out):
        report = _run(parsed, out, scenario or "(default)", haproxy_bin)
        # Before the live page lingers: the answer first.
        click.echo(f"\n{report.title}")
        for name, result in report.summary:
            click.echo(f"  {name:40s} {result}")
        for warning in report.warnings:
            click.echo(f"\nwarning: {warning}")
        click.echo(f"\nreport: {out / 'index.html'}")


def _log(line: str) -> None:
    from tippingpoint import tap

    click.echo(line, err=True)
    tap.log(line)


def _run(parsed: Any, out: Any, scenario: str, haproxy_bin: str | None) -> Any:
    """Run the bench; every way it can end short of its report is one line and a status
    (130 for Ctrl-C or SIGTERM, which are noted, passed on to the load running, and end
    the bench at its next step, which cleans up and keeps the report)."""
    from tippingpoint import interrupt
    from tippingpoint.bench import BenchFailure, ScenarioError, run_bench
    from tippingpoint.bench.topology import LabFailure
    from tippingpoint.listeners import PortBusy
    from tippingpoint.proxy.instance import HAProxyError

    index = out / "index.html"
    interrupted = "bench: interrupted; everything started has been stopped"
    stopped = 0
    try:
        with interrupt.catching():
            try:
                return run_bench(parsed, out, _log, haproxy_bin)
            finally:
                stopped = interrupt.requested()
    except ScenarioError as e:
        fail(f"scenario {scenario}: {e}")
    except (BenchFailure, HAProxyError, PortBusy, RuntimeError, OSError) as e:
        if stopped and not isinstance(e, LabFailure):  # the roles died of the terminal's Ctrl-C
            fail(interrupted, 130)
        if isinstance(e, OSError) and not isinstance(e, PortBusy):
            fail(f"bench: {e.strerror or e}: {e.filename}", 1)
        fail(f"bench: {e}", 1)
    except KeyboardInterrupt:
        partial = f"; the report has what ran: {index}" if index.exists() else ""
        fail(f"{interrupted}{partial}", 130)
