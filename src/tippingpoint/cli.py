"""The command line: parses arguments, prints for humans, exits. Nothing else does."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from tippingpoint import __version__

__all__ = ["main"]


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"tippingpoint: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tippingpoint")
def cli() -> None:
    """Load-test proxies and services: constant-rate load, true latency, the tipping point."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--ports",
    default="8282",
    show_default=True,
    help="Ports: ranges and lists, e.g. 8282-8291,9000 (the article ran 10 per machine).",
)
@click.option(
    "--processes",
    type=int,
    default=None,
    help="Worker processes sharing every port with SO_REUSEPORT  [default: cores].",
)
@click.option(
    "--idle-timeout",
    type=float,
    default=3600.0,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open (the article's server.timeout).",
)
@click.option(
    "--header-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to receive a request's headers once it has begun (slowloris guard).",
)
@click.option(
    "--max-header-size",
    type=int,
    default=16384,
    show_default=True,
    help="Largest request header block in bytes; larger gets 431.",
)
@click.option(
    "--max-body-size",
    type=int,
    default=16 * 1024 * 1024,
    show_default=True,
    help="Largest request body in bytes; larger gets 413.",
)
@click.option(
    "--max-connections",
    type=int,
    default=None,
    help="Connections per process before it stops accepting  [default: open-file limit].",
)
@click.option("--backlog", type=int, default=4096, show_default=True, help="Listen backlog.")
@click.option(
    "--loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    help="Event loop.",
)
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus text on this port.")
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.option("--statsd", default=None, help="Send a request counter to statsd at host:port.")
@click.option(
    "--statsd-metric",
    default="tippingpoint.serve.requests",
    show_default=True,
    help="Counter name sent to statsd.",
)
def serve(
    host: str,
    ports: str,
    processes: int | None,
    idle_timeout: float,
    header_timeout: float,
    max_header_size: int,
    max_body_size: int,
    max_connections: int | None,
    backlog: int,
    loop: str,
    metrics_port: int | None,
    metrics_host: str,
    statsd: str | None,
    statsd_metric: str,
) -> None:
    """Run the ping/pong backend: any request gets 200 "pong".

    A `sleep: N` header waits a random whole number of ms in [0, N+1] before the
    first pong; `times: K` writes K more pongs, each after its own random pause
    (chunked). Stops cleanly on Ctrl-C or SIGTERM.
    """
    from tippingpoint.server import ServeConfig, ServeError
    from tippingpoint.server import serve as run_serve
    from tippingpoint.server.config import default_processes, parse_hostport, parse_ports

    try:
        config = ServeConfig(
            host=host,
            ports=parse_ports(ports),
            processes=processes if processes is not None else default_processes(),
            idle_timeout=idle_timeout,
            header_timeout=header_timeout,
            max_header=max_header_size,
            max_body=max_body_size,
            max_connections=max_connections,
            backlog=backlog,
            loop=loop,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
            statsd=parse_hostport(statsd) if statsd else None,
            statsd_metric=statsd_metric,
        )
    except ValueError as e:
        _fail(str(e))
        return
    try:
        code = run_serve(config)
    except ServeError as e:
        _fail(str(e))
        return
    sys.exit(code)


def _parse_laddrs(spec: str | None) -> tuple[str, ...]:
    """``127.0.0.2-127.0.0.40`` or ``127.0.0.2,127.0.0.3`` -> addresses."""
    import ipaddress

    if not spec:
        return ()
    out: list[str] = []
    for part in spec.split(","):
        low_s, sep, high_s = part.strip().partition("-")
        try:
            low = ipaddress.ip_address(low_s)
            high = ipaddress.ip_address(high_s) if sep else low
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: use addresses or ranges like 127.0.0.2-127.0.0.40"
            ) from None
        if int(high) < int(low) or int(high) - int(low) > 65535:
            raise click.BadParameter(f"{part!r}: the range must go up, at most 65,536 addresses")
        out.extend(str(ipaddress.ip_address(i)) for i in range(int(low), int(high) + 1))
    return tuple(out)


