"""`tippingpoint bench`: the article's whole experiment on this machine, one command.

Builds the bench (``serve`` backends, HAProxy with HTTP and TLS frontends, the
monitor), runs the scenario's experiments (sweeps to the tipping point, and constant
attacks such as the long-`sleep` run that builds up established connections), writes
the report directory and always cleans up: every process started is stopped, on
success, error or Ctrl-C.
"""

from __future__ import annotations

import functools
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tippingpoint.certs import make_certificate
from tippingpoint.engine.hold import HoldConfig, HoldTally, hold_child, plan_hold
from tippingpoint.engine.runner import run_attack, run_children
from tippingpoint.knee import KneeRule, parse_slo
from tippingpoint.limits import file_max, memory_available, port_range, raise_nofile
from tippingpoint.model import AttackConfig, TLSOptions
from tippingpoint.monitor import Monitor, loopback, sampling
from tippingpoint.pacer import parse_duration, parse_rate
from tippingpoint.plan import ConnectionPlan, loopback_sources, plan_connections
from tippingpoint.proxy.config import ProxyConfig, derive_maxconn, render
from tippingpoint.proxy.instance import ProxyFleet, find_haproxy
from tippingpoint.report.html import render_html
from tippingpoint.report.merge import read_records, summarize
from tippingpoint.report.text import render_text
from tippingpoint.server.config import parse_cpus, parse_ports
from tippingpoint.stats import Histogram
from tippingpoint.sweep import SweepConfig, parse_step, render_table, run_sweep
from tippingpoint.targets import Target, parse_header

__all__ = [
    "DEFAULT_SCENARIO",
    "Experiment",
    "Scenario",
    "parse_scenario",
    "plan_holds",
    "run_bench",
]

