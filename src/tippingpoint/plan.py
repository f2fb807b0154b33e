"""How many processes, source addresses, ports and bytes N concurrent connections need.

Pure arithmetic, shared by ``doctor``, ``hold`` and ``bench``: a plan is computed from
the target count and the machine's limits before anything starts, and a plan that
cannot fit is refused with its numbers (not discovered at connection 28,233).

The limits, as the article met them:

- descriptors: a process holds ``fd_limit - 64`` sockets (20,000 hard here, and it
  cannot be raised without CAP_SYS_RESOURCE), so clients, backends and HAProxy
  instances are multiplied instead. A proxied connection costs HAProxy two
  descriptors (client side and server side).
- ports: one source address reaches one destination address and port through at
  most ``ip_local_port_range`` ports; connections to different destination ports may
  share a source port (the client binds with IP_BIND_ADDRESS_NO_PORT). HAProxy's
  own connections to the backends come from 127.0.0.1, so the backend ports must
  carry them.
- memory: kernel and user space per connection, measured on this machine (see
  docs/PERFORMANCE.md), plus a baseline per process.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Final

from tippingpoint.proxy.config import derive_maxconn
from tippingpoint.schemes import SCHEMES

__all__ = [
    "COSTS",
    "KERNEL_BYTES_PER_CONNECTION",
    "ConnectionPlan",
    "Costs",
    "costs_of",
    "loopback_sources",
    "parse_addresses",
    "plan_connections",
    "plan_with_sources",
    "processes_for",
    "proxy_instances_for",
]

KERNEL_BYTES_PER_CONNECTION: Final = 9_000
"""Kernel memory for one established loopback connection, both ends (2 TCP sockets,
socket inodes, files, dentries, epoll entries): 10.2 KB of slab measured at one million,
part of it reclaimable; all memory used grew by 10.6 KB per connection there, user
space included."""
CLIENT_BYTES: Final = 1_700
CLIENT_TLS_BYTES: Final = 34_500
"""A held TLS 1.3 connection in the client (OpenSSL objects over memory BIOs): 34.3 KB
measured at 300,000, process baselines included."""
SERVER_BYTES: Final = 1_500
PROXY_BYTES: Final = 1_200
"""HAProxy 2.6, an idle HTTP connection: 1,152 B measured at 500,000."""
PROXY_TLS_BYTES: Final = 17_700
"""HAProxy 2.6, an idle TLS connection (ECDSA P-256): 17.7 KB measured at 300,000."""
MQTT_CLIENT_BYTES: Final = 950
"""A held MQTT session in the client (``hold``): 752-934 B measured at 500,000 through
HAProxy, 662 B at 100,000 direct."""
MQTT_PROXY_EXTRA_BYTES: Final = 2_500
"""HAProxy 2.6, an MQTT session in TCP mode beyond an idle HTTP connection: both
sides' buffers stay allocated and the stick table keeps the client id; 3.7 KB per
session in all, measured at 485,026."""
PROCESS_BYTES: Final = 16 * 2**20
"""Baseline of one Python client or backend process, or one HAProxy instance."""
RESERVED_FDS: Final = 64
PORT_FILL: Final = 0.3
"""connect() looks for a free port from a random point through one parity of the range
(odd or even ports) first, and walks on while ports are taken: once that half fills up
every connect scans thousands of ports and the machine goes to system time (94 % seen
here with 500,000 connections over 9 source addresses, stuck near 55 % of each pair's
ports; a million over 50 pairs at 31 % ran freely). Pairs are planned 30 % full."""
PROXY_FILL: Final = 0.85
"""Instances share a port with SO_REUSEPORT, which deals connections out by a hash:
each instance is planned at 85 % of its maxconn so that none is full before the rest."""


WS_PROXY_EXTRA_BYTES: Final = 3_500
"""HAProxy 2.6, a WebSocket held through it beyond an idle HTTP connection: the tunnel's
backend side and both sides' buffers; 4.7 KB a connection in all, measured at 100,000
(examples/websocket.toml)."""


@dataclass(frozen=True, slots=True)
class Costs:
    """What one held connection of an application costs, beyond TCP and TLS (whose
    figures are the same for all): the planner's row of a scheme (``Scheme.app``)."""

    noun: str
    """What the connections are called in a plan's lines."""
    client_bytes: int
    """In the client, without TLS (TLS's own figure replaces it: it dwarfs the rest)."""
    client_connect_us: float
    """Client CPU per connection opened, without TLS."""
    proxy_extra_bytes: int
    """In HAProxy, beyond an idle HTTP connection."""
    backend_leg: bool
    """HAProxy holds a backend connection for it from the start: an MQTT session from its
    CONNECT, a WebSocket from its upgrade (the tunnel). An HTTP connection holds one only
    while a request is in flight or kept alive after one."""
    serve: str
    """The backend that answers it."""


