"""Hold N concurrent connections, both ends on this machine: client -> `tippingpoint serve`,
or client -> HAProxy (several instances, HTTP or TLS) -> `serve`.

The plan comes from tippingpoint's own planner (`tippingpoint.plan`): client processes
for the 20,000-descriptor limit, source addresses for the ephemeral port range, HAProxy
instances (two descriptors per proxied connection, 85 % fill) and backend processes;
a plan that cannot fit is refused before anything starts. Reported: time to establish,
connections lost, memory (kernel slab, user space of every side), processes and
addresses used. Everything stops by itself after --hold seconds.

    python benchmarks/hold_connections.py --connections 1000000 --connect-rate 20000 --hold 60
    python benchmarks/hold_connections.py --connections 500000 --proxy --hold 60
    python benchmarks/hold_connections.py --connections 100000 --tls --hold 60
    python benchmarks/hold_connections.py --connections 200000 --mqtt --keepalive 30s --hold 120
    python benchmarks/hold_connections.py --connections 500000 --mqtt --proxy --keepalive 60s \
        --hold 120
    python benchmarks/hold_connections.py --connections 1000000 --connect-rate 10000 --hold 60 \
        --cluster-workers 4

With --cluster-workers, the hold runs on a local Dask cluster of that many workers
(`tippingpoint cluster local`, each worker with its own source addresses) through
`hold --cluster`; the client's memory is then that of the cluster's whole process tree.
"""

from __future__ import annotations

import argparse
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine, need, start, start_cluster, stop, stop_cluster, tippingpoint, wait_port
from tippingpoint.certs import make_certificate
from tippingpoint.limits import memory_available, port_range, raise_nofile
from tippingpoint.monitor import read_meminfo
from tippingpoint.plan import plan_connections
from tippingpoint.proxy.config import Frontend, ProxyConfig, derive_maxconn
from tippingpoint.proxy.instance import ProxyFleet, find_haproxy

FIRST_PORT = 8282
FRONTEND = 18080
TLS_FRONTEND = 18443


def tree_rss_kib(pids: list[int]) -> int:
    if not pids:
        return 0
    ids = ",".join(map(str, pids))
    out = subprocess.run(
        ["ps", "-o", "rss=", "--ppid", ids, "-p", ids], capture_output=True, text=True
    ).stdout
    return sum(int(x) for x in out.split())


