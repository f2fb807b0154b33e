"""The command line: parses arguments, prints for humans, exits. Nothing else does."""

from __future__ import annotations

import sys
import time
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


def _parse_roles(specs: tuple[str, ...]) -> dict[str, list[int]]:
    """``("proxy=12,13", "backends=20")`` -> role -> PIDs (for the monitor)."""
    roles: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, pids = spec.partition("=")
        if not sep or not name or not all(p.strip().isdigit() for p in pids.split(",")):
            raise ValueError(f"bad --role {spec!r}: use NAME=PID[,PID...]")
        roles.setdefault(name, []).extend(int(p) for p in pids.split(","))
    return roles


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


def _request_options(f: Callable[..., None]) -> Callable[..., None]:
    """What to request and how to connect: shared by attack and sweep."""
    options = [
        click.argument("url", required=False),
        click.option(
            "--targets",
            "targets_file",
            type=click.Path(dir_okay=False),
            help="Targets file (Vegeta's http or json format); '-' for stdin.",
        ),
        click.option(
            "--format",
            "targets_format",
            type=click.Choice(["http", "json"]),
            default="http",
            show_default=True,
            help="Targets file format.",
        ),
        click.option("-X", "--method", default="GET", show_default=True, help="Method for URL."),
        click.option(
            "-H",
            "--header",
            "headers",
            multiple=True,
            help="Header 'Name: value' (repeatable), e.g. -H 'sleep: 1000'.",
        ),
        click.option("--body-file", type=click.Path(dir_okay=False), help="Request body file."),
        click.option(
            "--max-connections",
            type=int,
            default=None,
            help="Cap on open connections (all processes); hits beyond it queue.",
        ),
        click.option("--no-keepalive", is_flag=True, help="A new connection for every request."),
        click.option(
            "--laddr",
            default=None,
            help="Source addresses, e.g. 127.0.0.2-127.0.0.40 (more ports).",
        ),
        click.option("--timeout", default="30s", show_default=True, help="Per-request timeout."),
        click.option("--insecure", is_flag=True, help="TLS: do not verify the server certificate."),
        click.option(
            "--cacert", type=click.Path(dir_okay=False), help="TLS: CA bundle to verify with."
        ),
        click.option("--cert", type=click.Path(dir_okay=False), help="TLS: client certificate."),
        click.option("--key", type=click.Path(dir_okay=False), help="TLS: client key."),
        click.option("--sni", default=None, help="TLS: server name to send and verify."),
        click.option(
            "--tls-resume/--no-tls-resume",
            default=False,
            show_default=True,
            help="TLS: offer the last session ticket on new connections.",
        ),
        click.option(
            "--processes",
            type=int,
            default=None,
            help="Load processes  [default: cores; more when connections need it].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _attack_config(opts: dict[str, Any], **plan: Any) -> Any:
    """An AttackConfig from the shared request options and a load plan; raises ValueError,
    TargetError, click.BadParameter or OSError with a one-line message."""
    from pathlib import Path

    from tippingpoint.model import AttackConfig, TLSOptions
    from tippingpoint.pacer import parse_duration
    from tippingpoint.server.config import default_processes
    from tippingpoint.targets import Target, parse_header, parse_targets

    head = tuple(parse_header(h) for h in opts["headers"])
    body = Path(opts["body_file"]).read_bytes() if opts["body_file"] else b""
    targets_file = opts["targets_file"]
    if targets_file:
        text = sys.stdin.read() if targets_file == "-" else Path(targets_file).read_text()
        base = None if targets_file == "-" else Path(targets_file).parent
        targets = parse_targets(text, opts["targets_format"], head, body, base)
    elif opts["url"]:
        targets = [Target(opts["method"].upper(), opts["url"], head, body)]
    else:
        raise ValueError(
            "give a URL or --targets FILE, e.g. "
            "tippingpoint attack http://127.0.0.1:8282/ --rate 100 --duration 10s"
        )
    if opts["max_connections"] is not None and opts["max_connections"] < 1:
        raise ValueError("--max-connections must be >= 1")
    config = AttackConfig(
        targets=tuple(targets),
        max_connections=opts["max_connections"],
        keepalive=not opts["no_keepalive"],
        laddrs=_parse_laddrs(opts["laddr"]),
        timeout=parse_duration(opts["timeout"]),
        tls=TLSOptions(
            insecure=opts["insecure"],
            cacert=opts["cacert"],
            cert=opts["cert"],
            key=opts["key"],
            server_name=opts["sni"],
            resume=opts["tls_resume"],
        ),
        processes=opts["processes"] if opts["processes"] is not None else default_processes(),
        **plan,
    )
    if config.timeout <= 0:
        raise ValueError("--timeout must be > 0")
    return config


def _warn_timeout(config: Any, command: str) -> None:
    from tippingpoint.pacer import format_duration

    worst = config.longest_server_delay()
    if worst > config.timeout:
        click.echo(
            f"tippingpoint {command}: warning: the sleep/times headers let the server take up "
            f"to {format_duration(worst)}, beyond --timeout {format_duration(config.timeout)}: "
            "those requests will fail as timeouts (raise --timeout)",
            err=True,
        )


@cli.command()
@_request_options
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
def attack(**opts: Any) -> None:
    """Send load at a constant rate (or a plan, or closed-loop) and stream the results.

    Latency counts from each request's intended send time. The result stream (JSON
    lines, HDR histograms per second and per process) goes to --output; read it with
    `tippingpoint report`.
    """
    from tippingpoint.engine.runner import run_attack
    from tippingpoint.pacer import parse_duration, parse_pace, parse_rate
    from tippingpoint.targets import TargetError

    try:
        duration, requests = opts["duration"], opts["requests"]
        config = _attack_config(
            opts,
            rate=parse_rate(opts["rate"]),
            pace=tuple(parse_pace(opts["pace"])) if opts["pace"] else (),
            duration=parse_duration(duration) if duration else None,
            requests=requests,
            connections=opts["connections"],
            records=opts["records"],
        )
        if not config.closed and not config.pace and duration is None and requests is None:
            raise ValueError("give --duration or --requests (or --pace) so the attack ends")
        if config.closed and duration is None and requests is None:
            raise ValueError("the closed model (--rate 0) needs --duration or --requests")
        if config.closed and config.connections < 1:
            raise ValueError("--connections must be >= 1")
        if not config.closed:
            config.pacer()
    except (ValueError, TargetError, click.BadParameter) as e:
        _fail(str(e))
        return
    except OSError as e:
        _fail(f"cannot read {e.filename}: {e.strerror}")
        return
    _warn_timeout(config, "attack")
    output = opts["output"]
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


_SWEEP_CONNECTIONS = 128


@cli.command()
@_request_options
@click.option(
    "--start",
    "start_rate",
    default="1000",
    show_default=True,
    help="First rate (requests per second).",
)
@click.option(
    "--step",
    "step_spec",
    default="x1.5",
    show_default=True,
    help="Next rate: x1.5 (multiply) or +1000 (add).",
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
def sweep(**opts: Any) -> None:
    """Step the rate up until latency tips over; print the table and the tipping point."""
    import json
    from pathlib import Path

    from tippingpoint.knee import KneeRule, parse_slo
    from tippingpoint.monitor import Monitor
    from tippingpoint.pacer import parse_duration, parse_rate
    from tippingpoint.proxy.stats import show_info
    from tippingpoint.sweep import SweepConfig, parse_step, render_table, run_sweep
    from tippingpoint.targets import TargetError

    try:
        if opts["max_connections"] is None:
            # A fixed pool, as wrk2 holds: the sweep measures the server's request capacity;
            # past it, hits queue and the latency shows the knee. Without a cap, a slowing
            # server makes the client open connection after connection, and the run measures
            # the proxy's connection handling instead.
            opts["max_connections"] = _SWEEP_CONNECTIONS
        config = _attack_config(opts, rate=1.0, duration=1.0)
        step_duration = parse_duration(opts["step_duration"])
        if step_duration < 1:
            raise ValueError("--step-duration must be >= 1s")
        sweep_config = SweepConfig(
            attack=config,
            start=parse_rate(opts["start_rate"]),
            step=parse_step(opts["step_spec"]),
            step_duration=step_duration,
            max_steps=opts["max_steps"],
            refine=opts["refine"],
            max_rate=parse_rate(opts["max_rate"]) if opts["max_rate"] else None,
            rule=KneeRule(
                factor=opts["factor"],
                floor_ms=opts["floor_ms"],
                slo=parse_slo(opts["slo"]) if opts["slo"] else None,
            ),
            out=Path(opts["out_dir"]) if opts["out_dir"] else None,
        )
        if sweep_config.start <= 0 or sweep_config.max_steps < 1:
            raise ValueError("--start must be > 0 and --max-steps >= 1")
        roles = _parse_roles(opts["roles"])
    except (ValueError, TargetError, click.BadParameter) as e:
        _fail(str(e))
        return
    except OSError as e:
        _fail(f"cannot read {e.filename}: {e.strerror}")
        return
    _warn_timeout(config, "sweep")
    sockets = None
    if opts["proxy_dir"]:
        directory = Path(opts["proxy_dir"])
        found = sorted(directory.glob("haproxy-*.sock"))
        try:
            roles["proxy"] = [int(show_info(p)["Pid"]) for p in found]
        except (OSError, KeyError, ValueError):
            _fail(f"cannot read HAProxy's sockets in {directory}: is `tippingpoint proxy` running?")
            return

        def sockets() -> list[Path]:
            return sorted(directory.glob("haproxy-*.sock"))

    monitor = Monitor(roles, sockets)

    def on_row(row: Any) -> None:
        if not opts["as_json"]:
            click.echo(
                f"step {row.offered:,.0f}/s: achieved {row.achieved:,.0f}/s, "
                f"p99 {row.p99_ms:.2f} ms, success {row.success * 100:.2f}%"
                + (f" - {row.verdict}" if row.verdict else ""),
                err=True,
            )

    result = run_sweep(sweep_config, monitor, on_row)
    if opts["as_json"]:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(render_table(result), nl=False)


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


def _parse_addr(spec: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{spec!r}: use HOST:PORT or PORT")
    return (host.strip("[]") if sep and host else default_host), int(port)


def _parse_backends(spec: str) -> tuple[tuple[str, int], ...]:
    """``127.0.0.1:8282-8291,127.0.0.2:9000`` -> addresses."""
    from tippingpoint.server.config import parse_ports

    out: list[tuple[str, int]] = []
    for part in spec.split(","):
        host, sep, ports = part.strip().rpartition(":")
        try:
            out.extend((host if sep else "127.0.0.1", p) for p in parse_ports(ports))
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return tuple(out)


@cli.group(invoke_without_command=True)
@click.option(
    "--backends",
    default="127.0.0.1:8282-8291",
    show_default=True,
    help="Backend servers: HOST:PORTS, comma-separated (the serve ports).",
)
@click.option(
    "--http",
    "http_addr",
    default="127.0.0.1:8080",
    show_default=True,
    help="HTTP frontend address ('' for none).",
)
@click.option(
    "--https",
    "https_addr",
    default="127.0.0.1:8443",
    show_default=True,
    help="TLS frontend address ('' for none).",
)
@click.option(
    "--cert-type",
    type=click.Choice(["ecdsa", "rsa"]),
    default="ecdsa",
    show_default=True,
    help="Generated certificate: ECDSA P-256 or RSA 2048.",
)
@click.option("--threads", type=int, default=1, show_default=True, help="nbthread.")
@click.option("--cpus", default=None, help="cpu-map threads onto these CPUs, e.g. 1 or 0-1.")
@click.option(
    "--instances",
    type=int,
    default=1,
    show_default=True,
    help="HAProxy processes sharing the ports (SO_REUSEPORT).",
)
@click.option(
    "--maxconn", type=int, default=None, help="Per instance  [default: from the open-file limit]."
)
@click.option(
    "--timeout",
    "timeout_s",
    default="2h",
    show_default=True,
    help="Client and server timeouts (long, as the article needed).",
)
@click.option("--rate-limit", type=int, default=None, help="rate-limit sessions N.")
@click.option(
    "--log",
    "log_requests",
    is_flag=True,
    help="Log requests with the article's timer fields (instance log files).",
)
@click.option("--no-checks", is_flag=True, help="No health checks on the backends.")
@click.option(
    "--dir",
    "workdir",
    default="./tippingpoint-proxy",
    show_default=True,
    help="Where configs, certificate, sockets and logs go.",
)
@click.option("--haproxy-bin", default=None, help="HAProxy executable  [default: haproxy].")
@click.option("--print-config", is_flag=True, help="Print the configuration and exit.")
@click.pass_context
def proxy(
    ctx: click.Context,
    backends: str,
    http_addr: str,
    https_addr: str,
    cert_type: str,
    threads: int,
    cpus: str | None,
    instances: int,
    maxconn: int | None,
    timeout_s: str,
    rate_limit: int | None,
    log_requests: bool,
    no_checks: bool,
    workdir: str,
    haproxy_bin: str | None,
    print_config: bool,
) -> None:
    """Run real HAProxy in front of the backends (HTTP and TLS) until Ctrl-C.

    SIGHUP reloads: new HAProxy processes take the ports over, the old ones finish
    their connections."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"workdir": workdir}
        return
    import resource
    import signal as sig
    from pathlib import Path

    from tippingpoint.certs import make_certificate
    from tippingpoint.pacer import parse_duration
    from tippingpoint.proxy.config import ProxyConfig, derive_maxconn, render
    from tippingpoint.proxy.instance import HAProxyError, ProxyFleet, find_haproxy
    from tippingpoint.server.config import parse_cpus

    try:
        directory = Path(workdir).resolve()
        https = _parse_addr(https_addr) if https_addr else None
        bundle = None
        if https is not None:
            bundle = make_certificate(directory / "tls", cert_type)[2]
        timeout = parse_duration(timeout_s)
        config = ProxyConfig(
            backends=_parse_backends(backends),
            http=_parse_addr(http_addr) if http_addr else None,
            https=https,
            cert_bundle=bundle,
            maxconn=maxconn or derive_maxconn(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            nbthread=threads,
            cpus=parse_cpus(cpus) if cpus else (),
            timeout_client_s=timeout,
            timeout_server_s=timeout,
            rate_limit_sessions=rate_limit,
            log=log_requests,
            health_checks=not no_checks,
            stats_socket=directory / "haproxy-0.sock",
        )
        if print_config:
            click.echo(render(config), nl=False)
            return
        fleet = ProxyFleet(find_haproxy(haproxy_bin), directory, config, instances)
        fleet.start()
    except (ValueError, click.BadParameter, HAProxyError) as e:
        _fail(str(e))
        return
    click.echo(
        f"tippingpoint proxy: {instances} HAProxy instance(s) (pids {fleet.pids}) on "
        + ", ".join(
            f"{scheme}://{h}:{p}"
            for scheme, a in (("http", config.http), ("https", config.https))
            if a
            for h, p in [a]
        )
        + f" -> {len(config.backends)} backends; config and sockets in {directory}",
        err=True,
    )
    stop = False
    reload = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop, reload
        if signum == sig.SIGHUP:
            reload = True
        else:
            stop = True

    for s in (sig.SIGINT, sig.SIGTERM, sig.SIGHUP):
        sig.signal(s, on_signal)
    try:
        while not stop and fleet.pids:
            time.sleep(0.2)
            if reload:  # SIGHUP: new processes take the ports over, the old ones finish
                reload = False
                try:
                    fleet.reload()
                    click.echo(f"tippingpoint proxy: reloaded, pids {fleet.pids}", err=True)
                except HAProxyError as e:
                    click.echo(f"tippingpoint proxy: reload failed: {e}", err=True)
    finally:
        fleet.stop()
    if not stop:
        _fail("HAProxy exited; see the logs in " + str(directory), 1)


@proxy.command("stats")
@click.option("--dir", "workdir", default=None, help="The proxy's directory.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of tables.")
@click.pass_context
def proxy_stats(ctx: click.Context, workdir: str | None, as_json: bool) -> None:
    """Show HAProxy's counters (show info, show stat) from every instance's socket."""
    import json
    from pathlib import Path

    from tippingpoint.proxy.stats import show_info, show_stat, sum_info

    directory = Path(workdir or ctx.obj["workdir"])
    sockets = sorted(directory.glob("haproxy-*.sock"))
    if not sockets:
        _fail(f"no HAProxy stats sockets in {directory}: start `tippingpoint proxy` first")
        return
    try:
        infos = [show_info(path) for path in sockets]
        stats = [show_stat(path) for path in sockets]
    except OSError as e:
        _fail(f"cannot read the stats sockets in {directory}: {e} (is the proxy running?)")
        return
    total = sum_info(infos)
    if as_json:
        click.echo(json.dumps({"total": total, "instances": infos, "stat": stats}))
        return
    click.echo(
        "instances "
        + str(len(infos))
        + ": "
        + ", ".join(f"pid {i.get('Pid')} idle {i.get('Idle_pct')}%" for i in infos)
    )
    for name in ("CurrConns", "ConnRate", "SessRate", "SslRate", "CurrSslConns", "CumReq"):
        click.echo(f"{name:14s} {total[name]:,.0f}")
    click.echo(
        f"{'name':24s} {'status':8s} {'scur':>7s} {'stot':>9s} {'req_tot':>9s} "
        f"{'bin':>12s} {'bout':>12s}"
    )
    rows: dict[tuple[str, str], dict[str, float]] = {}
    status: dict[tuple[str, str], str] = {}
    for instance in stats:
        for row in instance:
            key = (row["pxname"], row["svname"])
            acc = rows.setdefault(key, {})
            for field in ("scur", "stot", "req_tot", "bin", "bout"):
                acc[field] = acc.get(field, 0) + float(row.get(field) or 0)
            status[key] = row.get("status", "")
    for (px, sv), acc in rows.items():
        click.echo(
            f"{px + '/' + sv:24s} {status[(px, sv)]:8s} {acc['scur']:7,.0f} "
            f"{acc['stot']:9,.0f} {acc['req_tot']:9,.0f} {acc['bin']:12,.0f} "
            f"{acc['bout']:12,.0f}"
        )


_CSV_COLUMNS = (
    "t",
    "tcp_established",
    "tcp_inuse",
    "tcp_orphan",
    "tcp_tw",
    "tcp_mem",
    "segments_in_per_s",
    "segments_out_per_s",
    "lo_rx_packets_per_s",
    "lo_tx_packets_per_s",
    "lo_rx_bytes_per_s",
    "lo_tx_bytes_per_s",
    "mem_used_kib",
    "mem_available_kib",
    "slab_kib",
)


@cli.command()
@click.option(
    "--role",
    "roles",
    multiple=True,
    help="NAME=PID[,PID...]: CPU % and RSS of these processes and their children.",
)
@click.option("--haproxy-dir", default=None, help="Read HAProxy counters from the sockets here.")
@click.option("--interval", default="1s", show_default=True, help="Sampling interval.")
@click.option("--duration", default=None, help="Stop after this long  [default: Ctrl-C].")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "csv"]),
    default="json",
    show_default=True,
    help="Output format.",
)
@click.option("-o", "--output", default="-", show_default=True, help="Output file.")
def watch(
    roles: tuple[str, ...],
    haproxy_dir: str | None,
    interval: str,
    duration: str | None,
    fmt: str,
    output: str,
) -> None:
    """Sample the machine as the article's Ganglia did: TCP established, sockets, packets,
    memory, CPU per role, HAProxy counters."""
    import json
    import signal as sig
    from pathlib import Path

    from tippingpoint.monitor import Monitor, loopback
    from tippingpoint.pacer import parse_duration

    try:
        period = parse_duration(interval)
        limit = parse_duration(duration) if duration else None
        if period <= 0:
            raise ValueError("--interval must be > 0")
        role_map = _parse_roles(roles)
    except ValueError as e:
        _fail(str(e))
        return
    sockets = None
    if haproxy_dir:
        directory = Path(haproxy_dir)

        def sockets() -> list[Path]:
            return sorted(directory.glob("haproxy-*.sock"))

    monitor = Monitor(role_map, sockets)
    out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    for s in (sig.SIGINT, sig.SIGTERM):
        sig.signal(s, on_signal)
    if fmt == "csv":
        names = [f"{r}_{k}" for r in role_map for k in ("cpu_pct", "rss_kib")]
        out.write(",".join([*_CSV_COLUMNS, *names, "haproxy_curr_conns"]) + "\n")
    start = time.monotonic()
    next_at = start + period
    try:
        while not stop and (limit is None or time.monotonic() - start < limit):
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += period
            if stop or (limit is not None and time.monotonic() - start > limit + 0.01):
                break
            record = monitor.sample()
            for event in record.get("events", []):
                click.echo(f"tippingpoint watch: {event}", err=True)
            if fmt == "json":
                out.write(json.dumps(record) + "\n")
            else:
                flat = {**record, **{f"lo_{k}": v for k, v in loopback(record).items()}}
                row = [str(flat.get(c, "")) for c in _CSV_COLUMNS]
                for r in role_map:
                    row += [str(record["roles"][r]["cpu_pct"]), str(record["roles"][r]["rss_kib"])]
                row.append(str(record.get("haproxy", {}).get("CurrConns", "")))
                out.write(",".join(row) + "\n")
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()


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
@click.option("--quick", is_flag=True, help="Short steps: about a minute.")
@click.option("--haproxy-bin", default=None, help="HAProxy executable  [default: haproxy].")
@click.option("--print-scenario", is_flag=True, help="Print the default scenario and exit.")
def bench(
    scenario: str | None, out_dir: str, quick: bool, haproxy_bin: str | None, print_scenario: bool
) -> None:
    """Build the bench (backends, HAProxy, monitor), run the scenario, write the report.

    Without SCENARIO: the article's three questions on this machine (HTTP and TLS
    tipping points, long requests building up connections) in a few minutes.
    """
    from pathlib import Path

    from tippingpoint.bench import DEFAULT_SCENARIO, ScenarioError, parse_scenario, run_bench
    from tippingpoint.bench import quick as make_quick
    from tippingpoint.proxy.instance import HAProxyError

    if print_scenario:
        click.echo(DEFAULT_SCENARIO, nl=False)
        return
    try:
        text = Path(scenario).read_text() if scenario else DEFAULT_SCENARIO
        parsed = parse_scenario(text)
    except (ScenarioError, OSError) as e:
        _fail(f"scenario {scenario or '(default)'}: {e}")
        return
    if quick:
        parsed = make_quick(parsed)
    out = Path(out_dir)
    try:
        data = run_bench(parsed, out, lambda line: click.echo(line, err=True), haproxy_bin)
    except ScenarioError as e:
        _fail(f"scenario {scenario or '(default)'}: {e}")
        return
    except (HAProxyError, RuntimeError, OSError) as e:
        _fail(f"bench: {e}", 1)
        return
    except KeyboardInterrupt:
        _fail("bench: interrupted; everything started has been stopped", 130)
        return
    click.echo(f"\n{data['title']}")
    for name, result in data["summary"]:
        click.echo(f"  {name:40s} {result}")
    click.echo(f"\nreport: {(out / 'index.html').resolve()}")


@cli.command()
@click.option(
    "--connections",
    type=int,
    default=100_000,
    show_default=True,
    help="Concurrent connections you plan to hold.",
)
@click.option(
    "--sleep",
    "sleep_ms",
    type=int,
    default=None,
    help="The longest `sleep` header you will send (ms): checks the timeouts.",
)
@click.option("--timeout", default="30s", show_default=True, help="The client's timeout.")
@click.option("--apply", "apply_", is_flag=True, help="Set the sysctls it can (root, Linux).")
def doctor(connections: int, sleep_ms: int | None, timeout: str, apply_: bool) -> None:
    """Check the limits the article tripped over, with the exact fix for each."""
    from tippingpoint.doctor import apply_fixes, diagnose
    from tippingpoint.pacer import parse_duration

    if connections < 1:
        _fail("--connections must be >= 1")
        return
    try:
        checks, _plan = diagnose(connections, sleep_ms, parse_duration(timeout))
    except ValueError as e:
        _fail(str(e))
        return
    for check in checks:
        mark = "ok  " if check.ok else "FIX "
        click.echo(f"{mark} {check.name}: {check.value}")
        if check.advice:
            click.echo(f"       {check.advice}")
    if apply_:
        for line in apply_fixes(checks):
            click.echo(line)


@cli.command()
@click.argument("url")
@click.option("--connections", type=int, required=True, help="Connections to hold in all.")
@click.option(
    "--connect-rate", default="1000", show_default=True, help="New connections per second."
)
@click.option(
    "--duration",
    default="60s",
    show_default=True,
    help="How long to hold, from the start (opening included).",
)
@click.option(
    "--request-every", default=None, help="Each connection sends a request this often, e.g. 30s."
)
@click.option(
    "--ports",
    "dest_ports",
    default=None,
    help="Spread over these destination ports, e.g. 8282-8291.",
)
@click.option("--laddr", default=None, help="Source addresses, e.g. 127.0.0.2-127.0.0.40.")
@click.option(
    "--processes",
    type=int,
    default=1,
    show_default=True,
    help="At least this many (more when the descriptor limit needs them).",
)
@click.option("--insecure", is_flag=True, help="TLS: do not verify the server certificate.")
@click.option("--cacert", type=click.Path(dir_okay=False), help="TLS: CA bundle.")
@click.option("-o", "--output", default=None, help="Write the records (JSON lines) here.")
def hold(
    url: str,
    connections: int,
    connect_rate: str,
    duration: str,
    request_every: str | None,
    dest_ports: str | None,
    laddr: str | None,
    processes: int,
    insecure: bool,
    cacert: str | None,
    output: str | None,
) -> None:
    """Open connections at a rate and hold them (idle or with a periodic request)."""
    import functools

    from tippingpoint.engine.hold import HoldConfig, HoldTally, hold_child, plan_hold
    from tippingpoint.engine.runner import run_children
    from tippingpoint.limits import memory_available, port_range, raise_nofile
    from tippingpoint.pacer import parse_duration, parse_rate
    from tippingpoint.plan import plan_connections
    from tippingpoint.server.config import parse_ports
    from tippingpoint.targets import Target, TargetError

    try:
        if connections < 1:
            raise ValueError("--connections must be >= 1")
        config = HoldConfig(
            target=Target("GET", url),
            connections=connections,
            connect_rate=parse_rate(connect_rate),
            duration=parse_duration(duration),
            request_every=parse_duration(request_every) if request_every else None,
            ports=parse_ports(dest_ports) if dest_ports else (),
            laddrs=_parse_laddrs(laddr),
            insecure=insecure,
            cacert=cacert,
            processes=max(1, processes),
        )
        if config.connect_rate <= 0:
            raise ValueError("--connect-rate must be > 0")
    except (ValueError, TargetError, click.BadParameter) as e:
        _fail(str(e))
        return
    soft, _ = raise_nofile()
    origin = config.target.origin
    plan = plan_connections(
        connections,
        soft,
        port_range(),
        len(config.ports) or 1,
        memory_available(),
        both_ends_local=origin.host in ("localhost", "::1") or origin.host.startswith("127."),
        tls=origin.tls,
        source_addresses=len(config.laddrs) or 1,
    )
    if not plan.feasible:
        _fail("this plan cannot fit: " + "; ".join(plan.problems))
        return
    for warning in plan.warnings:
        click.echo(f"tippingpoint: warning: {warning}", err=True)
    shards = plan_hold(config, soft, time.monotonic_ns() + 500_000_000)
    click.echo(
        f"tippingpoint hold: {connections:,} connections in {len(shards)} process(es) "
        f"(open-file limit {soft:,}), {len(config.laddrs) or 1} source address(es), "
        f"{len(config.ports) or 1} destination port(s), {config.connect_rate:,.0f}/s",
        err=True,
    )
    out = open(output, "wb") if output else None  # noqa: SIM115
    tally = HoldTally(connections, len(shards))

    def on_record(record: dict[str, Any]) -> None:
        line = tally.add(record)
        if line is not None:
            click.echo("  " + line, err=True)

    def on_line(line: bytes) -> None:
        if out is not None:
            out.write(line)
            out.flush()

    try:
        code = run_children(
            [functools.partial(hold_child, config, shard) for shard in shards],
            on_line,
            on_record,
            "hold",
        )
    finally:
        if out:
            out.close()
    click.echo(tally.summary())
    if tally.lost:
        click.echo(
            "tippingpoint: lost connections were closed by the other end: look at its idle "
            "timeouts (HAProxy: timeout http-request, timeout client; serve: --idle-timeout)",
            err=True,
        )
    sys.exit(code)


def main() -> None:
    cli()
