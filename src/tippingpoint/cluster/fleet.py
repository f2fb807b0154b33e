"""`--cluster`: a run's shards on the workers of a Dask cluster, one start instant,
records streamed back.

Before anything is sent: every worker reports its machine (cores, open-file limits,
port range, memory, source addresses) and its clock is measured against this one. A
plan that does not fit the fleet is refused with each machine's figures; a clock
further off than ``max_skew`` is refused, one off by more than 5 ms is a warning. A
worker runs one shard, or several when its machine's open-file limit needs them (worker
w of W takes shards w, w+W, ...) from its own source addresses, every shard starting at
the same wall-clock instant converted to its machine's clock.

Records come back as the workers' structured events on a topic of the run
(``Worker.log_event`` to ``Client.subscribe_topic``): the scheduler forwards them
to this client as they are logged, batched with its other messages, so a record is here
within a scheduler round trip of its second's end, and the records stay in order per
shard (benchmarks/cluster_channel.py measured this against a Dask queue). Each
interval record gets the host it came from.

A worker lost in the middle of a run is noticed by polling the scheduler's worker set
every 0.5 s. The run goes on without it: the other shards' load is theirs and stays
exact, and the lost shards' part is reported as missing (planned against sent, and from
which second) rather than hidden or made up by the others. Ctrl-C sets the run's stop
event: every shard ends as a local process does on SIGTERM, flushing what it has.
"""

from __future__ import annotations

import itertools
import math
import pickle
import queue
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

from tippingpoint import interrupt
from tippingpoint.cluster import ClusterError, require_dask
from tippingpoint.cluster.address import check_address, probe_scheduler
from tippingpoint.cluster.clock import Offset, measure_offsets
from tippingpoint.cluster.facts import Facts, machine_facts
from tippingpoint.cluster.shard import prepare
from tippingpoint.engine.hold import HoldConfig, HoldShard, HoldTally
from tippingpoint.model import AttackConfig, Shard
from tippingpoint.stream import HoldRecord, Interval, Record, decode, encode

__all__ = ["ClusterRun", "Fleet", "missing_share"]

_START_DELAY_S = 2.0
"""From the plan to time zero: the task's trip, a clean process's start and imports."""
_POLL_S = 0.5
_STOP_WAIT_S = 30.0
"""How long stopped shards may take to flush and end."""
_WARN_SKEW_S = 0.005
"""A shard's seconds shifted by more than this against the others' is worth a warning:
latency is measured on each shard's own monotonic clock, so an offset only shifts which
second its requests fall in (and a local cluster's own measurement is within ~2 ms)."""

Log = Callable[[str], None]
Sink = Callable[[Record, bytes], None]


@dataclass
class ClusterRun:
    """What happened on the fleet during one run, for the end of it."""

    kind: str = "attack"
    shards: dict[str, list[int]] = field(default_factory=dict)
    """Worker -> the shards it ran."""
    lost: dict[str, float] = field(default_factory=dict)
    """Worker -> seconds from time zero when it was found gone."""
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    """Shard -> requests sent (an attack), from its records."""
    established: dict[int, int] = field(default_factory=dict)
    """Shard -> connections established at its last record (a hold)."""


