"""A fleet on paper: the machines N concurrent connections through HAProxy need.

``tippingpoint plan --connections 2000000 --tls`` answers the article's question before
anyone rents a machine: how many client machines of a given size, how many HAProxy
instances and how much memory for them, how many backend processes, and how many
source addresses per client machine. Every figure comes from a per-connection cost
measured on this project's bench (docs/PERFORMANCE.md), and every line says which
limit decided it, as ``doctor`` does.

Memory is counted per machine: the kernel's share of a connection is per socket (half
of the 9 KB measured for both ends of a loopback connection), so a client machine pays
one socket per connection, HAProxy one or two (with the backend leg), a backend one.
CPU is counted for the ramp: opening connections is what costs (a TLS handshake above
all), holding them idle costs next to nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from tippingpoint.plan import (
    CLIENT_TLS_BYTES,
    KERNEL_BYTES_PER_CONNECTION,
    PORT_FILL,
    PROCESS_BYTES,
    PROXY_BYTES,
    PROXY_FILL,
    PROXY_TLS_BYTES,
    RESERVED_FDS,
    SERVER_BYTES,
    Costs,
    costs_of,
)
from tippingpoint.proxy.config import derive_maxconn
from tippingpoint.schemes import SCHEMES

__all__ = ["FleetPlan", "Machine", "plan_fleet"]

KERNEL_BYTES_PER_SOCKET: Final = KERNEL_BYTES_PER_CONNECTION // 2
CLIENT_TLS_CONNECT_US: Final = 942.0
"""Client CPU per TLS connection opened: a TLS 1.3 handshake with the certificate
verified, ECDSA P-256 (benchmarks/tls_handshakes.py: 942 µs; RSA 2048: 924 µs). Without
TLS: the application's (``plan.COSTS``)."""
PROXY_CONNECT_US: Final = {"plain": 130.0, "ecdsa": 600.0, "rsa": 1_220.0}
"""HAProxy CPU per connection opened: 130 µs plain (an MQTT connect storm), a full TLS
handshake 594-614 µs with ECDSA P-256 and 1,219 µs with RSA 2048 (the tls-cost
experiment)."""
CPU_FILL: Final = 0.7
"""Cores planned 70 % busy during the ramp: the rest is the kernel's network work and
headroom, so that the schedule is kept."""
MEMORY_FILL: Final = 0.9


@dataclass(frozen=True, slots=True)
class Machine:
    cores: int
    memory: int
    """Bytes."""
    open_files: int
    """Per process (``ulimit -n``, systemd's LimitNOFILE)."""

    def describe(self) -> str:
        return f"{self.cores} cores, {self.memory / 2**30:.0f} GiB, {self.open_files:,} open files"


@dataclass
class FleetPlan:
    connections: int
    connect_rate: float
    scheme: str
    """What the connections are: http, https, mqtt, mqtts, ws or wss."""
    client_machines: int = 0
    client_processes: int = 0
    source_addresses: int = 0
    """Per client machine."""
    proxy_machines: int = 0
    proxy_instances: int = 0
    proxy_memory: int = 0
    client_memory: int = 0
    backend_memory: int = 0
    backend_processes: int = 0
    backend_machines: int = 0
    lines: list[str] = field(default_factory=list)

    def render(self) -> str:
        return "\n".join(self.lines) + "\n"


def _machines(need: float, per_machine: float) -> int:
    return max(1, math.ceil(need / per_machine)) if per_machine > 0 else 0


