"""`attack --cluster`: one shard per Dask worker, one start instant, records streamed back.

Before anything is sent: every worker reports its machine (cores, open-file limits,
port range, memory, source addresses) and its clock is measured against this one. A
plan that does not fit the fleet is refused with each machine's figures; a clock
further off than ``max_skew`` is refused, one off by more than a millisecond is a
warning. Then shard k of P (hits k, k+P, ...) goes to worker k, every shard starting at
the same wall-clock instant converted to its machine's clock.

Records come back as the workers' structured events on a topic of the run
(``Worker.log_event`` to ``Client.subscribe_topic``): the scheduler forwards them
to this client as they are logged, batched with its other messages, so a record is here
within a scheduler round trip of its second's end, and the records stay in order per
shard. Each interval record gets the host it came from.

A worker lost in the middle of a run is noticed by polling the scheduler's worker set
every 0.5 s. The run goes on without it: the other shards' load is theirs and stays
exact, and the lost shard's part is reported as missing (planned against sent, and from
which second) rather than hidden or made up by the others. Ctrl-C sets the run's stop
event: every shard ends as a local process does on SIGTERM, flushing what it has.
"""

from __future__ import annotations

import pickle
import queue
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from tippingpoint.cluster import ClusterError, require_dask
from tippingpoint.cluster.address import check_address
from tippingpoint.cluster.clock import Offset, measure_offsets
from tippingpoint.cluster.facts import Facts, machine_facts
from tippingpoint.model import AttackConfig
from tippingpoint.stream import Interval, Record, decode, encode

__all__ = ["ClusterRun", "missing_share", "run_attack_cluster"]

_START_DELAY_S = 2.0
"""From the plan to time zero: the task's trip, a clean process's start and imports."""
_POLL_S = 0.5
_WARN_SKEW_S = 0.001


