"""Splitting an attack into shards, and naming errors: pure functions."""

from __future__ import annotations

import errno
import ssl

from tippingpoint.engine.client import classify_error
from tippingpoint.engine.runner import plan_shards
from tippingpoint.model import AttackConfig
from tippingpoint.targets import Target
from tippingpoint.wire.response import ResponseError

TARGET = (Target("GET", "http://127.0.0.1:8282/"),)


def test_processes_grow_when_connections_exceed_the_descriptor_limit() -> None:
    config = AttackConfig(TARGET, rate=100, duration=1, max_connections=50_000, processes=1)
    plan = plan_shards(config, fd_limit=20_000, start_ns=0, start_epoch=0.0)
    assert plan.processes == 3  # 19,936 connections fit in one process
    assert all(s.max_connections == 16_667 for s in plan.shards)
    assert [s.index for s in plan.shards] == [0, 1, 2] and {s.count for s in plan.shards} == {3}


def test_default_cap_is_the_descriptor_limit() -> None:
    plan = plan_shards(AttackConfig(TARGET, duration=1, processes=2), 1024, 0, 0.0)
    assert plan.processes == 2 and plan.shards[0].max_connections == 1024 - 64


def test_source_addresses_are_split_or_rotated() -> None:
    addrs = tuple(f"127.0.0.{i}" for i in range(2, 8))
    plan = plan_shards(AttackConfig(TARGET, duration=1, laddrs=addrs, processes=3), 20_000, 0, 0.0)
    assert [s.laddrs for s in plan.shards] == [addrs[0::3], addrs[1::3], addrs[2::3]]
    few = ("127.0.0.2", "127.0.0.3")
    plan = plan_shards(AttackConfig(TARGET, duration=1, laddrs=few, processes=3), 20_000, 0, 0.0)
    assert all(sorted(s.laddrs) == sorted(few) for s in plan.shards)
    assert plan.shards[1].laddrs[0] == "127.0.0.3"


def test_closed_model_connections_are_shared_out() -> None:
    config = AttackConfig(TARGET, rate=0, connections=10, duration=1, processes=3)
    plan = plan_shards(config, 20_000, 0, 0.0)
    assert [s.closed_connections for s in plan.shards] == [4, 3, 3]


def test_error_kinds() -> None:
    assert classify_error(ConnectionRefusedError(errno.ECONNREFUSED, "x"))[0] == "refused"
    assert classify_error(ConnectionResetError())[0] == "reset"
    assert classify_error(TimeoutError())[0] == "timeout"
    assert classify_error(ssl.SSLCertVerificationError("bad"))[0] == "tls"
    assert classify_error(ResponseError("junk"))[0] == "malformed"
    kind, message = classify_error(OSError(errno.EMFILE, "Too many open files"))
    assert kind == "fd-limit" and "--processes" in message
    kind, message = classify_error(OSError(errno.EADDRNOTAVAIL, "Cannot assign"))
    assert kind == "no-ports" and "--laddr" in message
    assert classify_error(OSError(errno.EHOSTUNREACH, "x"))[0] == "other"