def plan_fleet(
    connections: int,
    client: Machine,
    proxy: Machine,
    backend: Machine,
    *,
    scheme: str = "http",
    key: str = "ecdsa",
    idle: bool = True,
    connect_rate: float = 1000.0,
    port_range: tuple[int, int] = (32768, 60999),
    destination_ports: int = 1,
) -> FleetPlan:
    """The machines and processes for ``connections`` of ``scheme`` held through
    HAProxy, opened at ``connect_rate`` per second, each line explained."""
    if connections < 1 or connect_rate <= 0:
        raise ValueError("--connections must be >= 1 and --connect-rate > 0")
    costs = costs_of(scheme)
    tls = SCHEMES[scheme].tls
    plan = FleetPlan(connections, connect_rate, scheme)
    out = plan.lines
    ramp = connections / connect_rate
    out.append(
        f"{connections:,} {'TLS ' if tls else ''}{costs.noun} through HAProxy, opened at "
        f"{connect_rate:,.0f}/s (a {ramp:,.0f} s ramp), then held"
        f"{' idle' if idle and not costs.backend_leg else ''}."
    )
    # A backend leg per connection: always where the application holds one
    # (Costs.backend_leg); for HTTP while a request is in flight or kept alive after one.
    legs = 2 if costs.backend_leg or not idle else 1

    usable, per_conn = _plan_clients(plan, client, costs, tls, port_range, destination_ports)
    _plan_proxy(plan, proxy, costs, tls, key, legs, per_conn)
    _plan_backends(plan, backend, costs, legs, usable)
    out += [
        "",
        "Costs measured on this project's bench (docs/PERFORMANCE.md); check them on your "
        "machines with a small tippingpoint bench first.",
    ]
    return plan


def _plan_clients(
    plan: FleetPlan,
    client: Machine,
    costs: Costs,
    tls: bool,
    port_range: tuple[int, int],
    destination_ports: int,
) -> tuple[int, int]:
    """The client machines, processes and source addresses (lines added to the plan);
    the ports usable per source address and the bytes per client connection."""
    out, connections, connect_rate = plan.lines, plan.connections, plan.connect_rate
    client_bytes = CLIENT_TLS_BYTES if tls else costs.client_bytes
    per_conn = client_bytes + KERNEL_BYTES_PER_SOCKET
    per_process = max(1, client.open_files - RESERVED_FDS)
    # Memory per machine: connections plus one process baseline per per_process of them.
    by_memory = int(MEMORY_FILL * client.memory / (per_conn + PROCESS_BYTES / per_process))
    connect_us = CLIENT_TLS_CONNECT_US if tls else costs.client_connect_us
    rate_per_machine = CPU_FILL * client.cores * 1e6 / connect_us
    machines_memory = _machines(connections, by_memory)
    machines_cpu = _machines(connect_rate, rate_per_machine)
    plan.client_machines = max(machines_memory, machines_cpu)
    share = math.ceil(connections / plan.client_machines)
    plan.client_processes = math.ceil(share / per_process)
    ports = port_range[1] - port_range[0] + 1
    usable = max(1, int(ports * PORT_FILL))
    plan.source_addresses = math.ceil(share / (usable * max(1, destination_ports)))
    decided = "memory" if machines_memory >= machines_cpu else "the ramp's CPU"
    out += [
        "",
        f"client machines: {plan.client_machines} of {client.describe()}, "
        f"{share:,} connections each (decided by {decided})",
        f"  memory: {per_conn:,} B per connection ({client_bytes:,} B in the client, "
        f"{KERNEL_BYTES_PER_SOCKET:,} B of kernel per socket): {by_memory:,} per machine "
        f"within {MEMORY_FILL * 100:.0f} % of its memory -> {machines_memory} machine(s)",
        f"  CPU: {connect_us:,.0f} µs per connection opened: {rate_per_machine:,.0f}/s per "
        f"machine at {CPU_FILL * 100:.0f} % of its cores -> {machines_cpu} machine(s) for "
        f"{connect_rate:,.0f}/s",
        f"  processes: {plan.client_processes} per machine ({per_process:,} sockets each "
        f"under {client.open_files:,} open files); tippingpoint hold --cluster places "
        "them, one Dask worker per machine",
        f"  source addresses: {plan.source_addresses} per machine: each reaches one "
        f"HAProxy address and port through {ports:,} ephemeral ports, planned "
        f"{PORT_FILL * 100:.0f} % full ({usable:,}), x {max(1, destination_ports)} "
        "destination port(s) (more HAProxy ports or addresses need fewer)",
    ]
    return usable, per_conn