def descendants_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (a cluster: nannies, workers, shards)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss // 1024
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--connect-rate", type=int, default=20_000)
    parser.add_argument("--hold", type=int, default=60)
    parser.add_argument("--request-every", default=None)
    parser.add_argument("--proxy", action="store_true", help="through HAProxy instances")
    parser.add_argument("--tls", action="store_true", help="TLS through HAProxy")
    parser.add_argument(
        "--mqtt",
        action="store_true",
        help="MQTT sessions against serve --mqtt (through HAProxy's MQTT frontends with "
        "--proxy or --tls)",
    )
    parser.add_argument("--keepalive", default="60s", help="MQTT keepalive of the sessions")
    parser.add_argument(
        "--duration",
        type=int,
        default=None,
        help="seconds of the whole hold, opening included [default: twice the planned ramp "
        "plus --hold]",
    )
    parser.add_argument(
        "--cluster-workers",
        type=int,
        default=0,
        help="hold through a local Dask cluster of this many workers (hold --cluster)",
    )
    parser.add_argument(
        "--http-reuse",
        default=None,
        help="HAProxy's http-reuse (always: sessions share backend connections)",
    )
    args = parser.parse_args()
    need("taskset")
    n = args.connections
    proxied = args.proxy or args.tls
    soft, _ = raise_nofile()
    ports = port_range()
    plan = plan_connections(
        n,
        soft,
        ports,
        1 if proxied else 10,
        memory_available(),
        proxied=proxied,
        tls=args.tls,
        idle=args.request_every is None,
        mqtt=args.mqtt,
    )
    # The backends listen on at least 10 ports, and on as many as HAProxy's own connections
    # to them need (they all come from 127.0.0.1).
    backend_ports = max(10, plan.backend_ports)
    ports_arg = f"{FIRST_PORT}-{FIRST_PORT + backend_ports - 1}"
    print(f"plan: {plan.describe()}", flush=True)
    if not plan.feasible:
        sys.exit("cannot fit: " + "; ".join(plan.problems))
    serve_processes = max(1, math.ceil(n / 19_000))
    addresses = plan.source_addresses + 1
    laddr = f"127.0.0.2-127.0.0.{1 + addresses}"
    # The ramp may take longer than N / rate when the machine is busy opening them: leave
    # it twice the time, so that the connections are held for at least --hold seconds.
    ramp = n / args.connect_rate
    duration = args.duration or int(2 * ramp + args.hold + 5)
    before = read_meminfo()
    fleet: ProxyFleet | None = None
    cluster: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        server = start(
            [
                *tippingpoint(),
                "serve",
                "--mqtt" if args.mqtt else "--ports",
                ports_arg,
                "--processes",
                str(serve_processes),
                "--metrics-port",
                "9299",
            ],
            Path(tmp) / "serve.log",
        )
        try:
            wait_port(9299, timeout=120)
            if proxied:
                bundle = make_certificate(Path(tmp) / "tls", "ecdsa")[2]
                servers = tuple(("127.0.0.1", FIRST_PORT + i) for i in range(backend_ports))
                # MQTT frontends in TCP mode (TLS ended by HAProxy), or HTTP's.
                plain, tls = ("mqtt", "mqtts") if args.mqtt else ("http", "https")
                frontends = (
                    Frontend(plain, ("127.0.0.1", FRONTEND)),
                    Frontend(tls, ("127.0.0.1", TLS_FRONTEND)),
                )
                fleet = ProxyFleet(
                    find_haproxy(),
                    Path(tmp) / "proxy",
                    ProxyConfig(
                        servers={frontends[0].app: servers},
                        frontends=frontends,
                        cert_bundle=bundle,
                        maxconn=derive_maxconn(soft),
                        health_checks=False,
                        http_reuse=args.http_reuse,
                    ),
                    plan.proxy_instances,
                )
                fleet.start(timeout=60)
                scheme = ("mqtts" if args.tls else "mqtt") if args.mqtt else None
                if scheme:
                    port = TLS_FRONTEND if args.tls else FRONTEND
                    url = f"{scheme}://127.0.0.1:{port}"
                else:
                    url = (
                        f"https://127.0.0.1:{TLS_FRONTEND}/"
                        if args.tls
                        else f"http://127.0.0.1:{FRONTEND}/"
                    )
                target = ["--cacert", str(Path(tmp) / "tls" / "cert.pem")] if args.tls else []
                if args.mqtt:
                    target += ["--keepalive", args.keepalive]
            else:
                url = "mqtt://127.0.0.1:8282" if args.mqtt else "http://127.0.0.1:8282/"
                target = ["--ports", ports_arg]
                if args.mqtt:
                    target += ["--keepalive", args.keepalive]
            if args.cluster_workers:
                # Each worker uses its own source addresses (127.0.K.2-254).
                cluster, address = start_cluster(
                    args.cluster_workers, log=Path(tmp) / "cluster.log"
                )
                sources = ["--cluster", address]
                laddr = "each worker's own (127.0.K.2-127.0.K.254)"
            else:
                sources = ["--laddr", laddr]
            cmd = [
                *tippingpoint(),
                "hold",
                url,
                "--connections",
                str(n),
                "--connect-rate",
                str(args.connect_rate),
                "--duration",
                f"{duration}s",
                *sources,
                *target,
            ]
            if args.request_every:
                cmd += ["--request-every", args.request_every]
            time.sleep(1)
            serve_base = tree_rss_kib([server.pid])
            t0 = time.monotonic()
            hold = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            peak_slab = peak_used = serve_rss = proxy_rss = hold_rss = 0
            proxy_base = tree_rss_kib(fleet.pids) if fleet else 0
            while hold.poll() is None:
                time.sleep(2)
                m = read_meminfo()
                peak_slab = max(peak_slab, m["Slab"] - before["Slab"])
                peak_used = max(
                    peak_used,
                    (m["MemTotal"] - m["MemAvailable"])
                    - (before["MemTotal"] - before["MemAvailable"]),
                )
                serve_rss = max(serve_rss, tree_rss_kib([server.pid]))
                hold_rss = max(
                    hold_rss,
                    descendants_rss_kib(cluster.pid)
                    if cluster is not None
                    else tree_rss_kib([hold.pid]),
                )
                if fleet is not None:
                    proxy_rss = max(proxy_rss, tree_rss_kib(fleet.pids))
            out, err = hold.communicate()
            elapsed = time.monotonic() - t0
        finally:
            if cluster is not None:
                stop_cluster(cluster, timeout=60)
            if fleet is not None:
                fleet.stop(grace=1)
            stop(server, timeout=60)
    print(f"machine: {machine()}")
    print(f"command: {' '.join(cmd[2:])}")
    said = ("tippingpoint hold: ", "clock offset", "connections in")
    print("\n".join(line for line in err.splitlines() if any(w in line for w in said)))
    print(out.strip())
    established = re.search(r"all established after (\d+) s", out)
    print(
        f"serve: {serve_processes} processes on {backend_ports} ports; "
        f"client source addresses {laddr}"
    )
    if fleet is not None:
        print(
            f"HAProxy: {plan.proxy_instances} instances, maxconn {derive_maxconn(soft):,} each; "
            f"RSS {proxy_base / 1024:.0f} MiB at start, peak {proxy_rss / 2**20:.2f} GiB "
            f"({(proxy_rss - proxy_base) * 1024 / n:,.0f} B per connection)"
        )
    print(
        f"peak memory used (all processes and kernel) +{peak_used / 2**20:.2f} GiB "
        f"({peak_used * 1024 / n:,.0f} B per connection); kernel slab "
        f"+{peak_slab / 2**20:.2f} GiB ({peak_slab * 1024 / n:,.0f} B per connection); "
        f"client RSS {hold_rss / 2**20:.2f} GiB ({hold_rss * 1024 / n:,.0f} B per connection); "
        f"serve RSS {serve_rss / 2**20:.2f} GiB "
        f"({serve_rss * 1024 / n:,.0f} B per connection incl. process baselines, "
        f"{(serve_rss - serve_base) * 1024 / n:,.0f} B of growth per connection)"
    )
    if established:
        held = duration - int(established.group(1))
        print(
            f"wall time {elapsed:.0f} s; all established after {established.group(1)} s, "
            f"then held {held} s"
        )
    else:
        print(f"wall time {elapsed:.0f} s")


if __name__ == "__main__":
    main()