@cli.command()
@click.argument("url", required=False)
@click.option(
    "--targets",
    "targets_file",
    type=click.Path(dir_okay=False),
    help="Targets file (Vegeta's http or json format); '-' for stdin.",
)
@click.option(
    "--format",
    "targets_format",
    type=click.Choice(["http", "json"]),
    default="http",
    show_default=True,
    help="Targets file format.",
)
@click.option("-X", "--method", default="GET", show_default=True, help="Method for URL.")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    help="Header 'Name: value' (repeatable), e.g. -H 'sleep: 1000' -H 'times: 2'.",
)
@click.option("--body-file", type=click.Path(dir_okay=False), help="Request body file.")
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
    "--max-connections",
    type=int,
    default=None,
    help="Cap on open connections (all processes); hits beyond it queue.",
)
@click.option("--no-keepalive", is_flag=True, help="A new connection for every request.")
@click.option(
    "--laddr",
    default=None,
    help="Source addresses, e.g. 127.0.0.2-127.0.0.40 (more ports per destination).",
)
@click.option("--timeout", default="30s", show_default=True, help="Per-request timeout.")
@click.option("--insecure", is_flag=True, help="TLS: do not verify the server certificate.")
@click.option("--cacert", type=click.Path(dir_okay=False), help="TLS: CA bundle to verify with.")
@click.option("--cert", type=click.Path(dir_okay=False), help="TLS: client certificate.")
@click.option("--key", type=click.Path(dir_okay=False), help="TLS: client key.")
@click.option("--sni", default=None, help="TLS: server name to send and verify.")
@click.option(
    "--tls-resume/--no-tls-resume",
    default=False,
    show_default=True,
    help="TLS: offer the last session ticket on new connections (resumption).",
)
@click.option(
    "--processes",
    type=int,
    default=None,
    help="Load processes  [default: cores; more when --max-connections needs them].",
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
def attack(
    url: str | None,
    targets_file: str | None,
    targets_format: str,
    method: str,
    headers: tuple[str, ...],
    body_file: str | None,
    rate: str,
    pace: str | None,
    duration: str | None,
    requests: int | None,
    connections: int,
    max_connections: int | None,
    no_keepalive: bool,
    laddr: str | None,
    timeout: str,
    insecure: bool,
    cacert: str | None,
    cert: str | None,
    key: str | None,
    sni: str | None,
    tls_resume: bool,
    processes: int | None,
    output: str,
    records: str | None,
) -> None:
    """Send load at a constant rate (or a plan, or closed-loop) and stream the results.

    Latency counts from each request's intended send time. The result stream (JSON
    lines, HDR histograms per second and per process) goes to --output; read it with
    `tippingpoint report`.
    """
    from pathlib import Path

    from tippingpoint.engine.runner import run_attack
    from tippingpoint.model import AttackConfig, TLSOptions
    from tippingpoint.pacer import format_duration, parse_duration, parse_pace, parse_rate
    from tippingpoint.server.config import default_processes
    from tippingpoint.targets import Target, TargetError, parse_header, parse_targets

    try:
        head = tuple(parse_header(h) for h in headers)
        body = Path(body_file).read_bytes() if body_file else b""
        if targets_file:
            text = sys.stdin.read() if targets_file == "-" else Path(targets_file).read_text()
            base = None if targets_file == "-" else Path(targets_file).parent
            targets = parse_targets(text, targets_format, head, body, base)
        elif url:
            targets = [Target(method.upper(), url, head, body)]
        else:
            _fail(
                "give a URL or --targets FILE, e.g. "
                "tippingpoint attack http://127.0.0.1:8282/ --rate 100 --duration 10s"
            )
            return
        segments = tuple(parse_pace(pace)) if pace else ()
        config = AttackConfig(
            targets=tuple(targets),
            rate=parse_rate(rate),
            pace=segments,
            duration=parse_duration(duration) if duration else None,
            requests=requests,
            connections=connections,
            max_connections=max_connections,
            keepalive=not no_keepalive,
            laddrs=_parse_laddrs(laddr),
            timeout=parse_duration(timeout),
            tls=TLSOptions(
                insecure=insecure,
                cacert=cacert,
                cert=cert,
                key=key,
                server_name=sni,
                resume=tls_resume,
            ),
            processes=processes if processes is not None else default_processes(),
            records=records,
        )
        if not config.closed and not config.pace and config.duration is None and requests is None:
            _fail("give --duration or --requests (or --pace) so the attack ends")
            return
        if config.closed and config.duration is None and requests is None:
            _fail("the closed model (--rate 0) needs --duration or --requests")
            return
        if config.closed and connections < 1:
            _fail("--connections must be >= 1")
            return
        if max_connections is not None and max_connections < 1:
            _fail("--max-connections must be >= 1")
            return
        if config.timeout <= 0:
            _fail("--timeout must be > 0")
            return
        if not config.closed:
            config.pacer()
    except (ValueError, TargetError, click.BadParameter) as e:
        _fail(str(e))
        return
    except OSError as e:
        _fail(f"cannot read {e.filename}: {e.strerror}")
        return
    worst = config.longest_server_delay()
    if worst > config.timeout:
        click.echo(
            f"tippingpoint attack: warning: the sleep/times headers let the server take up to "
            f"{format_duration(worst)}, beyond --timeout {format_duration(config.timeout)}: "
            "those requests will fail as timeouts (raise --timeout)",
            err=True,
        )
    out = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115

    def on_line(line: bytes) -> None:
        out.write(line)
        out.flush()

    live = None
    if sys.stderr.isatty():
        from rich.console import Console

        from tippingpoint.report.live import LiveView

        planned = offered = None
        if not config.closed:
            pacer = config.pacer()
            planned, offered = pacer.total_hits(), pacer.total_hits() / max(pacer.end, 1e-9)
        live = LiveView(Console(stderr=True), planned, offered)
    try:
        if live is not None:
            with live:
                code = run_attack(config, on_line, live.on_record)
        else:
            code = run_attack(config, on_line)
    except OSError as e:
        _fail(f"cannot attack: {e}")
        return
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    sys.exit(code)


def _open_inputs(files: tuple[str, ...]) -> list[tuple[str, Any]]:
    if not files or files == ("-",):
        return [("stdin", sys.stdin)]
    streams = []
    for name in files:
        try:
            streams.append((name, sys.stdin if name == "-" else open(name, encoding="utf-8")))  # noqa: SIM115
        except OSError as e:
            _fail(f"cannot read {name}: {e.strerror}")
    return streams


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
    from tippingpoint.pacer import parse_duration
    from tippingpoint.report.histogram import parse_buckets, render_hdrplot, render_hist
    from tippingpoint.report.jsonfmt import render_json
    from tippingpoint.report.merge import InputError, Summary, read_records, summarize, windows
    from tippingpoint.report.text import render_text
    from tippingpoint.stats import HistogramDecodeError

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
            _fail(str(e))
            return

        def render(s: Summary) -> str:
            return render_hist(s, edges)
    else:
        _fail(f"unknown report type {kind!r}: use text, json, hist[...] or hdrplot")
        return
    try:
        records = list(read_records(_open_inputs(files)))
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
            text = render(summarize(records))
    except (InputError, HistogramDecodeError, ValueError) as e:
        _fail(str(e))
        return
    _write_output(output, text)


def _write_output(output: str, text: str) -> None:
    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)


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
    from tippingpoint.report.encode import to_csv, to_hlog
    from tippingpoint.report.merge import InputError, read_records
    from tippingpoint.stats import HistogramDecodeError

    try:
        records = list(read_records(_open_inputs(files)))
        text = to_hlog(records, metric) if fmt == "hlog" else to_csv(records)
    except (InputError, HistogramDecodeError, KeyError) as e:
        _fail(f"cannot encode: {e}")
        return
    _write_output(output, text)


def main() -> None:
    cli()