def _plan_proxy(
    plan: FleetPlan, proxy: Machine, costs: Costs, tls: bool, key: str, legs: int, per_conn: int
) -> None:
    """HAProxy's instances and machines (lines added to the plan)."""
    out, connections, connect_rate = plan.lines, plan.connections, plan.connect_rate
    proxy_bytes = (PROXY_TLS_BYTES if tls else PROXY_BYTES) + costs.proxy_extra_bytes
    proxy_conn = proxy_bytes + legs * KERNEL_BYTES_PER_SOCKET
    maxconn = derive_maxconn(proxy.open_files)
    plan.proxy_instances = max(1, math.ceil(connections / (PROXY_FILL * maxconn)))
    plan.proxy_memory = connections * proxy_conn + plan.proxy_instances * PROCESS_BYTES
    plan.client_memory = connections * per_conn + plan.client_machines * (
        plan.client_processes * PROCESS_BYTES
    )
    proxy_key = key if tls else "plain"
    proxy_us = PROXY_CONNECT_US[proxy_key]
    cores_for_ramp = connect_rate * proxy_us / 1e6 / CPU_FILL
    machines_memory = _machines(plan.proxy_memory, MEMORY_FILL * proxy.memory)
    machines_cpu = _machines(cores_for_ramp, proxy.cores)
    plan.proxy_machines = max(machines_memory, machines_cpu)
    handshake = f"an {key.upper()} handshake" if tls else "a TCP accept and connect"
    out += [
        "",
        f"HAProxy: {plan.proxy_instances} instance(s) on {plan.proxy_machines} machine(s) of "
        f"{proxy.describe()}, {plan.proxy_memory / 2**30:,.1f} GiB in all",
        f"  instances: maxconn {maxconn:,} each (room for 2 descriptors per connection, "
        f"the client's and the backend's, under {proxy.open_files:,} open files), "
        f"planned {PROXY_FILL * 100:.0f} % full as "
        "SO_REUSEPORT deals connections by hash"
        + (
            "; raise the instances' open-file limit (LimitNOFILE) for fewer"
            if plan.proxy_instances > proxy.cores
            else ""
        ),
        f"  memory: {proxy_conn:,} B per connection ({proxy_bytes:,} B in HAProxy, "
        f"{legs} socket(s) of kernel) -> {machines_memory} machine(s)",
        f"  CPU: {proxy_us:,.0f} µs per connection opened ({handshake}): "
        f"{cores_for_ramp:,.1f} core(s) for {connect_rate:,.0f}/s -> {machines_cpu} "
        "machine(s)",
    ]


def _plan_backends(plan: FleetPlan, backend: Machine, costs: Costs, legs: int, usable: int) -> None:
    """The backends' processes and machines (lines added to the plan)."""
    out, connections = plan.lines, plan.connections
    backend_conns = connections if legs == 2 else 0
    if backend_conns:
        per_backend = max(1, backend.open_files - RESERVED_FDS)
        plan.backend_processes = math.ceil(backend_conns / per_backend)
        backend_conn = SERVER_BYTES + KERNEL_BYTES_PER_SOCKET
        memory = backend_conns * backend_conn + plan.backend_processes * PROCESS_BYTES
        plan.backend_machines = _machines(memory, MEMORY_FILL * backend.memory)
        plan.backend_memory = memory
        out += [
            "",
            f"backends: {plan.backend_processes} process(es) ({costs.serve}) on "
            f"{plan.backend_machines} machine(s) of "
            f"{backend.describe()}: {backend_conn:,} B per connection, "
            f"{memory / 2**30:,.1f} GiB; {per_backend:,} sockets per process",
            f"  HAProxy's {backend_conns:,} connections to them come from its own addresses: "
            f"{math.ceil(backend_conns / usable)} backend address:port pair(s) at "
            f"{usable:,} ports each",
        ]
    else:
        out += [
            "",
            "backends: idle connections open no backend connection (HAProxy connects when a "
            "request comes): size them for the request rate, not for the connections",
        ]
