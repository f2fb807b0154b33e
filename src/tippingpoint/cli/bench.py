"""`tippingpoint bench`: the whole experiment, one command."""

from __future__ import annotations

import click

from tippingpoint.cli.base import cli, fail


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
def bench(
    scenario: str | None,
    out_dir: str,
    quick: bool,
    haproxy_bin: str | None,
    print_scenario: bool,
    cluster: str | None,
) -> None:
    """Build the bench (backends, HAProxy, monitor), run the scenario, write the report.

    Without SCENARIO: the article's three questions on this machine (HTTP and TLS
    tipping points, long requests building up connections) in a few minutes.
    """
    import signal
    from pathlib import Path

    from tippingpoint.bench import (
        DEFAULT_SCENARIO,
        BenchFailure,
        ScenarioError,
        parse_scenario,
        run_bench,
    )
    from tippingpoint.bench import quick as make_quick
    from tippingpoint.listeners import PortBusy
    from tippingpoint.proxy.instance import HAProxyError

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

        from tippingpoint.bench.scenario import ClusterSpec

        old = parsed.cluster or ClusterSpec()
        parsed = replace(parsed, cluster=replace(old, address=cluster, workers=0))
    out = Path(out_dir).absolute()
    index = out / "index.html"

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # stop as on Ctrl-C: clean up, keep the report
    try:
        report = run_bench(parsed, out, lambda line: click.echo(line, err=True), haproxy_bin)
    except ScenarioError as e:
        fail(f"scenario {scenario or '(default)'}: {e}")
        return
    except (BenchFailure, HAProxyError, PortBusy, RuntimeError) as e:
        fail(f"bench: {e}", 1)
        return
    except OSError as e:
        fail(f"bench: {e.strerror or e}: {e.filename}", 1)
        return
    except KeyboardInterrupt:
        partial = f"; the report has what ran: {index}" if index.exists() else ""
        fail(f"bench: interrupted; everything started has been stopped{partial}", 130)
        return
    click.echo(f"\n{report.title}")
    for name, result in report.summary:
        click.echo(f"  {name:40s} {result}")
    for warning in report.warnings:
        click.echo(f"\nwarning: {warning}")
    click.echo(f"\nreport: {index}")
