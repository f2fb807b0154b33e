"""Parsers and option blocks shared by several commands."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from tippingpoint.cli.apps import commands_of
from tippingpoint.cli.base import fail


@contextmanager
def user_errors() -> Iterator[None]:
    """Bad options, unreadable files and an open-file limit too low to run on end the
    command with one line (exit 2)."""
    from tippingpoint.limits import check_nofile
    from tippingpoint.targets import TargetError

    try:
        check_nofile()
        yield
    except (ValueError, TargetError, click.BadParameter) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot read {e.filename}: {e.strerror}")


def parse_roles(specs: tuple[str, ...]) -> dict[str, list[int]]:
    """``("proxy=12,13", "backends=20")`` -> role -> PIDs (for the monitor)."""
    roles: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, pids = spec.partition("=")
        if not sep or not name or not all(p.strip().isdigit() for p in pids.split(",")):
            raise ValueError(f"bad --role {spec!r}: use NAME=PID[,PID...]")
        roles.setdefault(name, []).extend(int(p) for p in pids.split(","))
    return roles


def parse_laddrs(spec: str | None) -> tuple[str, ...]:
    """``127.0.0.2-127.0.0.40`` or ``127.0.0.2,127.0.0.3`` -> addresses."""
    from tippingpoint.plan import parse_addresses

    try:
        addresses = parse_addresses(spec)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    return addresses


def check_local(addresses: tuple[str, ...]) -> None:
    """Source addresses of a local run must be this machine's: bind to the first and the
    last once, port 0 (a cluster's workers have addresses of their own)."""
    import socket

    for address in dict.fromkeys(addresses[:1] + addresses[-1:]):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address, 0))
            except OSError as e:
                raise click.BadParameter(
                    f"{address} is not an address of this machine ({e.strerror}): give "
                    "addresses it has, e.g. 127.0.0.2-127.0.0.40 (all of 127.0.0.0/8 is "
                    "loopback on Linux)"
                ) from None