DEFAULT_SCENARIO = """\
# The article's three questions on a 2-core machine, in a few minutes.
[bench]
title = "HAProxy tipping points: HTTP, TLS, and long requests"

[backends]            # tippingpoint serve
ports = "8282-8285"
processes = 1
cpus = "1"

[proxy]               # HAProxy
threads = 1
instances = 1
cpus = "1"
cert = "ecdsa"        # or "rsa": the key type decides most of TLS's CPU cost
http = "127.0.0.1:18080"
https = "127.0.0.1:18443"

[client]              # tippingpoint attack
processes = 1
cpus = "0"

[[experiment]]
name = "HTTP, keep-alive"
kind = "sweep"
frontend = "http"
start = 3000
step = "x1.5"
step_duration = "5s"
max_steps = 10       # 9 steps reach ~34,000/s; the 10th refines the knee
refine = 1

[[experiment]]         # as wrk -c: the most HAProxy carries, for comparison
name = "HTTP, closed loop"
kind = "sweep"
frontend = "http"
closed = true         # step the connections (8, 16, 32...), not the rate
start = 8
step = "x2"
step_duration = "3s"
max_steps = 8
refine = 1

[[experiment]]
name = "TLS, keep-alive"
kind = "sweep"
frontend = "https"
start = 3000
step = "x1.5"
step_duration = "5s"
max_steps = 10       # 9 steps reach ~34,000/s; the 10th refines the knee
refine = 1

[[experiment]]
name = "TLS, new connection per request"
kind = "sweep"
frontend = "https"
keepalive = false
start = 200
step = "x1.5"
step_duration = "5s"
max_steps = 9
refine = 1

[[experiment]]
name = "Long requests (sleep: 5000)"
kind = "attack"
frontend = "http"
rate = 800
duration = "20s"
headers = ["sleep: 5000"]
timeout = "30s"

[[experiment]]        # the bench adds the processes and HAProxy instances this needs
name = "Held connections, a request every 5 s"
kind = "hold"
frontend = "http"
connections = 20000
connect_rate = 5000
duration = "15s"
request_every = "5s"
"""


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the key."""


def _connections(value: Any, key: str) -> float:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ScenarioError(f"{key}: a closed sweep starts at a whole number of connections >= 1")
    return float(value)


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    kind: str
    frontend: str = "http"
    keepalive: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    method: str = "GET"
    path: str = "/ping"
    timeout: float = 30.0
    tls_resume: bool = False
    # sweep
    closed: bool = False
    """Step the connections of a closed loop (``start``/``step`` count connections)."""
    start: float = 1000.0
    step: tuple[str, float] = ("x", 1.5)
    step_duration: float = 5.0
    max_steps: int = 8
    refine: int = 1
    slo: tuple[float, float] | None = None
    # attack
    rate: float = 100.0
    duration: float = 10.0
    max_connections: int | None = None
    """Sweeps hold a fixed pool of 128 by default (see `tippingpoint sweep`)."""
    # hold
    connections: int = 10_000
    connect_rate: float = 2_000.0
    request_every: float | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    backend_ports: tuple[int, ...]
    backend_processes: int
    backend_cpus: str | None
    proxy_threads: int
    proxy_instances: int
    proxy_cpus: tuple[int, ...]
    cert: str
    http: tuple[str, int]
    https: tuple[str, int]
    rate_limit: int | None
    client_processes: int
    client_cpus: tuple[int, ...]
    experiments: tuple[Experiment, ...] = field(default=())
    http_reuse: str | None = None
    open_files: int | None = None
    """Soft open-file limit for everything the bench starts (at most the hard limit):
    rehearses a plan for a machine with a lower limit, at a small scale."""


def _addr(text: str, key: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ScenarioError(f"{key}: use HOST:PORT, got {text!r}")
    return host, int(port)


def parse_scenario(text: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"not valid TOML: {e}") from None
    bench, backends = data.get("bench", {}), data.get("backends", {})
    proxy, client = data.get("proxy", {}), data.get("client", {})
    experiments = []
    try:
        for i, raw in enumerate(data.get("experiment", [])):
            key = f"experiment[{i}]"
            kind = raw.get("kind", "sweep")
            if kind not in ("sweep", "attack", "hold"):
                raise ScenarioError(f"{key}.kind: use sweep, attack or hold, got {kind!r}")
            connections = int(raw.get("connections", 10_000))
            if connections < 1:
                raise ScenarioError(f"{key}.connections: must be >= 1")
            every = raw.get("request_every")
            if raw.get("frontend", "http") not in ("http", "https"):
                raise ScenarioError(f"{key}.frontend: use http or https")
            slo = raw.get("slo")
            body_file = raw.get("body_file")
            closed = bool(raw.get("closed", False))
            if closed and kind != "sweep":
                raise ScenarioError(f"{key}.closed: only a sweep can be closed")
            experiments.append(
                Experiment(
                    name=str(raw.get("name", f"experiment {i + 1}")),
                    kind=kind,
                    frontend=raw.get("frontend", "http"),
                    keepalive=bool(raw.get("keepalive", True)),
                    headers=tuple(parse_header(h) for h in raw.get("headers", [])),
                    body=Path(body_file).read_bytes() if body_file else b"",
                    method=str(raw.get("method", "POST" if body_file else "GET")).upper(),
                    path=str(raw.get("path", "/ping")),
                    timeout=parse_duration(str(raw.get("timeout", "30s"))),
                    tls_resume=bool(raw.get("tls_resume", False)),
                    closed=closed,
                    start=(
                        _connections(raw.get("start", 1), f"{key}.start")
                        if closed
                        else parse_rate(str(raw.get("start", 1000)))
                    ),
                    step=parse_step(str(raw.get("step", "x2" if closed else "x1.5"))),
                    step_duration=parse_duration(str(raw.get("step_duration", "5s"))),
                    max_steps=int(raw.get("max_steps", 8)),
                    refine=int(raw.get("refine", 1)),
                    slo=parse_slo(slo) if slo else None,
                    rate=parse_rate(str(raw.get("rate", 100))),
                    duration=parse_duration(str(raw.get("duration", "10s"))),
                    max_connections=raw.get("max_connections", 128 if kind == "sweep" else None),
                    connections=connections,
                    connect_rate=parse_rate(str(raw.get("connect_rate", 2000))),
                    request_every=parse_duration(str(every)) if every else None,
                )
            )
        if not experiments:
            raise ScenarioError("no [[experiment]] tables: add at least one")
        if proxy.get("http_reuse") not in (None, "never", "safe", "aggressive", "always"):
            raise ScenarioError("proxy.http_reuse: use never, safe, aggressive or always")
        return Scenario(
            title=str(bench.get("title", "tippingpoint bench")),
            backend_ports=parse_ports(str(backends.get("ports", "8282-8285"))),
            backend_processes=int(backends.get("processes", 1)),
            backend_cpus=backends.get("cpus"),
            proxy_threads=int(proxy.get("threads", 1)),
            proxy_instances=int(proxy.get("instances", 1)),
            proxy_cpus=parse_cpus(str(proxy["cpus"])) if proxy.get("cpus") is not None else (),
            cert=str(proxy.get("cert", "ecdsa")),
            http=_addr(str(proxy.get("http", "127.0.0.1:18080")), "proxy.http"),
            https=_addr(str(proxy.get("https", "127.0.0.1:18443")), "proxy.https"),
            rate_limit=proxy.get("rate_limit"),
            http_reuse=proxy.get("http_reuse"),
            client_processes=int(client.get("processes", 1)),
            client_cpus=parse_cpus(str(client["cpus"])) if client.get("cpus") is not None else (),
            experiments=tuple(experiments),
            open_files=int(bench["open_files"]) if "open_files" in bench else None,
        )
    except ScenarioError:
        raise
    except (ValueError, OSError, TypeError) as e:
        raise ScenarioError(str(e)) from None


def quick(scenario: Scenario) -> Scenario:
    """About a minute: short steps, fewer of them, short attacks."""
    return replace(
        scenario,
        experiments=tuple(
            replace(
                e,
                # A closed loop has no schedule to settle into: a second a step is enough.
                step_duration=min(e.step_duration, 1.0 if e.closed else 2.0),
                max_steps=min(e.max_steps, 6),
                refine=min(e.refine, 1),
                duration=min(e.duration, 8.0),
                connections=min(e.connections, 2_000),
            )
            for e in scenario.experiments
        ),
    )


def plan_holds(
    scenario: Scenario,
    fd_limit: int,
    ports: tuple[int, int],
    memory: int | None,
) -> dict[int, ConnectionPlan]:
    """The plan of every hold experiment (client processes, source addresses, backend
    processes, HAProxy instances), made before anything starts: one that cannot fit is
    refused with its numbers."""
    plans = {}
    for index, exp in enumerate(scenario.experiments):
        if exp.kind != "hold":
            continue
        ramp = exp.connections / exp.connect_rate
        if ramp >= exp.duration:
            raise ScenarioError(
                f"{exp.name}: {exp.connections:,} connections at {exp.connect_rate:,.0f}/s take "
                f"{ramp:.0f} s to open, and duration is {exp.duration:g} s: a longer duration "
                "or a higher connect_rate"
            )
        plan = plan_connections(
            exp.connections,
            fd_limit,
            ports,
            1,
            memory,
            proxied=True,
            tls=exp.frontend == "https",
            idle=exp.request_every is None,
            backend_ports=len(scenario.backend_ports),
            file_max=file_max(),
        )
        if not plan.feasible:
            raise ScenarioError(f"{exp.name}: this plan cannot fit: " + "; ".join(plan.problems))
        plans[index] = plan
    return plans


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the backends did not start on {host}:{port}") from None
            time.sleep(0.05)


def _timeline(stream: bytes) -> dict[str, list[float]]:
    t: list[float] = []
    p50: list[float] = []
    p99: list[float] = []
    rate: list[float] = []
    by_t: dict[float, list[dict[str, Any]]] = {}
    for line in stream.splitlines():
        record = json.loads(line)
        if record.get("type") == "interval":
            by_t.setdefault(float(record["t"]), []).append(record)
    for start in sorted(by_t):
        h = Histogram()
        done = 0
        dur = 1.0
        for record in by_t[start]:
            h.add(Histogram.decode(record["hist"]["latency"]))
            done += record["done"]
            dur = float(record["dur"]) or 1.0
        a, b = h.percentiles([50, 99])
        t.append(start)
        p50.append(a / 1000)
        p99.append(b / 1000)
        rate.append(done / dur)
    return {"t": t, "p50_ms": p50, "p99_ms": p99, "rate": rate}


def _monitor_series(samples: list[dict[str, Any]]) -> dict[str, Any]:
    roles: dict[str, dict[str, list[float]]] = {}
    for s in samples:
        for name, r in s.get("roles", {}).items():
            roles.setdefault(name, {"cpu_pct": [], "rss_mib": []})
            roles[name]["cpu_pct"].append(r["cpu_pct"])
            roles[name]["rss_mib"].append(round(r["rss_kib"] / 1024, 1))
    return {
        "t": [s["t"] for s in samples],
        "tcp_established": [s["tcp_established"] for s in samples],
        "mem_used_mib": [round(s["mem_used_kib"] / 1024, 1) for s in samples],
        "rx_packets": [loopback(s)["rx_packets_per_s"] for s in samples],
        "tx_packets": [loopback(s)["tx_packets_per_s"] for s in samples],
        "roles": roles,
    }


def _serve_cmd(ports: tuple[int, ...], processes: int) -> list[str]:
    """`tippingpoint serve` on ``ports`` (SO_REUSEPORT: more of them may join later)."""
    return [
        sys.executable,
        "-m",
        "tippingpoint",
        "serve",
        "--ports",
        ",".join(map(str, ports)),
        "--processes",
        str(processes),
    ]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run_hold(
    exp: Experiment,
    plan: ConnectionPlan,
    scenario: Scenario,
    url: str,
    cacert: str,
    proxy_config: ProxyConfig,
    binary: str,
    fd_limit: int,
    exp_dir: Path,
    monitor: Monitor,
    log: Callable[[str], None],
) -> HoldTally:
    """One hold experiment with the backends and HAProxy instances its plan needs: the
    bench's own, plus extra ones on the same ports (SO_REUSEPORT) for this experiment
    only, so that the sweeps keep the topology the scenario asked for."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    extra_serve = plan.server_processes - scenario.backend_processes
    extra_proxy = plan.proxy_instances - scenario.proxy_instances
    serve: subprocess.Popen[bytes] | None = None
    fleet: ProxyFleet | None = None
    stream = open(exp_dir / "hold.jsonl", "wb")  # noqa: SIM115
    serve_log = open(exp_dir / "serve.log", "wb")  # noqa: SIM115
    try:
        if extra_serve > 0:
            serve = subprocess.Popen(
                _serve_cmd(scenario.backend_ports, extra_serve),
                stdout=serve_log,
                stderr=subprocess.STDOUT,
            )
            monitor.add_role("backends (hold)", [serve.pid])
        if extra_proxy > 0:
            fleet = ProxyFleet(binary, exp_dir / "proxy", proxy_config, extra_proxy)
            fleet.start(timeout=60)
            monitor.add_role("proxy (hold)", fleet.pids)
        if extra_serve > 0 or extra_proxy > 0:
            log(
                f"  started {max(0, extra_serve)} more backend process(es) and "
                f"{max(0, extra_proxy)} more HAProxy instance(s) for this hold"
            )
        addresses = loopback_sources(plan.source_addresses)
        config = HoldConfig(
            target=Target(exp.method, url, exp.headers, exp.body),
            connections=exp.connections,
            connect_rate=exp.connect_rate,
            duration=exp.duration,
            request_every=exp.request_every,
            laddrs=addresses,
            timeout=exp.timeout,
            cacert=cacert,
            processes=scenario.client_processes,
        )
        shards = plan_hold(config, fd_limit, time.monotonic_ns() + 500_000_000)
        tally = HoldTally(exp.connections, len(shards))

        def on_record(record: dict[str, Any]) -> None:
            line = tally.add(record)
            if line is not None:
                log("  " + line)

        def on_line(line: bytes) -> None:
            stream.write(line)
            stream.flush()

        code = run_children(
            [functools.partial(hold_child, config, shard) for shard in shards],
            on_line,
            on_record,
            "hold",
        )
        if code != 0:
            log(f"  a hold process failed (exit {code}); see {exp_dir / 'hold.jsonl'}")
        log(tally.summary())
        return tally
    finally:
        stream.close()
        monitor.remove_role("proxy (hold)")
        monitor.remove_role("backends (hold)")
        if fleet is not None:
            fleet.stop(grace=1)
        if serve is not None:
            _stop(serve)
        serve_log.close()


