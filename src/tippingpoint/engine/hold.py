"""Holding connections (tcpkali-style): open them at a rate, keep them, count them.

One process's share: ``connections`` connections opened at ``connect_rate`` per second,
spread over source addresses and destination ports, then held until the end, each
optionally sending a request every ``request_every`` seconds (spread evenly, so that N
connections make N / request_every requests per second). Once a second the process
emits a record: established, opened, failed by kind, lost (closed by the peer),
connect and request latency histograms, and its own RSS.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import ssl
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any

import numpy as np

from tippingpoint import interrupt
from tippingpoint.engine.client import ClientConn, Pool, classify_error, client_socket
from tippingpoint.engine.fdpoll import FdPoller
from tippingpoint.engine.layers import keep_alive_hit, new_pool
from tippingpoint.engine.mqtt import Session, expand, open_session, reason_text
from tippingpoint.engine.recorder import CpuMeter
from tippingpoint.engine.tls import make_ssl_context, open_conn
from tippingpoint.hdr import Histogram
from tippingpoint.loops import new_loop
from tippingpoint.model import MQTTOptions, TLSOptions
from tippingpoint.plan import processes_for
from tippingpoint.schemes import SCHEMES
from tippingpoint.stream import ErrorCount, HoldRecord, encode
from tippingpoint.targets import Target
from tippingpoint.wire import mqtt as m
from tippingpoint.wire.response import ResponseError

__all__ = ["HoldConfig", "HoldShard", "HoldTally", "Holder", "hold_child", "plan_hold"]

_HISTS = (
    ("connect_latency", "connect"),
    ("request_latency", "request"),
    ("lateness", "lateness"),
    ("tls_time", "tls"),
    ("connack_time", "connack"),
    ("open_time", "open"),
)
"""Per-second histograms of a hold process: the array it fills, the record's key."""
_LATE_MS = 100.0
"""Connects that start this late against the plan (p95) mean the client fell behind: the
opener runs every 10 ms, so a few ms are its normal step."""
_MACHINE_BUSY = 0.85
"""CPUs this busy (all causes) leave the client no room to keep its schedule."""
_OPENING_MAX = 2000
"""Connections being opened at once, per process."""
_TICK_NS = 10_000_000
_TICKS_PER_S = 1_000_000_000 // _TICK_NS


@dataclass(frozen=True, slots=True)
class HoldConfig:
    target: Target
    connections: int
    connect_rate: float
    duration: float
    request_every: float | None = None
    ports: tuple[int, ...] = ()
    """Destination ports to spread over (default: the URL's)."""
    laddrs: tuple[str, ...] = ()
    timeout: float = 30.0
    insecure: bool = False
    cacert: str | None = None
    processes: int = 1
    mqtt: MQTTOptions | None = None
    """MQTT sessions (``mqtt://``, ``mqtts://``): CONNECT, CONNACK counted as established,
    a PINGREQ every ``request_every`` (the keepalive)."""
    retries: int = 0
    """Opens that fail are tried again this many times (same source address and client
    id), after a jittered backoff of 1, 2, 4... s (at most 16), as devices reconnect.
    Every failed attempt still counts as a failure."""


@dataclass(frozen=True, slots=True)
class HoldShard:
    index: int
    count: int
    connections: int
    connect_rate: float
    laddrs: tuple[str, ...]
    start_ns: int


_Opener = Callable[[socket.socket, int], Awaitable[tuple[ClientConn | Session, int, int]]]


