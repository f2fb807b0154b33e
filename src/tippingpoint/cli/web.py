"""``--web``: the live page and ``/metrics`` of ``bench``, ``sweep``, ``hold``, ``attack``
and ``watch`` while they run (see :mod:`tippingpoint.web`)."""

from __future__ import annotations

import ipaddress
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from tippingpoint.cli.base import fail

if TYPE_CHECKING:
    from tippingpoint.web.feed import LiveFeed

__all__ = ["live_page", "parse_address", "web_options"]

F = TypeVar("F", bound=Callable[..., Any])


def web_options(f: F) -> F:
    f = click.option(
        "--web-linger",
        default="1m",
        show_default=True,
        help="How long the page stays up once the run ended (Ctrl-C leaves at once).",
    )(f)
    f = click.option(
        "--web-token",
        default=None,
        envvar="TIPPINGPOINT_WEB_TOKEN",
        help="Ask for this token on every request of the page and /metrics "
        "[default: none on loopback, a new one with --web-public].",
    )(f)
    f = click.option(
        "--web-public",
        is_flag=True,
        help="Let --web bind an address other than loopback (every request then needs the token).",
    )(f)
    f = click.option(
        "--web",
        default=None,
        is_flag=False,
        flag_value="127.0.0.1:0",
        metavar="[ADDR]",
        help="Serve a live page and Prometheus /metrics while this runs, on ADDR "
        "([HOST:]PORT) [default: 127.0.0.1, a free port]; the URL is the first line.",
    )(f)
    return f


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` (ValueError)."""
    host, port = "127.0.0.1", "0"
    if text.isdigit():
        port = text
    elif text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "0"
    elif text.count(":") == 1:
        host, port = text.split(":")
        host = host or "127.0.0.1"
    else:
        host = text
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web {text}: not an address: give [HOST:]PORT, e.g. 127.0.0.1:8089")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(
                f"--web {text}: not an address: give [HOST:]PORT, e.g. 127.0.0.1:8089 (to "
                "name a scenario or URL, put it before --web, or write --web=ADDR)"
            ) from None
    return host, int(port)


def _loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


@contextmanager
def live_page(
    opts: dict[str, Any],
    title: str,
    command: str,
    report_dir: Path | None = None,
    begin: tuple[str, str, str] | None = None,
    machine: bool = False,
) -> Iterator[LiveFeed | None]:
    """Serve the page while the block runs (nothing without ``--web``). ``begin``: the
    one experiment of a command that is not the bench (name, shape, description).
    ``machine``: sample the machine once a second for the page, the command's own
    processes as the role "client" (for a command with no monitor of its own)."""
    if not opts.get("web"):
        yield None
        return
    from tippingpoint import tap
    from tippingpoint.pacer import parse_duration
    from tippingpoint.web.feed import LiveFeed

    try:
        from tippingpoint.web.server import WebServer
    except ImportError as e:
        fail(f"--web needs {e.name}: pip install 'tippingpoint[web]'")

    try:
        host, port = parse_address(opts["web"])
        linger = parse_duration(opts["web_linger"])
    except ValueError as e:
        fail(str(e))
    if not _loopback(host) and not opts.get("web_public"):
        fail(
            f"--web {opts['web']}: not a loopback address: the page would be open to the "
            "network; add --web-public to serve it there (every request then needs a token)"
        )
    token = opts.get("web_token") or (secrets.token_urlsafe(18) if opts["web_public"] else None)
    feed = LiveFeed(title, command, socket.gethostname())
    server = WebServer(feed, host, port, token, report_dir)
    try:
        url = server.start()
    except OSError as e:
        fail(f"--web {opts['web']}: cannot listen there: {e.strerror or e}")
    base = url.split("?")[0]
    click.echo(f"tippingpoint: live page {url} (Prometheus: {base}metrics)", err=True)
    if begin is not None:
        feed.begin(*begin, [])
    how = "finished"
    try:
        with tap.attach(feed), _machine(machine):
            yield feed
    except KeyboardInterrupt:
        how = "interrupted"
        raise
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        how = "finished" if code == 0 else "interrupted" if code == 130 else f"failed ({e.code})"
        raise
    except BaseException as e:
        how = f"failed: {e}"
        raise
    finally:
        index = report_dir / "index.html" if report_dir is not None else None
        feed.end(how, str(index) if index is not None and index.exists() else "")
        _linger(base, linger if feed.how != "interrupted" else 0.0)
        server.stop()


@contextmanager
def _machine(wanted: bool) -> Iterator[None]:
    if not wanted:
        yield
        return
    import os

    from tippingpoint.monitor import Monitor, sampling

    with sampling(Monitor({"client": [os.getpid()]}), []):
        yield


def _linger(url: str, seconds: float) -> None:
    if seconds <= 0:
        return
    click.echo(
        f"tippingpoint: the run ended; the live page {url} stays up {seconds:g} s more "
        "(Ctrl-C to leave now)",
        err=True,
    )
    # Ctrl-C ends the wait, whatever the command made of SIGINT before.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, before)