COSTS: Final = {
    "http": Costs("connections", CLIENT_BYTES, 150.0, 0, False, "tippingpoint serve"),
    "mqtt": Costs(
        "MQTT sessions", MQTT_CLIENT_BYTES, 165.0, MQTT_PROXY_EXTRA_BYTES, True,
        "tippingpoint serve --mqtt",
    ),
    "messages": Costs(
        "WebSockets", CLIENT_BYTES, 150.0, WS_PROXY_EXTRA_BYTES, True,
        "tippingpoint serve --ws",
    ),
}  # fmt: skip
"""Client CPU per connection opened: a hold at 5,000/s pinned to one core (150 µs plain
TCP, 165 µs an MQTT session; a WebSocket's upgrade is counted as plain TCP's, not
measured apart). A WebSocket's client memory is an HTTP connection's (the same
connection class, its frame reader allocated on demand)."""


def costs_of(scheme: str) -> Costs:
    """The costs of a connection of ``scheme`` (http, https, mqtt, ...)."""
    return COSTS[SCHEMES[scheme].app]


MAX_PROCESSES: Final = 128
"""The most load processes planned on one machine (a million connections at the usual
limit of 20,000 open files take 51)."""


def processes_for(connections: int, fd_limit: int) -> int:
    """Processes that hold ``connections`` sockets within ``fd_limit`` descriptors each."""
    return math.ceil(connections / max(1, fd_limit - RESERVED_FDS))


