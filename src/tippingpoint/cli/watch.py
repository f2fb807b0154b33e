"""`tippingpoint watch`: the machine, sampled as the article's Ganglia did."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from tippingpoint import tap
from tippingpoint.cli.base import cli, fail
from tippingpoint.cli.fleet import cluster_options
from tippingpoint.cli.options import parse_roles
from tippingpoint.cli.web import live_page, web_options

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
@click.option(
    "--mosquitto",
    "mosquitto_ports",
    default=None,
    help="mosquitto ports on 127.0.0.1 whose $SYS counters to read (clients, messages, bytes).",
)
@click.option(
    "--serve-metrics",
    "serve_metrics",
    default=None,
    help="`serve --metrics-port` ports on 127.0.0.1: MQTT sessions and messages per second.",
)
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
@web_options
@cluster_options
def watch(
    roles: tuple[str, ...],
    haproxy_dir: str | None,
    mosquitto_ports: str | None,
    serve_metrics: str | None,
    interval: str,
    duration: str | None,
    fmt: str,
    output: str,
    cluster: str | None,
    **web: Any,
) -> None:
    """Sample the machine as the article's Ganglia did: TCP established, sockets, packets,
    memory, CPU per role, HAProxy counters, and the MQTT side (mosquitto's $SYS, serve's
    MQTT counters). With --cluster, every machine of a Dask cluster too, through one of
    its workers each: each record's ``hosts``, a CSV's HOST_* columns."""
    from pathlib import Path

    from tippingpoint.monitor import Monitor
    from tippingpoint.pacer import parse_duration
    from tippingpoint.server.config import parse_ports

    try:
        period = parse_duration(interval)
        limit = parse_duration(duration) if duration else None
        if period <= 0:
            raise ValueError("--interval must be > 0")
        role_map = parse_roles(roles)
        broker_ports = parse_ports(mosquitto_ports) if mosquitto_ports else ()
        metric_ports = parse_ports(serve_metrics) if serve_metrics else ()
        _check_watched(
            role_map, haproxy_dir, {"--mosquitto": broker_ports, "--serve-metrics": metric_ports}
        )
    except ValueError as e:
        fail(str(e))
        return
    sockets = None
    if haproxy_dir:
        from tippingpoint.proxy.stats import stats_sockets

        directory = Path(haproxy_dir)

        def sockets() -> list[Path]:
            return stats_sockets(directory)

    from tippingpoint.broker import SysWatcher

    watchers = [SysWatcher("127.0.0.1", port) for port in broker_ports]
    monitor = Monitor(
        role_map,
        sockets,
        brokers=watchers,
        serve_metrics=[("127.0.0.1", port) for port in metric_ports],
    )
    try:
        out = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        fail(f"cannot write -o {output}: {e.strerror}")
        return
    try:
        with _hosts(monitor, cluster, web) as hosts:
            if fmt == "csv":
                out.write(_csv_header(list(role_map), hosts))
            line = lambda r: _line(r, fmt, list(role_map), hosts)  # noqa: E731
            _watch(monitor, out, (period, limit), line, web)
    finally:
        for watcher in watchers:
            watcher.close()
        if out is not sys.stdout:
            out.close()


@contextmanager
def _hosts(monitor: Any, cluster: str | None, opts: dict[str, Any]) -> Iterator[list[str]]:
    """With --cluster, every machine of the cluster sampled through one of its workers
    into each record's ``hosts``: the hosts' names, for the block."""
    if not cluster:
        yield []
        return
    import uuid

    from tippingpoint.cli.fleet import fleet_of
    from tippingpoint.cluster import agent

    with fleet_of({**opts, "cluster": cluster}, "watch") as fleet:
        names: dict[str, str] = {}
        for worker in fleet.workers:  # one worker per machine
            if fleet.facts[worker].host not in names.values():
                names[worker] = fleet.facts[worker].host
        lab = "watch-" + uuid.uuid4().hex[:10]

        def sample() -> dict[str, Any]:
            answers = agent.sample_hosts(fleet.client, lab, names)
            return {names[w]: a for w, a in answers.items() if a and "error" not in a}

        monitor.hosts = sample
        try:
            yield sorted(names.values())
        finally:
            fleet.client.run(agent.lab_stop, lab, None, workers=list(names))


def _watch(
    monitor: Any, out: Any, times: tuple[float, float | None], line: Any, web: dict[str, Any]
) -> None:
    """Sample until Ctrl-C, SIGTERM or the duration; the live page too with --web."""
    import signal as sig

    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    for s in (sig.SIGINT, sig.SIGTERM):
        sig.signal(s, on_signal)
    what = ("watch", "watch", f"the machine, sampled every {times[0]:g} s")
    with live_page(web, "tippingpoint watch", "watch", None, what) as feed:
        _sample(monitor, out, times[0], times[1], lambda: stop, line)
        if stop and feed is not None:
            feed.end("interrupted")  # Ctrl-C is how a watch ends: no lingering


def _sample(
    monitor: Any,
    out: Any,
    period: float,
    limit: float | None,
    stopped: Any,
    line: Any,
) -> None:
    """A sample every ``period`` until ``limit`` or ``stopped()``, each written at once."""
    start = time.monotonic()
    next_at = start + period
    while not stopped() and (limit is None or time.monotonic() - start < limit):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_at += period
        if stopped() or (limit is not None and time.monotonic() - start > limit + 0.01):
            break
        record = monitor.sample()
        tap.sample(record)
        for event in record.get("events", []):
            click.echo(f"tippingpoint watch: {event}", err=True)
        out.write(line(record))
        out.flush()


def _check_watched(
    roles: dict[str, list[int]], haproxy_dir: str | None, ports: dict[str, tuple[int, ...]]
) -> None:
    """What the user asked to watch exists: else a sample would be silently empty."""
    import os
    import socket
    from pathlib import Path

    from tippingpoint.proxy.stats import stats_sockets

    for name, pids in roles.items():
        for pid in pids:
            if not os.path.exists(f"/proc/{pid}"):
                raise ValueError(f"--role {name}={pid}: no process {pid} runs here (pgrep NAME)")
    if haproxy_dir:
        stats_sockets(Path(haproxy_dir), "--haproxy-dir")
    for option, numbers in ports.items():
        for port in numbers:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            except OSError as e:
                raise ValueError(
                    f"{option} {port}: nothing answers on 127.0.0.1:{port} ({e.strerror or e})"
                ) from None


_HOST_COLUMNS = (
    "cpu_busy_pct",
    "load1",
    "tcp_established",
    "rx_packets_per_s",
    "tx_packets_per_s",
    "mem_used_kib",
)


def _csv_header(roles: list[str], hosts: list[str]) -> str:
    names = [f"{r}_{k}" for r in roles for k in ("cpu_pct", "rss_kib")]
    names += [f"{h}_{k}" for h in hosts for k in _HOST_COLUMNS]
    return ",".join([*_CSV_COLUMNS, *names, "haproxy_curr_conns"]) + "\n"


def _host_row(sample: dict[str, Any] | None) -> list[str]:
    """A host's :data:`_HOST_COLUMNS` (empty while it does not answer)."""
    if sample is None:
        return [""] * len(_HOST_COLUMNS)
    cores = [c["busy_pct"] for c in sample.get("cpus", {}).values()]
    ifaces = sample.get("interfaces", {}).values()
    values = [
        round(sum(cores) / len(cores), 1) if cores else "",
        sample.get("load1", ""),
        sample.get("tcp_established", ""),
        round(sum(i["rx_packets_per_s"] for i in ifaces)),
        round(sum(i["tx_packets_per_s"] for i in ifaces)),
        sample.get("mem_used_kib", ""),
    ]
    return [str(v) for v in values]


def _line(record: dict[str, Any], fmt: str, roles: list[str], hosts: list[str]) -> str:
    """One sample as a JSON line or a CSV row (the columns of :func:`_csv_header`)."""
    import json

    from tippingpoint.monitor import loopback

    if fmt == "json":
        return json.dumps(record) + "\n"
    flat = {**record, **{f"lo_{k}": v for k, v in loopback(record).items()}}
    row = [str(flat.get(c, "")) for c in _CSV_COLUMNS]
    for r in roles:
        row += [str(record["roles"][r]["cpu_pct"]), str(record["roles"][r]["rss_kib"])]
    for h in hosts:
        row += _host_row(record.get("hosts", {}).get(h))
    row.append(str(record.get("haproxy", {}).get("CurrConns", "")))
    return ",".join(row) + "\n"