class Holder:
    """One process's share of a hold; the owner (see ``ConnOwner``) of its connections."""

    def __init__(
        self,
        config: HoldConfig,
        shard: HoldShard,
        emit: Callable[[HoldRecord], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.shard = shard
        self.emit = emit
        self.loop = loop
        origin = config.target.origin
        context = None
        if origin.tls:
            context = make_ssl_context(TLSOptions(insecure=config.insecure, cacert=config.cacert))
        self.pool = new_pool(config.target, context, None)
        self.pool.handshake_s = min(self.pool.handshake_s, config.timeout)
        """Its ``conns`` are the connections established and not lost."""
        self.host = str(self.pool.addr[0])
        self.ports = config.ports or (origin.port,)
        self.mqtt = config.mqtt
        openers: dict[str, _Opener] = {
            "http": self._open_conn,
            "messages": self._open_conn,
            "mqtt": self._open_session,
        }
        self.open_layers = openers[SCHEMES[origin.scheme].app]
        """Opens every layer above TCP on a connected socket: (connection, when TLS was
        done, when MQTT's CONNACK came; 0 where there is none)."""
        self.request_bytes = keep_alive_hit(config.target)
        self.conns: list[ClientConn | Session] = []
        """Every connection established, in order (requests go round them)."""
        self.opening = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = 0
        self.opened = 0
        self.retried = 0
        self.rng = random.Random(shard.index)
        self.lost = 0
        self.lost_reasons: dict[str, int] = {}
        """Sessions the broker closed with a DISCONNECT, by its reason."""
        self.received = 0
        self.failed: dict[str, list[Any]] = {}
        self.connect_latency = array("q")
        self.request_latency = array("q")
        self.lateness = array("q")
        self.tls_time = array("q")
        self.connack_time = array("q")
        self.open_time = array("q")
        """From connect() to a connection open in every layer (TLS, the WebSocket's
        upgrade, MQTT's CONNACK): how long a device waits to be connected."""
        self.cpu = CpuMeter()
        self.codes: dict[int, int] = {}
        self.stopping = False
        self.done = asyncio.Event()
        self.next_tick = 0
        self.poller = FdPoller(loop)
        """Every held socket in one epoll set: no event-loop transport per connection."""

    def fail(self, exc: BaseException) -> None:
        kind, message = classify_error(exc)
        entry = self.failed.setdefault(kind, [0, message[:300]])
        entry[0] += 1

    # ConnOwner

    def on_response(
        self, conn: ClientConn | Session, now: int, status: int, body_bytes: int, keep_alive: bool
    ) -> None:
        self.request_latency.append(now - conn.sent_ns)
        if status:
            self.codes[status] = self.codes.get(status, 0) + 1

    def on_ack(self, conn: Session, packet_id: int, now: int, reason: int) -> None:
        pass  # held sessions do not publish

    def on_message(self, conn: Session, packet: m.Publish, now: int) -> None:
        self.received += 1

    def on_error(self, conn: ClientConn | Session, exc: BaseException) -> None:
        # A response that cannot be read, or a broken TLS record, is a failure; a
        # connection that goes away counts as lost (on_closed).
        if not self.stopping and (
            isinstance(exc, ResponseError | ssl.SSLError) or hasattr(exc, "kind")
        ):
            self.fail(exc)

    def on_closed(self, conn: ClientConn | Session, pool: Pool) -> None:
        if conn in pool.conns:
            pool.conns.discard(conn)
            if not self.stopping:
                self.lost += 1
                reason = getattr(conn, "disconnect_reason", None)
                if reason is not None:
                    text = reason_text(reason)
                    self.lost_reasons[text] = self.lost_reasons.get(text, 0) + 1

    def _retry(self, n: int, attempt: int) -> None:
        """Open connection ``n`` again later, if the config allows another attempt."""
        if self.stopping or attempt >= self.config.retries:
            return
        delay = min(16.0, 2.0**attempt) * self.rng.uniform(0.5, 1.5)
        self.retried += 1

        def reopen() -> None:
            if not self.stopping:
                self.opening += 1
                self._spawn(n, attempt + 1)

        self.loop.call_later(delay, reopen)

    def _spawn(self, n: int, attempt: int) -> None:
        """Open connection ``n``; the task is kept until it ends, to be cancelled at the
        stop (an opening must not outlive the poller it joins)."""
        task = self.loop.create_task(self._open_one(n, attempt))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _open_one(self, n: int, attempt: int = 0) -> None:
        # Three clocks, as `attack` keeps them for requests: how late the connect started
        # against the plan (the process's own backlog), the TCP connect itself, and the
        # TLS handshake on its own.
        planned = self.shard.start_ns + int(n * 1e9 / self.shard.connect_rate)
        t_tls = 0
        sock = None
        try:
            laddrs = self.shard.laddrs
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = client_socket(family, laddrs[n % len(laddrs)] if laddrs else None)
            port = self.ports[(n // max(1, len(self.shard.laddrs))) % len(self.ports)]
            pool = self.pool
            async with asyncio.timeout(self.config.timeout):
                t_connect = monotonic_ns()
                if not attempt:  # a retry is late on purpose
                    self.lateness.append(max(0, t_connect - planned))
                await self.loop.sock_connect(sock, (self.host, port))
            t_tcp = monotonic_ns()
            connected, sock = sock, None  # open_conn closes it if it fails
            conn: ClientConn | Session
            # Past the connect, each layer's opening has its own limit (HANDSHAKE_S).
            conn, t_ready, t_connack = await self.open_layers(connected, n)
            if pool.ssl is not None:
                t_tls = t_ready or monotonic_ns()
        except (OSError, ssl.SSLError, TimeoutError) as e:
            if sock is not None:
                sock.close()
            self.fail(e)
            self._retry(n, attempt)
            return
        except Exception as e:  # a refused CONNACK or SUBSCRIBE, a protocol error
            if not hasattr(e, "kind"):
                raise
            self.fail(e)
            self._retry(n, attempt)
            return
        finally:
            self.opening -= 1
        self.open_time.append(monotonic_ns() - t_connect)
        self.connect_latency.append(t_tcp - t_connect)
        if t_tls:
            self.tls_time.append(t_tls - t_tcp)
        if t_connack:
            self.connack_time.append(t_connack - (t_ready or t_tcp))
        self.opened += 1
        if not conn.open:  # closed by the peer before this coroutine resumed
            self.lost += 1
            return
        self.conns.append(conn)
        pool.conns.add(conn)  # type: ignore[arg-type]

    async def _open_conn(self, sock: socket.socket, n: int) -> tuple[ClientConn, int, int]:
        """TLS and a WebSocket's upgrade, where the stack has them."""
        return await open_conn(self.loop, self, self.pool, sock, self.poller), 0, 0

    async def _open_session(self, sock: socket.socket, n: int) -> tuple[Session, int, int]:
        """MQTT: TLS, CONNECT -> CONNACK, SUBSCRIBE -> SUBACK on a connected socket."""
        options = self.mqtt
        assert options is not None
        index = self.shard.index + n * self.shard.count
        client_id = expand(options.client_id, index, self.shard.index)
        subscribe = None
        if options.subscribe:
            topic = expand(options.subscribe, index, self.shard.index, client_id)
            subscribe = m.encode_subscribe(1, [(topic, options.subscribe_qos)], options.version)
        session, t_tls, t_connack = await open_session(
            self.loop,
            self,
            self.pool,
            sock,
            options.version,
            options.connect_packet(client_id),
            subscribe,
            index,
            self.poller,
            options.ws_path,
        )
        return session, t_tls, t_connack

    def _open_batch(self) -> None:
        """Every 10 ms: open the connections due by now."""
        if self.stopping:
            return
        elapsed = (monotonic_ns() - self.shard.start_ns) / 1e9
        due = min(self.shard.connections, int(elapsed * self.shard.connect_rate) + 1)
        while self.started < due and self.opening < _OPENING_MAX:
            self.started += 1
            self.opening += 1
            self._spawn(self.started - 1, 0)
        if self.started < self.shard.connections:
            self.loop.call_later(0.01, self._open_batch)

    def _request_tick(self) -> None:
        """Every 10 ms: the connections whose turn it is ask once. Connection i asks in
        the ticks where tick % period == i % period, so N connections spread N / period
        requests evenly over every 10 ms rather than in one burst a second."""
        if self.stopping:
            return
        period = max(1, round((self.config.request_every or 1.0) * _TICKS_PER_S))
        now_tick = (monotonic_ns() - self.shard.start_ns) // _TICK_NS
        # A starved process catches up, but never asks a connection twice in a round.
        self.next_tick = max(self.next_tick, now_tick - period + 1)
        conns = self.conns
        request = self.request_bytes
        while self.next_tick <= now_tick:
            for i in range(self.next_tick % period, len(conns), period):
                conn = conns[i]
                if conn.open and not conn.busy:
                    now = monotonic_ns()
                    conn.send(request, now, False, now, 0)
            self.next_tick += 1
        delay = (self.shard.start_ns + self.next_tick * _TICK_NS - monotonic_ns()) / 1e9
        self.loop.call_later(max(0.0, delay), self._request_tick)

    def _record(self, t: float) -> HoldRecord:
        hists = {}
        for name, key in _HISTS:
            values: array[int] = getattr(self, name)
            h = Histogram()
            if values:
                h.record_many(np.frombuffer(values, dtype=np.int64) // 1000)
            hists[key] = h.encode()
            setattr(self, name, array("q"))
        cpu_us, cpus_busy = self.cpu.take()
        record = HoldRecord(
            process=self.shard.index,
            t=round(t, 3),
            established=len(self.pool.conns),
            opened=self.opened,
            lost=self.lost,
            failed={k: ErrorCount(v[0], v[1]) for k, v in self.failed.items()},
            codes=dict(self.codes),
            rss_kib=_rss_kib(),
            hist=hists,
            cpu_us=cpu_us,
            lost_reasons=dict(self.lost_reasons),
            received=self.received,
            cpus_busy=cpus_busy,
            retried=self.retried,
        )
        self.codes = {}
        return record

    async def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.done.set)
        if interrupt.requested():  # before the loop had the signals
            self.done.set()
        delay = (self.shard.start_ns - monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        self._open_batch()
        if self.config.request_every:
            self.next_tick = _TICKS_PER_S  # the first round starts a second in
            self._request_tick()
        end = self.shard.start_ns + int(self.config.duration * 1e9)
        second = 0
        while not self.done.is_set():
            next_tick = self.shard.start_ns + (second + 1) * 1_000_000_000
            try:
                await asyncio.wait_for(
                    self.done.wait(), max(0.0, (next_tick - monotonic_ns()) / 1e9)
                )
            except TimeoutError:
                pass
            second += 1
            # Seconds of real time since the start: a starved process may take longer
            # than a second per round, and its records must still line up with the others.
            elapsed = round((monotonic_ns() - self.shard.start_ns) / 1e9)
            second = max(second, elapsed)
            self.emit(self._record(float(second)))
            if monotonic_ns() >= end:
                break
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for conn in self.conns:
            conn.abort()
        await asyncio.sleep(0)
        self.poller.close()
        record = self._record(float(second))
        record.final = True
        record.interrupted = self.done.is_set()
        self.emit(record)


def _rss_kib() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def plan_hold(config: HoldConfig, fd_limit: int, start_ns: int) -> list[HoldShard]:
    """Shards: enough processes for the descriptor limit, connections and rate split evenly,
    source addresses dealt out round-robin."""
    processes = max(config.processes, processes_for(config.connections, fd_limit))
    shards = []
    for k in range(processes):
        share = config.connections // processes + (1 if k < config.connections % processes else 0)
        laddrs = config.laddrs[k::processes] if len(config.laddrs) >= processes else config.laddrs
        shards.append(
            HoldShard(k, processes, share, config.connect_rate / processes, tuple(laddrs), start_ns)
        )
    return shards


def hold_child(config: HoldConfig, shard: HoldShard, write_fd: int) -> int:
    """One hold process: its own event loop, records written to ``write_fd``."""

    def emit(record: HoldRecord) -> None:
        os.write(write_fd, encode(record))

    loop, _ = new_loop("auto")
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(Holder(config, shard, emit, loop).run())
    finally:
        loop.close()
    return 0


class HoldTally:
    """The totals of a hold across its processes, from their records.

    A starved process may report late or skip a second, so totals are sums of each
    process's newest figures, and a second is complete once every process has passed it.
    """

    def __init__(
        self,
        connections: int,
        processes: int,
        connect_rate: float | None = None,
        scheme: str = "http",
    ) -> None:
        self.connections = connections
        self.scheme = SCHEMES[scheme]
        """What the connections are: their noun, and what answers their keep-alive."""
        self.processes = processes
        self.connect_rate = connect_rate
        self.cpu_us: dict[int, int] = {}
        self.cpus_busy: list[float] = []
        self.cores = len(os.sched_getaffinity(0))
        """The CPUs the hold's processes may run on (they inherit this process's)."""
        self.host_cores: dict[str, int] = {}
        """A hold on a cluster: each client machine's cores (its records say their host)."""
        self.latest: dict[int, HoldRecord] = {}
        self.first: dict[int, HoldRecord] = {}
        self.failures: dict[tuple[int, str], int] = {}
        self.samples: dict[str, str] = {}
        self.hists = {key: Histogram() for _, key in _HISTS}
        self.codes: dict[int, int] = {}
        self.peak = 0
        self.rss_at_peak = 0
        self.reached: float | None = None
        self.timeline: dict[str, list[float]] = {
            "t": [],
            "established": [],
            "lost": [],
            "request_p99_ms": [],
        }
        """Per second: established and lost, and the p99 of the requests (MQTT: the
        PINGRESPs) answered since the second before (0 where none were)."""
        self._since = Histogram()
        self.interrupted = False
        """A process was stopped by a signal before the end (Ctrl-C)."""
        self.gone = 0
        """Connections that went with a client machine lost mid-run (a cluster's worker)."""

    def drop(self, processes: list[int]) -> None:
        """Processes gone with their machine: their connections are no longer held, and
        the seconds no longer wait for them."""
        for process in processes:
            record = self.latest.pop(process, None)
            if record is not None:
                self.gone += record.established
        self.processes -= len(processes)

    def add(self, record: HoldRecord) -> str | None:
        """Take one record; return a progress line when a second is complete."""
        for name, hist in self.hists.items():
            decoded = record.histogram(name)
            hist.add(decoded)
            if name == "request" and not record.final:
                self._since.add(decoded)
        for code, count in record.codes.items():
            self.codes[code] = self.codes.get(code, 0) + count
        if record.final:
            self.interrupted = self.interrupted or record.interrupted
            return None
        process = record.process
        self.cpu_us[process] = self.cpu_us.get(process, 0) + record.cpu_us
        if record.cpus_busy >= 0 and process in self.latest:  # not a first second's start-up
            self.cpus_busy.append(record.cpus_busy)
        self.latest[process] = record
        self.first.setdefault(process, record)
        for kind, entry in record.failed.items():  # cumulative per process
            self.failures[(process, kind)] = entry.count
            self.samples.setdefault(kind, entry.sample)
        total = sum(r.established for r in self.latest.values())
        if total > self.peak:
            self.peak = total
            self.rss_at_peak = sum(r.rss_kib for r in self.latest.values())
        if self.reached is None and total >= self.connections:
            self.reached = record.t
        if len(self.latest) < self.processes:
            return None
        now = min(r.t for r in self.latest.values())
        if self.timeline["t"] and now <= self.timeline["t"][-1]:
            return None
        self.timeline["t"].append(now)
        self.timeline["established"].append(total)
        self.timeline["lost"].append(self.lost)
        since = self._since
        self.timeline["request_p99_ms"].append(
            round(since.percentile(99) / 1000, 3) if since.total else 0.0
        )
        self._since = Histogram()
        return f"{now:6.0f} s: {total:,} established, {self.lost:,} lost"

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.latest.values())

    def lost_reasons(self) -> dict[str, int]:
        """MQTT: the broker's reasons for the sessions it closed, summed over processes."""
        out: dict[str, int] = {}
        for record in self.latest.values():
            for reason, count in record.lost_reasons.items():
                out[reason] = out.get(reason, 0) + count
        return out

    @property
    def received(self) -> int:
        return sum(r.received for r in self.latest.values())

    @property
    def retried(self) -> int:
        return sum(r.retried for r in self.latest.values())

    def failures_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_, kind), count in self.failures.items():
            out[kind] = out.get(kind, 0) + count
        return out

    def bytes_per_connection(self) -> float | None:
        """Client RSS growth over the connections it added, at the peak."""
        growth = (self.rss_at_peak - sum(r.rss_kib for r in self.first.values())) * 1024
        added = self.peak - sum(r.established for r in self.first.values())
        return growth / added if added > 0 and growth > 0 else None

    def cpu_busy(self) -> float | None:
        """The share of the cores they had that the hold's processes used, or None: each
        process's own core where there are cores enough, else the cores they share."""
        if not self.latest or not any(self.cpu_us.values()):
            return None
        elapsed = sum(r.t for r in self.latest.values()) / len(self.latest)
        per_host = Counter(r.host for r in self.latest.values())
        cores = sum(min(n, self.host_cores.get(host, self.cores)) for host, n in per_host.items())
        return sum(self.cpu_us.values()) / 1e6 / (elapsed * cores) if elapsed else None

    def machine_busy(self) -> float | None:
        """How busy the CPUs the hold ran on were (mean share), whoever for."""
        return sum(self.cpus_busy) / len(self.cpus_busy) if self.cpus_busy else None

    def behind(self) -> str | None:
        """Why the client fell behind its connect schedule, or None if it kept it."""
        late = self.hists["lateness"]
        if not late.total:
            return None
        p95 = late.percentile(95) / 1000
        busy = self.cpu_busy()
        if p95 <= _LATE_MS and (busy is None or busy < 0.95):
            return None
        cpu = f", its processes used {busy * 100:.0f} % of their cores" if busy else ""
        machine = self.machine_busy()
        if machine is not None and machine >= _MACHINE_BUSY:
            # The kernel's work for the connects (softirq) is charged to no process: the
            # CPUs can be full while the hold's processes show a fraction of them.
            return (
                f"the client fell behind its connect schedule (p95 lateness {p95:,.0f} ms): "
                f"the CPUs it runs on were {machine * 100:.0f} % busy (its own processes "
                f"{(busy or 0) * 100:.0f} %, the rest the kernel's network work and other "
                "processes): to go further: more client machines or a lower --connect-rate"
            )
        if busy is not None and busy < 0.5:
            # Not the client's CPU: opens wait on the other end (at most _OPENING_MAX
            # under way per process), or the machine gives its CPU to other processes.
            return (
                f"connects started late against the plan (p95 {p95:,.0f} ms) while the "
                f"client's processes used only {busy * 100:.0f} % of their cores: each open "
                f"waited on the other end ({self._waited()}; at most {_OPENING_MAX:,} under "
                "way per process) or for a CPU the machine gave to other processes: look at "
                "the server side's accept rate and the machine's CPU, not at more client "
                "processes"
            )
        return (
            f"the client fell behind its connect schedule (p95 lateness {p95:,.0f} ms{cpu}): "
            "to go further: more --processes, more client machines or a lower --connect-rate"
        )

    def _waited(self) -> str:
        """The p99 of each wait of an open on the other end, in words."""
        parts = []
        for key, what in (("connect", "TCP connect"), ("tls", "TLS"), ("connack", "CONNACK")):
            hist = self.hists[key]
            if hist.total:
                parts.append(f"{what} p99 {hist.percentile(99) / 1000:,.0f} ms")
        return ", ".join(parts) or "no open finished"

    def summary(self) -> str:
        failures = self.failures_by_kind()
        planned = (
            f", planned {self.connections / self.connect_rate:,.0f} s at {self.connect_rate:,.0f}/s"
            if self.connect_rate
            else ""
        )
        lines = [
            f"peak established {self.peak:,} of {self.connections:,}"
            + (f", all established after {self.reached:.0f} s{planned}" if self.reached else "")
            + f"; lost {self.lost:,}"
            + (f", {self.gone:,} gone with a lost client machine" if self.gone else "")
            + (
                " (" + ", ".join(f"{k}: {v:,}" for k, v in self.lost_reasons().items()) + ")"
                if self.lost_reasons()
                else ""
            )
            + "; failures "
            + (", ".join(f"{k}: {v:,}" for k, v in failures.items()) or "none")
            + (f" ({self.retried:,} opens tried again)" if self.retried else "")
        ]
        for key, what in (
            ("connect", "TCP connect time (connect() to established)"),
            ("tls", "TLS handshake"),
            ("connack", "CONNACK latency (CONNECT to CONNACK)"),
            ("open", "open time (connect() to open in every layer)"),
            ("lateness", "connects started late against the plan by"),
        ):
            hist = self.hists[key]
            if hist.total:
                p50, p99 = hist.percentiles([50, 99])
                lines.append(
                    f"{what} p50 {p50 / 1000:.2f} ms, p99 {p99 / 1000:.2f} ms, "
                    f"max {hist.max / 1000:.2f} ms"
                )
        behind = self.behind()
        if behind:
            lines.append(behind)
        request = self.hists["request"]
        if request.total:
            p50, p99 = request.percentiles([50, 99])
            if self.scheme.ping == "request":  # answers with a status
                codes = ", ".join(f"{c}: {n:,}" for c, n in sorted(self.codes.items()))
                what = f"requests {request.total:,} ({codes}),"
            else:
                what = f"pings {request.total:,}, {self.scheme.ping} latency"
            lines.append(f"{what} p50 {p50 / 1000:.2f} ms, p99 {p99 / 1000:.2f} ms")
        if self.received:
            lines.append(f"messages received by the sessions: {self.received:,}")
        per = self.bytes_per_connection()
        grown = (self.rss_at_peak - sum(r.rss_kib for r in self.first.values())) / 1024
        noun = self.scheme.noun.removesuffix("s")
        lines.append(
            f"client RSS grew {max(0.0, grown):,.1f} MiB"
            + (f" ({per:,.0f} B per {noun})" if per else "")
        )
        for kind, sample in self.samples.items():
            lines.append(f"  {kind}: {sample}")
        return "\n".join(lines)