class Fleet:
    """The workers of the Dask cluster at ``address``, measured once and used for as
    many runs as needed (a sweep's steps): ``with Fleet(...) as fleet: fleet.attack(...)``."""

    def __init__(
        self,
        address: str,
        log: Log,
        insecure: bool = False,
        max_skew: float = 0.05,
        security: Any = None,
        per_worker: int | None = None,
    ) -> None:
        require_dask()
        self.address, warning = check_address(address, insecure)
        if warning:
            log(f"cluster: warning: {warning}")
        if self.address.startswith("tls://") and security is None and not _tls_configured():
            raise ClusterError(
                f"--cluster {self.address}: a TLS scheduler asks for this client's certificate: "
                "give --cluster-certs DIR (tippingpoint cluster certs), or set Dask's "
                "distributed.comm.tls configuration"
            )
        self.log = log
        self.max_skew = max_skew
        self.security = security
        self.client: Any = None
        self.workers: list[str] = []
        self.facts: dict[str, Facts] = {}
        self.offsets: dict[str, Offset] = {}
        self.run = ClusterRun()
        self.per_worker = per_worker
        """An attack's shards on each worker (None: one, or as many as its machine's
        open-file limit needs)."""

    def __enter__(self) -> Fleet:
        from distributed import Client

        probe_scheduler(self.address)
        try:
            self.client = Client(
                self.address, timeout="10s", security=self.security, set_as_default=False
            )
        except (OSError, TimeoutError) as e:
            raise ClusterError(f"cannot reach the scheduler at {self.address}: {e}") from None
        try:
            self.survey()
        except BaseException:
            self.client.close(timeout=5)
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.client.close(timeout=5)

    def survey(self) -> None:
        """Every worker's machine and clock; refuse clocks too far off."""
        self.workers = sorted(self.alive())
        if not self.workers:
            raise ClusterError(
                "the scheduler has no workers: start some (tippingpoint cluster local "
                "--workers N, or dask worker ADDRESS)"
            )
        self.facts = self.client.run(machine_facts, workers=self.workers)
        self.client.run(prepare, workers=self.workers)  # the engine imported ahead of runs
        for worker in self.workers:
            self.log(f"cluster: worker {worker}: {self.facts[worker].describe()}")
        self.offsets = measure_offsets(self.client, self.workers)
        for worker in self.workers:
            o = self.offsets[worker]
            self.log(
                f"cluster: worker {worker}: clock offset {o.seconds * 1000:+.3f} ms "
                f"(within {o.uncertainty * 1000:.3f} ms)"
            )
        worst = max(self.workers, key=lambda w: abs(self.offsets[w].seconds))
        skew = abs(self.offsets[worst].seconds) + self.offsets[worst].uncertainty
        if skew > self.max_skew:
            raise ClusterError(
                f"worker {worst} ({self.facts[worst].host}) is {skew * 1000:,.1f} ms off this "
                f"machine's clock, over --max-clock-skew {self.max_skew * 1000:g} ms: sync "
                "the clocks (chrony, ntpd) or raise --max-clock-skew"
            )
        if skew > _WARN_SKEW_S:
            self.log(
                f"cluster: warning: worker {worst} may start {skew * 1000:,.1f} ms off time "
                "zero: its seconds are shifted by that much against the others'"
            )

    def restrict(self, workers: Sequence[str]) -> None:
        """Run the load on ``workers`` only (a lab's client hosts; the others carry its
        roles, resolved before this)."""
        keep = set(workers)
        self.workers = [w for w in self.workers if w in keep]
        self.facts = {w: f for w, f in self.facts.items() if w in keep}

    def cores_by_host(self) -> dict[str, int]:
        """Each client machine's cores (as its workers may use them)."""
        out: dict[str, int] = {}
        for facts in self.facts.values():
            out[facts.host] = max(out.get(facts.host, 0), facts.cores)
        return out

    def alive(self) -> set[str]:
        """The workers the scheduler has now, asked of it (``ncores``: one small answer,
        where ``identity`` would describe every worker). Not ``Client.scheduler_info()``:
        its cache is refreshed in the background without the workers, and a read can
        catch it so: a busy machine once saw all four workers "lost" that way."""
        return set(self.client.ncores())

    # -- attack -------------------------------------------------------------------------

    def attack(self, config: AttackConfig, on_record: Sink) -> int:
        """Run ``config`` over the fleet, :attr:`per_worker` shards on each worker;
        records go to ``on_record`` as they come (the header first). What a lost worker's
        shards missed is logged at the end. Returns 0, 1 when a shard failed or a worker
        was lost, 130 on Ctrl-C."""
        from tippingpoint.engine.publish import start_delay
        from tippingpoint.engine.runner import header_record, plan_shards

        n = len(self.workers)
        limit = min(f.nofile_hard for f in self.facts.values())
        # As many shards as the tightest machine's open-file limit needs, a multiple of
        # the workers so that each takes the same share.
        needed = plan_shards(replace(config, processes=n), limit, 0, 0.0).processes
        shards = n * max(self.per_worker or 1, math.ceil(needed / n))
        delay = _START_DELAY_S + start_delay(config, shards)
        start_epoch = time.time() + delay
        plan = plan_shards(replace(config, processes=shards), limit, 0, start_epoch)
        placed = {
            w: _deal(plan.shards[k::n], _laddrs(self.facts[w])) for k, w in enumerate(self.workers)
        }
        header = header_record(config, plan, start_epoch)
        header.cluster = self._placement(placed)
        on_record(header, encode(header))
        code = self._stream("attack", config, placed, start_epoch, on_record)
        if self.run.lost and not config.closed:
            total = config.pacer().total_hits()
            planned = {k: max(0, -(-(total - k) // shards)) for k in range(shards)}
            for line in self.missing_share(planned):
                self.log(line)
        return code

    # -- hold ---------------------------------------------------------------------------

    def plan_hold(self, config: HoldConfig) -> dict[str, list[HoldShard]]:
        """Each worker's shards of the hold: an even share of the connections and of the
        connect rate, as many processes as its machine's open-file limit needs, its own
        source addresses (or the kernel's choice). Refused, with every machine's figures,
        when a share does not fit its machine."""
        from tippingpoint.engine.hold import plan_hold
        from tippingpoint.plan import plan_with_sources

        n = len(self.workers)
        origin = config.target.origin
        per_host = Counter(self.facts[w].host for w in self.workers)
        problems: list[str] = []
        placed: dict[str, list[HoldShard]] = {}
        for k, w in enumerate(self.workers):
            facts = self.facts[w]
            share = config.connections // n + (1 if k < config.connections % n else 0)
            memory = facts.memory_available
            plan, laddrs = plan_with_sources(
                share,
                origin.host,
                _laddrs(facts) or config.laddrs,
                facts.nofile_hard,
                facts.port_range,
                len(config.ports) or 1,
                None if memory is None else memory // per_host[facts.host],
                scheme=origin.scheme,
                file_max=facts.file_max,
            )
            if not plan.feasible:
                problems.append(
                    f"{facts.host} ({w}), {share:,} connections: " + "; ".join(plan.problems)
                )
            mine = replace(
                config,
                connections=share,
                connect_rate=config.connect_rate * share / config.connections,
                laddrs=laddrs,
                processes=max(1, math.ceil(config.processes / n)),
            )
            placed[w] = plan_hold(mine, facts.nofile_hard, 0)
        if problems:
            raise ClusterError("this hold cannot fit the fleet: " + " | ".join(problems))
        # Shards numbered across the fleet (MQTT client ids stay unique: shard g of G
        # names its n-th session g + n*G).
        total = sum(len(s) for s in placed.values())
        number = itertools.count()
        return {
            w: [replace(s, index=next(number), count=total) for s in placed[w]]
            for w in self.workers
        }

    def hold(
        self,
        config: HoldConfig,
        on_record: Sink,
        on_start: Callable[[int], None] | None = None,
        tally: HoldTally | None = None,
    ) -> int:
        """Hold ``config.connections`` over the fleet (see :meth:`plan_hold`), its
        header first. ``tally`` learns each client machine's cores, and drops a lost
        worker's shards when it is found gone; what it held is logged at the end."""
        from tippingpoint.engine.runner import hold_header

        on_lost = None
        if tally is not None:
            tally.host_cores = self.cores_by_host()
            on_lost = tally.drop
        placed = self.plan_hold(config)
        shards = sum(len(s) for s in placed.values())
        for w in self.workers:
            share = sum(s.connections for s in placed[w])
            self.log(f"cluster: worker {w}: {share:,} connections in {len(placed[w])} process(es)")
        if on_start is not None:
            on_start(shards)
        start_epoch = time.time() + _START_DELAY_S
        header = hold_header(config, shards, start_epoch)
        header.cluster = self._placement(placed)
        on_record(header, encode(header))
        code = self._stream("hold", config, placed, start_epoch, on_record, on_lost)
        for line in self.missing_share({}):
            self.log(line)
        return code

    def _placement(self, placed: Mapping[str, Sequence[Shard | HoldShard]]) -> list[dict[str, Any]]:
        """For a stream's header: each worker's machine, shards and clock offset."""
        return [
            {
                "worker": w,
                "host": self.facts[w].host,
                "shard": placed[w][0].index,
                "shards": [s.index for s in placed[w]],
                "clock_offset_ms": round(self.offsets[w].seconds * 1000, 3),
                "clock_uncertainty_ms": round(self.offsets[w].uncertainty * 1000, 3),
            }
            for w in self.workers
        ]

    # -- running shards -----------------------------------------------------------------

    def _stream(
        self,
        kind: str,
        config: AttackConfig | HoldConfig,
        placed: Mapping[str, Sequence[Shard | HoldShard]],
        start_epoch: float,
        on_record: Sink,
        on_lost: Callable[[list[int]], None] | None = None,
    ) -> int:
        from distributed import Event

        from tippingpoint.cluster.shard import run_shard

        client = self.client
        run = self.run = ClusterRun(kind, {w: [s.index for s in placed[w]] for w in placed})
        tag = uuid.uuid4().hex[:12]
        topic, stop_name = f"tippingpoint-{tag}", f"tippingpoint-stop-{tag}"
        inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        client.subscribe_topic(topic, lambda event: inbox.put(event[1]))
        stop = Event(stop_name, client=client)
        futures = {}
        for worker, shards in placed.items():
            futures[worker] = client.submit(
                run_shard,
                pickle.dumps((kind, config, list(shards))),
                start_epoch,
                self.offsets[worker].seconds,
                topic,
                stop_name,
                workers=[worker],
                allow_other_workers=False,
                pure=False,
                retries=0,
                key=f"tippingpoint-{kind}-{worker}-{tag}",
            )
        received: dict[str, int] = {}

        def take(message: dict[str, Any]) -> None:
            for line in message["lines"]:
                record = decode(line)
                if not isinstance(record, Interval | HoldRecord):
                    on_record(record, line + b"\n")
                    continue
                record.host = str(message["host"])  # tagged with it, so encoded again
                if isinstance(record, Interval):
                    run.sent[record.process] = run.sent.get(record.process, 0) + record.sent
                elif not record.final:
                    run.established[record.process] = record.established
                on_record(record, encode(record))
            worker = str(message["worker"])
            received[worker] = received.get(worker, 0) + len(message["lines"])

        try:
            return self._follow(futures, start_epoch, received, take, inbox, stop, on_lost)
        finally:
            stop.set()  # whatever ended the run, no shard goes on without it
            client.unsubscribe_topic(topic)

    def _follow(
        self,
        futures: dict[str, Any],
        start_epoch: float,
        received: dict[str, int],
        take: Callable[[dict[str, Any]], None],
        inbox: queue.Queue[dict[str, Any]],
        stop: Any,
        on_lost: Callable[[list[int]], None] | None,
    ) -> int:
        """Pass records on until every worker's task ends; notice lost workers; Ctrl-C
        stops every shard. Returns the run's exit code."""
        run = self.run
        code = 0
        try:
            with interrupt.catching():
                while any(not f.done() for f in futures.values()):
                    deadline = time.monotonic() + _POLL_S
                    while (left := deadline - time.monotonic()) > 0:
                        try:
                            take(inbox.get(timeout=left))
                        except queue.Empty:
                            break
                    if interrupt.requested():
                        raise KeyboardInterrupt
                    alive = self.alive()
                    for worker, future in futures.items():
                        if worker not in alive and worker not in run.lost and not future.done():
                            at = time.time() - start_epoch
                            run.lost[worker] = at
                            future.cancel()
                            if on_lost is not None:
                                on_lost(run.shards[worker])
                            self.log(
                                f"cluster: worker {worker} ({self.facts[worker].host}) was lost "
                                f"{at:.1f} s into the run: its shards stop there, the others go on"
                            )
        except KeyboardInterrupt:
            self._stop_all(stop, [f for w, f in futures.items() if w not in run.lost])
            code = 130
        for worker, future in futures.items():
            if worker in run.lost:
                code = code or 1
                continue
            if not future.done():  # did not stop in time (said above)
                code = code or 1
                continue
            if future.status == "error":
                self.log(f"cluster: the shards on {worker} failed: {future.exception()}")
                code = code or 1
                continue
            result = future.result()
            run.results[worker] = result
            if result["code"] not in (0, -15, 143) or result["error"]:
                self.log(
                    f"cluster: the shards on {worker} exited {result['code']}: {result['error']}"
                )
                code = code or 1
        # Events may trail the results: wait (a little) for every line the shards sent.
        expected = {w: r["lines"] for w, r in run.results.items()}
        deadline = time.monotonic() + 5.0
        while any(received.get(w, 0) < n for w, n in expected.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                self.log("cluster: some records did not arrive within 5 s of the end")
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
        return code

    def _stop_all(self, stop: Any, futures: list[Any]) -> None:
        """Ask every shard to stop, and give them :data:`_STOP_WAIT_S` to flush and end."""
        self.log("cluster: stopping every shard (they flush what they have)")
        stop.set()
        deadline = time.monotonic() + _STOP_WAIT_S
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not all(f.done() for f in futures):
            self.log(f"cluster: shards still running {_STOP_WAIT_S:.0f} s after the stop")
        self.client.gather([f for f in futures if f.done()], errors="skip")

    def missing_share(self, planned: dict[int, int]) -> list[str]:
        """For each lost worker: what its shards were to do against what they did."""
        return missing_share(self.run, self.facts, planned)


def _tls_configured() -> bool:
    import dask

    return bool(dask.config.get("distributed.comm.tls.client.cert", None))


def _laddrs(facts: Facts) -> tuple[str, ...]:
    from tippingpoint.plan import parse_addresses

    return parse_addresses(facts.laddrs)


def _deal(shards: Sequence[Shard], laddrs: tuple[str, ...]) -> list[Shard]:
    """A worker's attack shards with its machine's source addresses dealt out (each
    all of them when there are fewer addresses than shards); none: as planned."""
    if not laddrs:
        return list(shards)
    n = len(shards)
    return [
        replace(s, laddrs=laddrs[i::n] if len(laddrs) >= n else laddrs)
        for i, s in enumerate(shards)
    ]


def missing_share(run: ClusterRun, facts: dict[str, Facts], planned: dict[int, int]) -> list[str]:
    """For each lost worker: an attack's requests planned against sent, a hold's
    connections that went with it; and from when."""
    lines = []
    for worker, at in run.lost.items():
        shards = run.shards.get(worker, [])
        where = f"{facts[worker].host} ({worker}), shard(s) {', '.join(map(str, shards))}"
        if run.kind == "hold":
            held = sum(run.established.get(k, 0) for k in shards)
            lines.append(
                f"{where}: lost at {at:.1f} s with {held:,} established connections, "
                "no longer counted as held from then on"
            )
            continue
        want = sum(planned.get(k, 0) for k in shards)
        sent = sum(run.sent.get(k, 0) for k in shards)
        lines.append(
            f"{where}: lost at {at:.1f} s: sent {sent:,} of its {want:,} planned; "
            f"{want - sent:,} requests of the run's plan are missing from then on"
        )
    return lines
