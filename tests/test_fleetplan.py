"""`tippingpoint plan`: a fleet on paper, from the per-connection costs measured here."""

from __future__ import annotations

import pytest

from tests.conftest import run_tp
from tippingpoint.fleetplan import Machine, plan_fleet
from tippingpoint.plan import plan_connections

GiB = 2**30
BIG = Machine(cores=32, memory=64 * GiB, open_files=20_000)


def test_the_articles_two_million_tls_connections() -> None:
    plan = plan_fleet(2_000_000, BIG, BIG, BIG, scheme="https", connect_rate=10_000)
    # 39 KB per TLS connection in a client machine: 1.55 M fit in 90 % of 64 GiB.
    assert plan.client_machines == 2
    assert plan.client_processes == 51  # 1,000,000 / 19,936 sockets per process
    # HAProxy: 9,900 connections per instance at 85 %: 238 instances, 17.7 KB + a socket each.
    assert plan.proxy_instances == 238
    assert 44 * GiB < plan.proxy_memory < 46 * GiB
    assert plan.proxy_machines == 1
    assert plan.backend_processes == 0  # idle: no backend legs
    text = plan.render()
    assert "client machines: 2 of 32 cores, 64 GiB" in text and "decided by memory" in text
    assert "an ECDSA handshake" in text


def test_what_decides_each_figure_moves_it() -> None:
    base = plan_fleet(2_000_000, BIG, BIG, BIG, scheme="https", connect_rate=10_000)
    # Twice the memory: one client machine; a ramp 10x faster: the CPU decides.
    assert (
        plan_fleet(
            2_000_000, Machine(32, 128 * GiB, 20_000), BIG, BIG, scheme="https"
        ).client_machines
        == 1
    )
    fast = plan_fleet(2_000_000, BIG, BIG, BIG, scheme="https", connect_rate=100_000)
    assert fast.client_machines == 5 and "decided by the ramp's CPU" in fast.render()
    # RSA doubles HAProxy's handshake CPU: 100,000/s needs ~174 cores, 6 machines of 32.
    rsa = plan_fleet(2_000_000, BIG, BIG, BIG, scheme="https", key="rsa", connect_rate=100_000)
    assert rsa.proxy_machines == 6 and fast.proxy_machines == 3
    # A higher open-file limit: fewer, bigger HAProxy instances and client processes.
    wide = Machine(32, 64 * GiB, 1_000_000)
    roomy = plan_fleet(2_000_000, wide, wide, wide, scheme="https")
    assert roomy.proxy_instances == 5 and roomy.client_processes == 2
    # More destination ports: fewer source addresses per client machine.
    assert base.source_addresses == 119
    assert (
        plan_fleet(2_000_000, BIG, BIG, BIG, scheme="https", destination_ports=10).source_addresses
        == 12
    )


def test_on_one_machine_it_adds_up_to_the_local_plan() -> None:
    # The fleet's machines together hold what `hold`'s plan puts on one machine.
    fleet = plan_fleet(100_000, BIG, BIG, BIG, idle=False)
    local = plan_connections(100_000, 20_000, (32768, 60999), proxied=True)
    per_conn = (fleet.client_memory + fleet.proxy_memory + fleet.backend_memory) / 100_000
    assert per_conn == pytest.approx(local.memory_bytes / 100_000, rel=0.05)
    assert fleet.backend_processes == local.server_processes
    assert fleet.proxy_instances == local.proxy_instances


def test_the_command_explains_itself() -> None:
    result = run_tp(
        "plan", "--connections", "2000000", "--tls", "--client-cores", "32",
        "--client-memory", "64GiB", "--proxy-memory", "128GiB", "--connect-rate", "10000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    for part in ("client machines: 2 of 32 cores", "HAProxy: 238 instance(s)", "µs per connection"):
        assert part in out
    bad = run_tp("plan", "--connections", "10", "--client-memory", "lots")
    assert bad.returncode == 2 and b"bad size 'lots': use e.g. 64GiB" in bad.stderr
