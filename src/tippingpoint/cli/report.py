"""`tippingpoint report` and `encode`: merge, summarise and export result streams."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from tippingpoint.cli.base import cli, fail


def open_inputs(files: tuple[str, ...]) -> list[tuple[str, Any]]:
    if not files or "-" in files:
        _upstream_ends_it()
    if not files or files == ("-",):
        return [("stdin", sys.stdin)]
    streams = []
    for name in files:
        try:
            streams.append((name, sys.stdin if name == "-" else open(name, encoding="utf-8")))  # noqa: SIM115
        except OSError as e:
            fail(f"cannot read {name}: {e.strerror}")
    return streams


def _upstream_ends_it() -> None:
    """Reading a pipe (``attack | report``), leave Ctrl-C to the command upstream: the
    terminal sends it to both, the attack then writes its last records and closes the
    pipe, and this reports them. Taking it here lost every result ("Aborted!")."""
    import signal

    if not sys.stdin.isatty():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@cli.command()
@click.argument("files", nargs=-1)
@click.option(
    "--type",
    "kind",
    default="text",
    show_default=True,
    help="text, json, hist[0,1ms,5ms,10ms] or hdrplot.",
)
@click.option("--every", default=None, help="One report per window of this length, e.g. 5s.")
@click.option("-o", "--output", default="-", show_default=True, help="Output file.")
def report(files: tuple[str, ...], kind: str, every: str | None, output: str) -> None:
    """Merge result streams (files, stdin; tippingpoint or Vegeta JSON) and report."""
    from tippingpoint.hdr import HistogramDecodeError
    from tippingpoint.pacer import parse_duration
    from tippingpoint.report.histogram import parse_buckets, render_hdrplot, render_hist
    from tippingpoint.report.jsonfmt import render_json
    from tippingpoint.report.merge import InputError, Summary, read_records, summarize, windows
    from tippingpoint.report.text import render_text

    render: Callable[[Summary], str]
    if kind == "text":
        render = render_text
    elif kind == "json":
        render = render_json
    elif kind == "hdrplot":
        render = render_hdrplot
    elif kind.startswith("hist"):
        try:
            edges = parse_buckets(kind)
        except ValueError as e:
            fail(str(e))
            return

        def render(s: Summary) -> str:
            return render_hist(s, edges)
    else:
        fail(f"unknown report type {kind!r}: use text, json, hist[...] or hdrplot")
        return
    try:
        records = list(read_records(open_inputs(files)))
        if every:
            period = parse_duration(every)
            if period <= 0:
                raise ValueError("--every must be > 0")
            parts = []
            for start, summary in windows(records, period):
                parts.append(f"# window starting at {start:g} s\n" if kind != "json" else "")
                parts.append(render(summary.finish()))
            text = "".join(parts)
        else:
            summary = summarize(records)
            text = render(summary)
            if kind != "text":  # the text report shows them itself
                for warning in summary.warnings:
                    click.echo(f"tippingpoint: warning: {warning}", err=True)
    except (InputError, HistogramDecodeError) as e:
        fail(str(e), 1)  # the input is wrong, not the command line
        return
    except ValueError as e:
        fail(str(e))
        return
    write_output(output, text)


def write_output(output: str, text: str) -> None:
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        fail(f"cannot write -o {output}: {e.strerror} (give a file in a directory that exists)")


@cli.command()
@click.argument("files", nargs=-1)
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["hlog", "csv"]),
    required=True,
    help="hlog: HdrHistogram interval log; csv: a row per interval per process.",
)
@click.option(
    "--metric",
    type=click.Choice(["latency", "service", "ttfb", "connect", "lateness"]),
    default="latency",
    show_default=True,
    help="Histogram for --to hlog.",
)
@click.option("-o", "--output", default="-", show_default=True, help="Output file.")
def encode(files: tuple[str, ...], fmt: str, metric: str, output: str) -> None:
    """Export result streams as an HdrHistogram interval log or CSV."""
    from tippingpoint.hdr import HistogramDecodeError
    from tippingpoint.report.encode import to_csv, to_hlog
    from tippingpoint.report.merge import InputError, read_records

    try:
        records = list(read_records(open_inputs(files)))
        text = to_hlog(records, metric) if fmt == "hlog" else to_csv(records)
    except (InputError, HistogramDecodeError, KeyError) as e:
        fail(f"cannot encode: {e}", 1)
        return
    write_output(output, text)
