"""Runs an attack over several processes and collects their interval records.

The plan is split into shards (interleaved hits, a share of the connection cap and
of the source addresses); each shard runs in a forked process with its own event
loop and sends its records, one JSON line each, through a pipe. The parent passes
every line on as it arrives, so a crash loses at most the interval in progress.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from tippingpoint import __version__, interrupt

# Imported here, before the workers are forked, so that no worker spends the first
# moments of its schedule importing.
from tippingpoint.engine.attack import Engine
from tippingpoint.engine.hold import HoldConfig, HoldTally, hold_child, plan_hold
from tippingpoint.engine.publish import Publisher, start_delay
from tippingpoint.limits import raise_nofile
from tippingpoint.loops import new_loop
from tippingpoint.model import AttackConfig, Shard
from tippingpoint.procs import describe_status, fork_child
from tippingpoint.schemes import SCHEMES
from tippingpoint.stream import Header, HoldHeader, Interval, Record, decode, encode

__all__ = [
    "Load",
    "Local",
    "Plan",
    "attack_child",
    "header_record",
    "plan_shards",
    "run_attack",
    "run_children",
    "run_hold",
]

_RESERVED_FDS: Final = 64
_START_DELAY_S: Final = 0.5


@dataclass(frozen=True, slots=True)
class Plan:
    processes: int
    per_process_connections: int
    fd_limit: int
    shards: tuple[Shard, ...]


_ENGINES: Final[dict[str, type[Engine] | type[Publisher]]] = {
    "http": Engine,
    "messages": Engine,
    "mqtt": Publisher,
}
"""What runs an attack's shard, by its target's application (``Scheme.app``)."""


def engine_of(config: AttackConfig) -> type[Engine] | type[Publisher]:
    return _ENGINES[SCHEMES[config.targets[0].origin.scheme].app]


def plan_shards(config: AttackConfig, fd_limit: int, start_ns: int, start_epoch: float) -> Plan:
    """How many processes, and what each one takes.

    More processes than asked for when the connection cap does not fit in one
    process's open-file limit (the hard limit cannot be raised without privileges).
    """
    capacity = max(1, fd_limit - _RESERVED_FDS)
    wanted = engine_of(config).connections(config)
    processes = max(1, config.processes)
    if wanted is not None:
        processes = max(processes, math.ceil(wanted / capacity))
    per_process = capacity if wanted is None else math.ceil(wanted / processes)
    shards = []
    for k in range(processes):
        if len(config.laddrs) >= processes:
            laddrs = config.laddrs[k::processes]
        else:
            laddrs = (
                config.laddrs[k % max(1, len(config.laddrs)) :]
                + config.laddrs[: k % max(1, len(config.laddrs))]
            )
        closed_conns = 0
        if config.closed:
            share, extra = divmod(config.connections, processes)
            closed_conns = share + (1 if k < extra else 0)
        shards.append(
            Shard(
                index=k,
                count=processes,
                start_ns=start_ns,
                start_epoch=start_epoch,
                max_connections=min(per_process, capacity),
                laddrs=tuple(laddrs),
                closed_connections=closed_conns,
            )
        )
    return Plan(processes, per_process, fd_limit, tuple(shards))


def header_record(config: AttackConfig, plan: Plan, start_epoch: float) -> Header:
    return Header(
        start=start_epoch,
        targets=[f"{t.method} {t.url}" for t in config.targets],
        rate=None if config.pace else config.rate,
        pace=[[s.duration, s.start_rate, s.end_rate] for s in config.pace],
        closed_connections=config.connections if config.closed else None,
        duration=config.duration,
        requests=config.requests,
        timeout=config.timeout,
        keepalive=config.keepalive,
        processes=plan.processes,
        max_connections_per_process=plan.shards[0].max_connections,
        tool=f"tippingpoint {__version__}",
    )


def hold_header(config: HoldConfig, processes: int, start_epoch: float) -> HoldHeader:
    return HoldHeader(
        start=start_epoch,
        target=config.target.url,
        connections=config.connections,
        connect_rate=config.connect_rate,
        duration=config.duration,
        request_every=config.request_every,
        processes=processes,
        tool=f"tippingpoint {__version__}",
    )


Sink = Callable[[Record, bytes], None]
"""Gets every record of a run as it arrives, decoded once, with its line of the stream
(to be written as it is: the bytes the measuring process encoded)."""


def attack_child(config: AttackConfig, shard: Shard, write_fd: int) -> int:
    """One attack worker: its own event loop, records written to ``write_fd``."""

    def emit(record: Interval) -> None:
        os.write(write_fd, encode(record))

    loop, _ = new_loop("auto")
    asyncio.set_event_loop(loop)
    # Few reference cycles are made per request: collect rarely, and never scan the
    # objects that exist before the attack starts (no pauses in the pacing loop).
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        engine = engine_of(config)(config, shard, emit, loop)
        loop.run_until_complete(engine.run())
    finally:
        loop.close()
    return 0


def run_attack(
    config: AttackConfig,
    on_record: Sink,
    on_plan: Callable[[Plan], None] | None = None,
) -> int:
    """Run the attack; every record goes to ``on_record`` as it is produced, the header
    first.

    Returns 0, 1 when a worker process failed, or 130 (143) when SIGINT (SIGTERM)
    stopped the workers; they stop gracefully and flush what they have.
    """
    soft, _hard = raise_nofile()
    plan = plan_shards(config, soft, 0, 0.0)
    # MQTT sessions open (and subscribe) before time zero.
    delay = _START_DELAY_S + start_delay(config, plan.processes)
    start_ns = time.monotonic_ns() + int(delay * 1e9)
    start_epoch = time.time() + delay
    plan = plan_shards(config, soft, start_ns, start_epoch)
    if on_plan is not None:
        on_plan(plan)
    header = header_record(config, plan, start_epoch)
    on_record(header, encode(header))
    return run_children(
        [functools.partial(attack_child, config, shard) for shard in plan.shards],
        on_record,
        "attack",
    )


def run_hold(
    config: HoldConfig,
    on_record: Sink,
    fd_limit: int | None = None,
    on_start: Callable[[int], None] | None = None,
) -> int:
    """Hold connections over as many processes as ``fd_limit`` (default: this process's
    open-file limit) needs; ``on_start`` learns how many before they start. Returns as
    :func:`run_children` does."""
    soft, _hard = raise_nofile()
    start_epoch = time.time() + _START_DELAY_S
    start_ns = time.monotonic_ns() + int(_START_DELAY_S * 1e9)
    shards = plan_hold(config, fd_limit or soft, start_ns)
    if on_start is not None:
        on_start(len(shards))
    header = hold_header(config, len(shards), start_epoch)
    on_record(header, encode(header))
    return run_children(
        [functools.partial(hold_child, config, shard) for shard in shards], on_record, "hold"
    )


def _worker(job: Callable[[int], int], write_fd: int) -> int:
    interrupt.in_worker()
    return job(write_fd)


def _gather(children: dict[int, int], on_record: Sink, name: str) -> int:
    """Read the workers' records until every pipe closes, then reap them; returns how
    many failed (each said on stderr)."""
    buffers: dict[int, bytes] = {fd: b"" for fd in children.values()}
    open_fds = set(children.values())
    while open_fds:
        try:
            readable, _, _ = select.select(list(open_fds), [], [], 1.0)
        except InterruptedError:
            continue
        for fd in readable:
            data = os.read(fd, 1 << 20)
            if not data:
                open_fds.discard(fd)
                os.close(fd)
                continue
            lines = (buffers[fd] + data).split(b"\n")
            buffers[fd] = lines.pop()
            for line in lines:
                if line:
                    on_record(decode(line), line + b"\n")
    failed = 0
    for pid in children:
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failed += 1
            print(
                f"tippingpoint {name}: worker pid {pid} {describe_status(status)}", file=sys.stderr
            )
    return failed


def run_children(jobs: list[Callable[[int], int]], on_record: Sink, name: str) -> int:
    """Fork one process per job (``job(write_fd) -> exit code``); pass on every record
    they write (one JSON line each) as it arrives, decoded once. SIGINT/SIGTERM are
    forwarded as SIGTERM (the workers stop gracefully and flush). Returns 0, 1 when a
    worker failed, or 128 + the signal (130 for Ctrl-C) when one stopped the run."""
    with interrupt.catching():
        children: dict[int, int] = {}  # pid -> read fd
        for job in jobs:
            read_fd, write_fd = os.pipe()
            pid = fork_child(
                functools.partial(_worker, job, write_fd), [read_fd, *children.values()]
            )
            os.close(write_fd)
            children[pid] = read_fd
        try:
            with interrupt.passing_on(children):
                failed = _gather(children, on_record, name)
        finally:
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        stopped_by = interrupt.requested()
    if failed:
        return 1
    return 128 + stopped_by if stopped_by else 0  # as a shell reports a signal


class Load(Protocol):
    """Where the load runs, chosen once: this machine (:class:`Local`) or the workers of
    a Dask cluster (``cluster.fleet.Fleet``). The bench and the commands call these two
    and never ask which it is."""

    def attack(self, config: AttackConfig, on_record: Sink) -> int: ...

    def hold(
        self,
        config: HoldConfig,
        on_record: Sink,
        on_start: Callable[[int], None] | None = None,
        tally: HoldTally | None = None,
    ) -> int: ...


class Local:
    """The load on this machine's processes, within the open-file limit ``fd_limit``."""

    def __init__(self, fd_limit: int | None = None) -> None:
        self.fd_limit = fd_limit

    def attack(self, config: AttackConfig, on_record: Sink) -> int:
        return run_attack(config, on_record)

    def hold(
        self,
        config: HoldConfig,
        on_record: Sink,
        on_start: Callable[[int], None] | None = None,
        tally: HoldTally | None = None,
    ) -> int:
        return run_hold(config, on_record, self.fd_limit, on_start)