def request_options(f: Callable[..., None]) -> Callable[..., None]:
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
            "--tick",
            default=None,
            help="Wake the pacing loop at most once per TICK, e.g. 1ms, sending every hit "
            "due: less CPU per hit, up to TICK of lateness (in the latency)  [default: at "
            "each hit, a 100 us tick above 10,000/s per process].",
        ),
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
            help="Load processes (with --cluster: per worker)  [default: cores, with "
            "--cluster 1; more when connections need it].",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def mqtt_session_options(f: Callable[..., None]) -> Callable[..., None]:
    """How MQTT sessions connect: shared by attack and hold (mqtt:// and mqtts:// URLs)."""
    options = [
        click.option(
            "--mqtt-version", default="3.1.1", show_default=True, help="MQTT protocol: 3.1.1 or 5."
        ),
        click.option(
            "--keepalive",
            default="60s",
            show_default=True,
            help="MQTT keepalive; an idle session pings once per keepalive.",
        ),
        click.option(
            "--client-id",
            default="tp-%p-%i",
            show_default=True,
            help="MQTT client id pattern: %i session number, %p process.",
        ),
        click.option(
            "--clean-start/--no-clean-start",
            default=True,
            show_default=True,
            help="MQTT: start a new session (3.1.1: clean session).",
        ),
        click.option(
            "--ws",
            "mqtt_ws",
            is_flag=True,
            help="MQTT over WebSocket (subprotocol mqtt; with mqtts://, over wss).",
        ),
        click.option(
            "--ws-path",
            default="/mqtt",
            show_default=True,
            help="MQTT over WebSocket: the path of the upgrade.",
        ),
        click.option("--username", default=None, help="MQTT user name."),
        click.option("--password", default=None, help="MQTT password."),
        click.option(
            "--session-expiry",
            type=int,
            default=None,
            help="MQTT 5: seconds the broker keeps a session after it closes.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def attack_config(opts: dict[str, Any], **plan: Any) -> Any:
    """An AttackConfig from the shared request options and a load plan; raises ValueError,
    TargetError, click.BadParameter or OSError with a one-line message."""
    from pathlib import Path

    from tippingpoint.engine.tls import check_tls_files
    from tippingpoint.model import AttackConfig, TLSOptions
    from tippingpoint.pacer import parse_duration
    from tippingpoint.server.config import default_processes
    from tippingpoint.targets import Target, parse_header, parse_targets

    head = tuple(parse_header(h) for h in opts["headers"])
    body = Path(opts["body_file"]).read_bytes() if opts["body_file"] else b""
    targets_file = opts["targets_file"]
    if targets_file:
        try:
            text = sys.stdin.read() if targets_file == "-" else Path(targets_file).read_text()
        except UnicodeDecodeError:
            raise ValueError(
                f"--targets {targets_file}: not text (Vegeta's http or json targets format)"
            ) from None
        base = None if targets_file == "-" else Path(targets_file).parent
        name = "stdin" if targets_file == "-" else targets_file
        targets = parse_targets(text, opts["targets_format"], head, body, base, name)
    elif opts["url"]:
        targets = [Target(commands_of(opts["url"]).method(opts), opts["url"], head, body)]
    else:
        raise ValueError(
            "give a URL or --targets FILE, e.g. "
            "tippingpoint attack http://127.0.0.1:8282/ --rate 100 --duration 10s"
        )
    for target in targets:
        commands_of(target.url).check(opts)
    if opts["max_connections"] is not None and opts["max_connections"] < 1:
        raise ValueError("--max-connections must be >= 1")
    tick = parse_duration(opts["tick"]) if opts.get("tick") else None
    if tick is not None and not 10e-6 <= tick <= 0.1:
        raise ValueError(f"--tick {opts['tick']}: give 10us to 100ms, e.g. 1ms")
    if opts["processes"] is not None and opts["processes"] < 1:
        raise ValueError(f"--processes {opts['processes']}: give 1 or more (default: one per CPU)")
    tls = TLSOptions(
        insecure=opts["insecure"],
        cacert=opts["cacert"],
        cert=opts["cert"],
        key=opts["key"],
        server_name=opts["sni"],
        resume=opts["tls_resume"],
    )
    check_tls_files(tls)
    laddrs = parse_laddrs(opts["laddr"])
    if not opts.get("cluster"):
        check_local(laddrs)
    config = AttackConfig(
        targets=tuple(targets),
        max_connections=opts["max_connections"],
        keepalive=not opts["no_keepalive"],
        tick=tick,
        laddrs=laddrs,
        timeout=parse_duration(opts["timeout"]),
        tls=tls,
        processes=opts["processes"] if opts["processes"] is not None else default_processes(),
        **plan,
    )
    if config.timeout <= 0:
        raise ValueError("--timeout must be > 0")
    return config


def warn_timeout(config: Any, command: str) -> None:
    from tippingpoint.pacer import format_duration

    worst = config.longest_server_delay()
    if worst > config.timeout:
        click.echo(
            f"tippingpoint {command}: warning: the sleep/times headers let the server take up "
            f"to {format_duration(worst)}, beyond --timeout {format_duration(config.timeout)}: "
            "those requests will fail as timeouts (raise --timeout)",
            err=True,
        )


def mqtt_publish_options(f: Callable[..., None]) -> Callable[..., None]:
    """What an mqtt:// attack or sweep publishes and where its latency ends."""
    f = mqtt_session_options(f)
    f = click.option("--retain", is_flag=True, help="MQTT: publish retained messages.")(f)
    f = click.option(
        "--inflight",
        type=int,
        default=None,
        help="MQTT: unacknowledged QoS 1/2 messages per session  [default: 64; closed model: 1].",
    )(f)
    f = click.option(
        "--subscribers",
        type=int,
        default=0,
        show_default=True,
        help="MQTT, --until delivery: sessions subscribed to the published topics.",
    )(f)
    f = click.option(
        "--until",
        type=click.Choice(["ack", "echo", "delivery"]),
        default="ack",
        show_default=True,
        help="MQTT: where latency ends: the PUBACK/PUBCOMP (QoS 0: the write), the backend's "
        "echo (serve --mqtt, topic ping/...), or delivery to --subscribers through the broker.",
    )(f)
    f = click.option(
        "--payload-size", type=int, default=64, show_default=True, help="MQTT: bytes per message."
    )(f)
    f = click.option(
        "--qos", type=click.IntRange(0, 2), default=0, show_default=True, help="MQTT: publish QoS."
    )(f)
    return f