def run_bench(
    scenario: Scenario,
    out: Path,
    log: Callable[[str], None],
    haproxy_bin: str | None = None,
) -> dict[str, Any]:
    """Run everything; write ``out``; return the summary. Cleans up whatever happens."""
    soft, hard = raise_nofile()
    if scenario.open_files is not None:
        if scenario.open_files < 256:
            raise ScenarioError("bench.open_files: at least 256")
        soft = min(scenario.open_files, hard)
    binary = find_haproxy(haproxy_bin)
    plans = plan_holds(scenario, soft, port_range(), memory_available())
    out.mkdir(parents=True, exist_ok=True)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for index, plan in plans.items():
        log(f"bench: plan for {scenario.experiments[index].name}: {plan.describe()}")
        for warning in plan.warnings:
            log(f"bench: warning: {warning}")
    serve_cmd = _serve_cmd(scenario.backend_ports, scenario.backend_processes)
    if scenario.backend_cpus:
        serve_cmd = ["taskset", "-c", scenario.backend_cpus, *serve_cmd]
    serve_log = open(out / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(serve_cmd, stdout=serve_log, stderr=subprocess.STDOUT)
    fleet: ProxyFleet | None = None
    samples: list[dict[str, Any]] = []
    experiments: list[dict[str, Any]] = []
    summary_rows: list[list[Any]] = []
    old_affinity = os.sched_getaffinity(0)
    try:
        _wait_port("127.0.0.1", scenario.backend_ports[-1], serve)
        bundle = make_certificate(out / "tls", scenario.cert)[2]
        proxy_config = ProxyConfig(
            backends=tuple(("127.0.0.1", p) for p in scenario.backend_ports),
            http=scenario.http,
            https=scenario.https,
            cert_bundle=bundle,
            maxconn=derive_maxconn(soft),
            nbthread=scenario.proxy_threads,
            cpus=scenario.proxy_cpus,
            rate_limit_sessions=scenario.rate_limit,
            http_reuse=scenario.http_reuse,
        )
        fleet = ProxyFleet(binary, out / "proxy", proxy_config, scenario.proxy_instances)
        fleet.start()
        (out / "haproxy.cfg").write_text(render(proxy_config))
        log(
            f"bench: backends pid {serve.pid} on ports "
            f"{scenario.backend_ports[0]}-{scenario.backend_ports[-1]}, HAProxy pids {fleet.pids}"
        )
        ours = {serve.pid: serve, **{p.pid: p for p in fleet.procs}}

        def exit_status(pid: int) -> str | None:
            proc = ours.get(pid)
            if proc is None or proc.poll() is None:
                return None
            code = proc.returncode
            if code < 0:
                return f"killed by signal {-code} ({signal.Signals(-code).name})"
            return f"exited with code {code}"

        monitor = Monitor(
            {"proxy": fleet.pids, "backends": [serve.pid]},
            lambda: fleet.sockets if fleet else [],
            exit_status,
            lambda event: log(f"bench: {event}"),
        )
        if scenario.client_cpus:
            os.sched_setaffinity(0, scenario.client_cpus)
        cacert = str(out / "tls" / "cert.pem")
        for index, exp in enumerate(scenario.experiments):
            host, port = scenario.http if exp.frontend == "http" else scenario.https
            url = f"{exp.frontend}://{host}:{port}{exp.path}"
            attack = AttackConfig(
                targets=(Target(exp.method, url, exp.headers, exp.body),),
                keepalive=exp.keepalive,
                timeout=exp.timeout,
                tls=TLSOptions(cacert=cacert, resume=exp.tls_resume),
                processes=scenario.client_processes,
                rate=exp.rate,
                duration=exp.duration,
                max_connections=exp.max_connections,
            )
            exp_dir = out / f"{index + 1:02d}-{exp.kind}"
            reuse = "keep-alive" if exp.keepalive else "a new connection per request"
            description = f"{exp.method} {url}, {reuse}" + "".join(
                f", {n}: {v}" for n, v in exp.headers
            )
            if exp.kind == "hold":
                description = (
                    f"{exp.connections:,} connections to {url} opened at "
                    f"{exp.connect_rate:,.0f}/s and held for {exp.duration:g} s from the start, "
                    + (
                        f"each asking {exp.path} every {exp.request_every:g} s"
                        if exp.request_every
                        else "idle"
                    )
                )
            log(f"bench: {exp.name} ({description})")
            if exp.kind == "hold":
                with sampling(monitor, samples, step=f"hold {index}"):
                    tally = _run_hold(
                        exp,
                        plans[index],
                        scenario,
                        url,
                        cacert,
                        proxy_config,
                        binary,
                        soft,
                        exp_dir,
                        monitor,
                        log,
                    )
                experiments.append(
                    {
                        "id": index,
                        "name": exp.name,
                        "kind": "hold",
                        "description": description,
                        "report": tally.summary(),
                        "hold": tally.timeline,
                    }
                )
                summary_rows.append([exp.name, tally.summary().splitlines()[0]])
                if tally.interrupted:
                    break
            elif exp.kind == "sweep":
                result = run_sweep(
                    SweepConfig(
                        attack=attack,
                        start=exp.start,
                        step=exp.step,
                        step_duration=exp.step_duration,
                        max_steps=exp.max_steps,
                        refine=exp.refine,
                        rule=KneeRule(slo=exp.slo),
                        out=exp_dir,
                        closed=exp.closed,
                    ),
                    monitor,
                    lambda row: log(
                        (
                            f"  {row.connections:9,d} connections"
                            if row.connections is not None
                            else f"  {row.offered:9,.0f}/s"
                        )
                        + f": achieved {row.achieved:,.0f}/s, p99 {row.p99_ms:.2f} ms"
                        + f"  {row.verdict}"
                    ),
                )
                samples.extend(result.monitor)
                table = render_table(result)
                log(table)
                experiments.append(
                    {
                        "id": index,
                        "name": exp.name,
                        "kind": "sweep",
                        "description": description,
                        "sweep": result.to_json(),
                    }
                )
                summary_rows.append(
                    [
                        exp.name,
                        (
                            f"tipping point {result.tipping_point:,.0f}/s"
                            + (
                                f" with {result.knee_connections:,d} connections"
                                if result.knee_connections is not None
                                else ""
                            )
                            if result.tipping_point
                            else "no tipping point"
                        )
                        + f" ({result.reason})",
                    ]
                )
                if (
                    any("interrupted" in r.verdict for r in result.rows)
                    or result.reason == "interrupted"
                ):
                    break
            else:
                lines: list[bytes] = []

                with sampling(monitor, samples, step=f"attack {index}"):
                    run_attack(attack, lines.append)
                stream = b"".join(lines)
                exp_dir.mkdir(parents=True, exist_ok=True)
                (exp_dir / "attack.jsonl").write_bytes(stream)
                summary = summarize(read_records([(exp.name, io.StringIO(stream.decode()))]))
                report = render_text(summary)
                log(report)
                peak = max(
                    (s["tcp_established"] for s in samples if s.get("step") == f"attack {index}"),
                    default=0,
                )
                experiments.append(
                    {
                        "id": index,
                        "name": exp.name,
                        "kind": "attack",
                        "description": description,
                        "report": report,
                        "timeline": _timeline(stream),
                    }
                )
                p99 = summary.hists["latency"].percentile(99) / 1000
                summary_rows.append(
                    [
                        exp.name,
                        f"{summary.requests:,} requests, success "
                        f"{summary.success_ratio * 100:.2f}%, p99 {p99:.1f} ms, "
                        f"peak TCP established {peak:,}",
                    ]
                )
                if summary.interrupted:
                    break
    finally:
        os.sched_setaffinity(0, old_affinity)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if fleet is not None:
            fleet.stop()
        _stop(serve)
        serve_log.close()
        (out / "monitor.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    data = {
        "title": scenario.title,
        "machine": f"{os.cpu_count()} CPUs, open-file limit {soft}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        "summary": summary_rows,
        "experiments": experiments,
        "monitor": _monitor_series(samples),
        "config": render(fleet.config) if fleet is not None else "",
    }
    (out / "summary.json").write_text(
        json.dumps({"summary": summary_rows, "experiments": experiments}, default=str)
    )
    (out / "index.html").write_text(render_html(data))
    return data