def proxy_instances_for(connections: int, fd_limit: int) -> int:
    return max(1, math.ceil(connections / (PROXY_FILL * derive_maxconn(fd_limit))))


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    connections: int
    client_processes: int
    server_processes: int
    proxy_instances: int
    """0: the clients connect to the backends directly."""
    source_addresses: int
    """Needed to reach the destination ports with the ephemeral port range."""
    destination_ports: int
    backend_ports: int
    """Needed for HAProxy's side (0 when direct)."""
    ports_per_pair: int
    memory_bytes: int
    problems: tuple[str, ...] = ()
    """Why it cannot fit: refused."""
    warnings: tuple[str, ...] = ()
    """It fits, but slowly: connect() will search crowded port ranges."""

    @property
    def feasible(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        parts = [
            f"{self.connections:,} connections: {self.client_processes} client process(es)",
            f"{self.source_addresses} source address(es) x {self.destination_ports} "
            f"destination port(s) at {self.ports_per_pair:,} ports each, "
            f"{PORT_FILL * 100:.0f} % used",
            f"{self.server_processes} backend process(es)",
        ]
        if self.proxy_instances:
            parts.append(
                f"{self.proxy_instances} HAProxy instance(s) reaching "
                f"{self.backend_ports} backend port(s)"
            )
        parts.append(f"about {self.memory_bytes / 2**30:.1f} GiB of memory")
        return ", ".join(parts)


def plan_connections(
    connections: int,
    fd_limit: int,
    port_range: tuple[int, int],
    destination_ports: int = 1,
    memory_available: int | None = None,
    both_ends_local: bool = True,
    *,
    proxied: bool = False,
    scheme: str = "http",
    idle: bool = False,
    source_addresses: int | None = None,
    backend_ports: int | None = None,
    file_max: int | None = None,
) -> ConnectionPlan:
    """The processes, addresses, ports and memory for ``connections`` held at once.

    ``source_addresses`` and ``backend_ports``, when given, are what the user offers:
    too few is a problem with the number needed. Through a proxy (``proxied``), every
    connection may also hold one from HAProxy to a backend (a request in flight, or
    kept alive after one), so both legs are planned — unless the connections stay
    ``idle``: HAProxy connects to a backend only when a request comes. An MQTT session
    or a WebSocket is never idle in that sense (see :attr:`Costs.backend_leg`).
    ``file_max`` is the system-wide descriptor limit (``fs.file-max``)."""
    if connections < 1:
        raise ValueError("connections must be >= 1")
    per_process = max(1, fd_limit - RESERVED_FDS)
    ports = max(1, port_range[1] - port_range[0] + 1)
    clients = processes_for(connections, fd_limit)
    servers = clients
    instances = proxy_instances_for(connections, fd_limit) if proxied else 0
    dest_ports = max(1, destination_ports)
    usable = max(1, int(ports * PORT_FILL))
    addresses = math.ceil(connections / (usable * dest_ports))
    backends_needed = math.ceil(connections / usable) if proxied else 0
    legs = 2 if proxied and (costs_of(scheme).backend_leg or not idle) else 1
    per_connection = _bytes_per_connection(legs, scheme, both_ends_local, proxied)
    memory = connections * per_connection + (clients + servers + instances) * PROCESS_BYTES
    problems: list[str] = []
    warnings: list[str] = []
    if memory_available is not None and memory > 0.9 * memory_available:
        share = 2 / per_process + (1 / (PROXY_FILL * derive_maxconn(fd_limit)) if proxied else 0)
        fits = int(
            (0.9 * memory_available - 3 * PROCESS_BYTES) / (per_connection + share * PROCESS_BYTES)
        )
        problems.append(
            f"{connections:,} connections need about {memory / 2**30:.1f} GiB "
            f"({per_connection:,} B each with the kernel's, plus the processes), "
            f"{memory_available / 2**30:.1f} GiB are available: at most about "
            f"{max(0, fits):,} connections fit"
        )
    _address_problems(
        connections, ports, dest_ports, source_addresses, backend_ports if proxied else None,
        problems, warnings,
    )  # fmt: skip
    descriptors = connections * (2 * legs if both_ends_local else legs)
    problems += _machine_problems(connections, descriptors, file_max, clients, fd_limit)
    if addresses > 16_000_000:
        problems.append("more source addresses than 127.0.0.0/8 holds")
    return ConnectionPlan(
        connections=connections,
        client_processes=clients,
        server_processes=servers,
        proxy_instances=instances,
        source_addresses=max(1, addresses),
        destination_ports=dest_ports,
        backend_ports=max(backends_needed, 1) if proxied else 0,
        ports_per_pair=ports,
        memory_bytes=memory,
        problems=tuple(problems),
        warnings=tuple(warnings),
    )


def _machine_problems(
    connections: int, descriptors: int, file_max: int | None, clients: int, fd_limit: int
) -> list[str]:
    """What the machine's descriptor limits forbid: the system's, and processes enough."""
    problems = []
    if file_max is not None and descriptors > file_max:
        problems.append(
            f"{connections:,} connections need {descriptors:,} descriptors on this machine, "
            f"fs.file-max is {file_max:,}: sysctl -w fs.file-max={descriptors + 100_000}"
        )
    if clients > MAX_PROCESSES:
        problems.append(
            f"{connections:,} connections need {clients:,} client processes at an open-file "
            f"limit of {fd_limit:,}, more than the {MAX_PROCESSES} one machine runs: raise the "
            "limit (ulimit -n 20000), or spread them over machines (--cluster)"
        )
    return problems


def _bytes_per_connection(legs: int, scheme: str, both_ends_local: bool, proxied: bool) -> int:
    """Memory per connection held: the kernel's per socket leg, the client's, and the
    server's and HAProxy's where they run here."""
    costs = costs_of(scheme)
    tls = SCHEMES[scheme].tls
    per_connection = legs * KERNEL_BYTES_PER_CONNECTION
    per_connection += CLIENT_TLS_BYTES if tls else costs.client_bytes
    if both_ends_local:
        per_connection += SERVER_BYTES
    if proxied:
        per_connection += (PROXY_TLS_BYTES if tls else PROXY_BYTES) + costs.proxy_extra_bytes
    return per_connection


def _address_problems(
    connections: int,
    ports: int,
    dest_ports: int,
    source_addresses: int | None,
    backend_ports: int | None,
    problems: list[str],
    warnings: list[str],
) -> None:
    """Source addresses and backend ports the user offers, against those needed."""
    usable = max(1, int(ports * PORT_FILL))
    addresses = math.ceil(connections / (usable * dest_ports))
    backends_needed = math.ceil(connections / usable)
    # Fewer addresses or ports than planned: refused when the range cannot hold them
    # at all, a warning when connect() will have to search a crowded range.
    at_most = math.ceil(connections / (ports * dest_ports))
    if source_addresses is not None and source_addresses < addresses:
        text = (
            f"{connections:,} connections to {dest_ports} destination port(s) need "
            f"{at_most} source address(es) at {ports:,} ephemeral ports each, and "
            f"{addresses} to keep connect() fast ({usable:,} each); {source_addresses} given: "
            f"--laddr 127.0.0.2-{loopback_sources(addresses)[-1]}, more destination ports, "
            "or a wider "
            "net.ipv4.ip_local_port_range (tippingpoint doctor)"
        )
        (problems if source_addresses < at_most else warnings).append(text)
    if backend_ports is not None and backend_ports < backends_needed:
        text = (
            f"HAProxy's {connections:,} connections to the backends need "
            f"{math.ceil(connections / ports)} backend port(s) at {ports:,} ephemeral ports "
            f"each, and {backends_needed} to keep connect() fast; {backend_ports} given: more "
            "backend ports, or a wider net.ipv4.ip_local_port_range (tippingpoint doctor)"
        )
        (problems if backend_ports * ports < connections else warnings).append(text)


def parse_addresses(spec: str | None) -> tuple[str, ...]:
    """``127.0.0.2-127.0.0.40`` or ``127.0.0.2,127.0.0.3`` -> addresses (ValueError with
    what to write instead)."""
    if not spec:
        return ()
    out: list[str] = []
    for part in spec.split(","):
        low_s, sep, high_s = part.strip().partition("-")
        try:
            low = ipaddress.ip_address(low_s)
            high = ipaddress.ip_address(high_s) if sep else low
        except ValueError:
            raise ValueError(
                f"{part!r}: use addresses or ranges like 127.0.0.2-127.0.0.40"
            ) from None
        if int(high) < int(low) or int(high) - int(low) > 65535:
            raise ValueError(f"{part!r}: the range must go up, at most 65,536 addresses")
        out.extend(str(ipaddress.ip_address(i)) for i in range(int(low), int(high) + 1))
    return tuple(out)


def loopback_sources(count: int) -> tuple[str, ...]:
    """``count`` source addresses from 127.0.0.2 on: on Linux every 127.x.y.z is local."""
    if not 0 < count < 2**24 - 2:
        raise ValueError("between 1 and 16,777,213 loopback source addresses")
    return tuple(str(ipaddress.IPv4Address(0x7F000002 + i)) for i in range(count))


def plan_with_sources(
    connections: int,
    host: str,
    laddrs: tuple[str, ...],
    fd_limit: int,
    port_range: tuple[int, int],
    destination_ports: int = 1,
    memory_available: int | None = None,
    *,
    scheme: str = "http",
    file_max: int | None = None,
) -> tuple[ConnectionPlan, tuple[str, ...]]:
    """The plan of a hold against ``host``, and the source addresses to use: the user's
    ``laddrs``, or, on IPv4 loopback where every 127.x.y.z is ours, as many as the plan
    needs ("localhost" may resolve to ::1, where they would not bind)."""
    loopback = host in ("localhost", "::1") or host.startswith("127.")

    def make(addresses: int | None) -> ConnectionPlan:
        return plan_connections(
            connections,
            fd_limit,
            port_range,
            destination_ports,
            memory_available,
            both_ends_local=loopback,
            scheme=scheme,
            source_addresses=addresses,
            file_max=file_max,
        )

    plan = make(len(laddrs) or 1)
    if not laddrs and host.startswith("127.") and plan.source_addresses > 1:
        plan = make(None)
        laddrs = loopback_sources(plan.source_addresses)
    return plan, laddrs