@dataclass
class ClusterRun:
    """What happened on the fleet, for the end of the run."""

    workers: list[str] = field(default_factory=list)
    facts: dict[str, Facts] = field(default_factory=dict)
    offsets: dict[str, Offset] = field(default_factory=dict)
    lost: dict[str, float] = field(default_factory=dict)
    """Worker -> seconds from time zero when it was found gone."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    """Shard -> requests sent, from its records."""


def _fleet(client: Any, log: Callable[[str], None], run: ClusterRun) -> None:
    run.workers = sorted(client.scheduler_info()["workers"])
    if not run.workers:
        raise ClusterError(
            "the scheduler has no workers: start some (tippingpoint cluster local --workers N, "
            "or dask worker ADDRESS)"
        )
    run.facts = client.run(machine_facts, workers=run.workers)
    for worker in run.workers:
        log(f"cluster: worker {worker}: {run.facts[worker].describe()}")


def _check_clocks(run: ClusterRun, max_skew: float, log: Callable[[str], None]) -> None:
    for worker in run.workers:
        o = run.offsets[worker]
        log(
            f"cluster: worker {worker}: clock offset {o.seconds * 1000:+.3f} ms "
            f"(within {o.uncertainty * 1000:.3f} ms)"
        )
    worst = max(run.workers, key=lambda w: abs(run.offsets[w].seconds))
    skew = abs(run.offsets[worst].seconds) + run.offsets[worst].uncertainty
    if skew > max_skew:
        raise ClusterError(
            f"worker {worst} ({run.facts[worst].host}) is {skew * 1000:,.1f} ms off this "
            f"machine's clock, over --max-clock-skew {max_skew * 1000:g} ms: sync the "
            "clocks (chrony, ntpd) or raise --max-clock-skew"
        )
    if skew > _WARN_SKEW_S:
        log(
            f"cluster: warning: worker {worst} may start {skew * 1000:,.1f} ms off time zero: "
            "its seconds are shifted by that much against the others'"
        )


def run_attack_cluster(
    config: AttackConfig,
    address: str,
    on_record: Callable[[Record, bytes], None],
    log: Callable[[str], None],
    insecure: bool = False,
    max_skew: float = 0.05,
    security: Any = None,
) -> tuple[int, ClusterRun]:
    """Run ``config`` as one shard per worker of the cluster at ``address``; records go to
    ``on_record`` as they come (the header first). Returns 0 (1 when a shard failed or a
    worker was lost) and what the fleet did."""
    require_dask()
    from distributed import Client

    from tippingpoint.engine.publish import start_delay
    from tippingpoint.engine.runner import header_record, plan_shards

    address, warning = check_address(address, insecure)
    if warning:
        log(f"cluster: warning: {warning}")
    run = ClusterRun()
    try:
        client = Client(address, timeout="10s", security=security, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ClusterError(f"cannot reach the scheduler at {address}: {e}") from None
    try:
        _fleet(client, log, run)
        run.offsets = measure_offsets(client, run.workers)
        _check_clocks(run, max_skew, log)
        shards = len(run.workers)
        limit = min(f.nofile_hard for f in run.facts.values())
        plan = plan_shards(replace(config, processes=shards), limit, 0, 0.0)
        if plan.processes > shards:
            machines = "; ".join(
                f"{run.facts[w].host}: open files {run.facts[w].nofile_hard:,}" for w in run.workers
            )
            raise ClusterError(
                f"this run needs {plan.processes} processes of at most "
                f"{plan.per_process_connections:,} connections, and the cluster has {shards} "
                f"workers ({machines}): start more workers"
            )
        delay = _START_DELAY_S + start_delay(config, shards)
        start_epoch = time.time() + delay
        plan = plan_shards(replace(config, processes=shards), limit, 0, start_epoch)
        header = header_record(config, plan, start_epoch)
        header.cluster = [
            {
                "worker": w,
                "host": run.facts[w].host,
                "shard": k,
                "clock_offset_ms": round(run.offsets[w].seconds * 1000, 3),
                "clock_uncertainty_ms": round(run.offsets[w].uncertainty * 1000, 3),
            }
            for k, w in enumerate(run.workers)
        ]
        on_record(header, encode(header))
        return _stream(client, config, plan.shards, start_epoch, run, on_record, log), run
    finally:
        client.close(timeout=5)


def _stream(
    client: Any,
    config: AttackConfig,
    shards: tuple[Any, ...],
    start_epoch: float,
    run: ClusterRun,
    on_record: Callable[[Record, bytes], None],
    log: Callable[[str], None],
) -> int:
    from distributed import Event

    from tippingpoint.cli.options import parse_laddrs
    from tippingpoint.cluster.shard import run_shard

    tag = uuid.uuid4().hex[:12]
    topic, stop_name = f"tippingpoint-{tag}", f"tippingpoint-stop-{tag}"
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()
    client.subscribe_topic(topic, lambda event: inbox.put(event[1]))
    stop = Event(stop_name, client=client)
    futures = {}
    for shard, worker in zip(shards, run.workers, strict=True):
        laddrs = parse_laddrs(run.facts[worker].laddrs) if run.facts[worker].laddrs else ()
        futures[worker] = client.submit(
            run_shard,
            pickle.dumps((config, shard)),
            start_epoch,
            run.offsets[worker].seconds,
            topic,
            stop_name,
            laddrs,
            workers=[worker],
            allow_other_workers=False,
            pure=False,
            retries=0,
            key=f"tippingpoint-shard-{shard.index}-{tag}",
        )
    received: dict[int, int] = {}

    def take(message: dict[str, Any]) -> None:
        k = int(message["shard"])
        for line in message["lines"]:
            record = decode(line)
            if isinstance(record, Interval):  # tagged with its host, so encoded again
                record.host = str(message["host"])
                run.sent[k] = run.sent.get(k, 0) + record.sent
                on_record(record, encode(record))
            else:
                on_record(record, line + b"\n")
        received[k] = received.get(k, 0) + len(message["lines"])

    code = 0
    try:
        while any(not f.done() for f in futures.values()):
            deadline = time.monotonic() + _POLL_S
            while (left := deadline - time.monotonic()) > 0:
                try:
                    take(inbox.get(timeout=left))
                except queue.Empty:
                    break
            alive = set(client.scheduler_info()["workers"])
            for worker, future in futures.items():
                if worker not in alive and worker not in run.lost and not future.done():
                    at = time.time() - start_epoch
                    run.lost[worker] = at
                    future.cancel()
                    log(
                        f"cluster: worker {worker} ({run.facts[worker].host}) was lost "
                        f"{at:.1f} s into the run: its shard stops there, the others go on"
                    )
    except KeyboardInterrupt:
        log("cluster: stopping every shard (they flush what they have)")
        stop.set()
        client.gather([f for w, f in futures.items() if w not in run.lost], errors="skip")
        code = 130
    for worker, future in futures.items():
        if worker in run.lost:
            code = code or 1
            continue
        if future.status == "error":
            log(f"cluster: the shard on {worker} failed: {future.exception()}")
            code = code or 1
            continue
        result = future.result()
        run.results[worker] = result
        if result["code"] not in (0, -15, 143) or result["error"]:
            log(f"cluster: the shard on {worker} exited {result['code']}: {result['error']}")
            code = code or 1
    # Events may trail the results: wait (a little) for every line the shards sent.
    expected = {r["shard"]: r["lines"] for r in run.results.values()}
    deadline = time.monotonic() + 5.0
    while any(received.get(k, 0) < n for k, n in expected.items()):
        left = deadline - time.monotonic()
        if left <= 0:
            log("cluster: some records did not arrive within 5 s of the end")
            code = code or 1
            break
        try:
            take(inbox.get(timeout=left))
        except queue.Empty:
            continue
    while True:  # and whatever the lost shards sent before they went
        try:
            take(inbox.get_nowait())
        except queue.Empty:
            break
    client.unsubscribe_topic(topic)
    return code


def missing_share(run: ClusterRun, planned_per_shard: dict[int, int]) -> list[str]:
    """For each lost shard: what it was to send against what it sent, and from when."""
    lines = []
    for k, worker in enumerate(run.workers):
        if worker in run.lost:
            planned = planned_per_shard.get(k, 0)
            sent = run.sent.get(k, 0)
            lines.append(
                f"shard {k} on {run.facts[worker].host} ({worker}) was lost at "
                f"{run.lost[worker]:.1f} s: sent {sent:,} of its {planned:,} planned; "
                f"{planned - sent:,} requests of the run's plan are missing from then on"
            )
    return lines
