"""One shard of an attack on one event loop: the pacing loop, connection pools, intervals.

Open model (a rate or a pace plan): hit ``n`` is due at ``start + pacer.time_of(n)``;
this process sends hits ``k, k+P, k+2P...``. Due hits go to an idle keep-alive
connection, else to a new connection while under the connection cap, else they wait
in a queue, their latency clock running. Closed model (rate 0): each connection sends
its next request as soon as the last response has arrived.
"""

from __future__ import annotations

import asyncio
import math
import signal
import ssl
from collections.abc import Callable
from time import monotonic_ns
from typing import Final

from tippingpoint import interrupt
from tippingpoint.engine.client import ClientConn, Pool, classify_error, client_socket
from tippingpoint.engine.intervals import IntervalClock
from tippingpoint.engine.layers import encode_hit, new_pool, pool_key
from tippingpoint.engine.recorder import Recorder
from tippingpoint.engine.results import ResultWriter
from tippingpoint.engine.schedule import TICKS, ClosedPlan, Schedule, run_plan
from tippingpoint.engine.timer import Alarm
from tippingpoint.engine.tls import TLSClientConn, make_ssl_context, open_conn
from tippingpoint.hdr import Histogram
from tippingpoint.model import AttackConfig, Shard
from tippingpoint.stream import Interval
from tippingpoint.targets import Origin

__all__ = ["Engine"]

_SWEEP_S: Final = 0.1
_ABSORB_S: Final = 0.05
_STOP_GRACE_S: Final = 2.0
# Connection growth. Opening a connection costs the loop far more than a request on
# an open one, so when every connection is busy the pool grows by at most an eighth
# (at least 8) per 10 ms, with at most 64 connects under way; hits beyond that wait
# for the first connection to free up or to open. A stall (a GC pass, a busy
# machine) then cannot turn into a storm of connects that starves the schedule,
# while a workload that holds connections (long `sleep`) still grows quickly:
# x1.125 per 10 ms is x100 in 0.4 s. With --no-keepalive there is no pool to grow: each
# hit opens its own connection, limited only by the 64 connects under way.
_MAX_CONNECTING: Final = 64
_GROWTH_WINDOW_NS: Final = 10_000_000
# Hits waiting for a connection, per pool. Past it a hit fails at once (queue-full): the
# connections are all busy (the server's pace, or --max-connections) and a rate beyond
# anything they carry would otherwise fill memory with waiting hits (--rate 1e9: 430 MB in
# 10 s). 100,000 is 2 s of waiting at 50,000/s, and 8 MB.
_QUEUE_MAX: Final = 100_000


class _QueueFull(ConnectionError):
    kind = "queue-full"


_QUEUE_FULL: Final = _QueueFull(
    f"{_QUEUE_MAX:,} hits already waited for a connection: the connections are all busy "
    "(raise --max-connections, or the server is the limit)"
)


class Engine:
    """An attack's shard of requests or WebSocket messages."""

    @staticmethod
    def connections(config: AttackConfig) -> int | None:
        """The connections the whole attack may hold (None: as many as it needs)."""
        if config.closed:
            return max(config.max_connections or 0, config.connections)
        return config.max_connections

    def __init__(
        self,
        config: AttackConfig,
        shard: Shard,
        emit: Callable[[Interval], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.shard = shard
        self.emit = emit
        self.loop = loop
        self.rec = Recorder(shard.index, shard.start_ns)
        ctx = make_ssl_context(config.tls) if any(t.origin.tls for t in config.targets) else None
        pools: dict[tuple[Origin, str], Pool] = {}
        self._pools = pools
        self._target_pool: list[Pool] = []
        self._requests: list[bytes] = []
        self._heads: list[bool] = []
        self._body_lens: list[int] = []
        for target in config.targets:
            key = pool_key(target)
            pool = pools.get(key)
            if pool is None:
                pool = new_pool(target, ctx, config.tls.server_name, config.tls.resume)
                pool.handshake_s = min(pool.handshake_s, config.timeout)
                pools[key] = pool
            self._target_pool.append(pool)
            self._requests.append(encode_hit(target, config.keepalive))
            self._heads.append(target.method == "HEAD")
            self._body_lens.append(len(target.body))
        self._ntargets = len(config.targets)
        self._single = self._ntargets == 1
        self._open = 0  # connections open or being opened
        self._max_conns = shard.max_connections
        self._laddrs = shard.laddrs
        self._laddr_i = 0
        self._in_flight = 0
        self._keepalive = config.keepalive
        self._budget = 0
        self._budget_at = 0
        self._drain_armed = False
        self._connecting = 0
        self._timeout_ns = int(config.timeout * 1e9)
        self._start = shard.start_ns
        self._stopping = False
        self._plan_done = False
        self._done = asyncio.Event()
        self._intervals = IntervalClock(
            self.rec, loop, shard.start_ns, config.interval, self._state, self._emit
        )
        self._results = (
            ResultWriter(config.records, shard.start_ns, shard.start_epoch)
            if config.records
            else None
        )
        # Open model
        self._pacer = pacer = config.pacer() if not config.closed else None
        self._schedule = (
            Schedule(
                pacer,
                shard.start_ns,
                shard.index,
                shard.count,
                self._dispatch,
                self._plan_ended,
                self._missed,
                lambda pump: Alarm(loop, pump),
                loop.call_soon,
                ticks=config.ticks(TICKS),
            )
            if pacer is not None
            else None
        )
        # Closed model
        self._closed = ClosedPlan(
            config.requests, config.duration, shard.start_ns, shard.index, shard.count
        )

    # Running

    async def run(self) -> None:
        loop = self.loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        if interrupt.requested():  # before the loop had the signals
            self.stop()
        self._intervals.start()
        loop.call_later(_SWEEP_S, self._sweep)
        loop.call_later(_ABSORB_S, self._absorb)
        # Run numpy's code paths once now, not in the first interval.
        self.rec.latency.append(1000)
        self.rec.absorb()
        self.rec.hists["latency"] = Histogram()
        if self._pacer is not None and self._keepalive:
            await self._warm_up()
        await run_plan(self._schedule, self._start, self._start_closed, self._done)
        for pool in self._pools.values():
            for conn in list(pool.conns):
                conn.close()
        await asyncio.sleep(0)
        self._intervals.finish(interrupted=self._stopping)
        if self._results is not None:
            self._results.close()

    async def _warm_up(self) -> None:
        """Open the connections the schedule will need at once, before it starts.

        About 2 ms worth of the peak rate: without them the first hits each open a
        connection while more keep coming due."""
        assert self._schedule is not None
        want = math.ceil(self._schedule.per_process * 0.002)
        want = max(2, min(want, 256, self._max_conns))
        pools = list(self._pools.values())
        tasks = [self._connect(pools[i % len(pools)], -1, 0) for i in range(want)]
        timeout = max((self._start - monotonic_ns()) / 1e9, 0.05)
        await asyncio.wait(tasks, timeout=timeout)

    def stop(self) -> None:
        """Stop sending; wait briefly for responses in flight, then end."""
        if self._stopping:
            return
        self._stopping = True
        if self._schedule is not None:
            self._schedule.stop()
        self._closed.stop()
        for pool in self._pools.values():
            for _, _, _ in pool.queue:
                self.rec.error("interrupted", "stopped before this request could be sent")
                self.rec.codes[0] += 1
                self.rec.done += 1
            pool.queue.clear()
        self.loop.call_later(_STOP_GRACE_S, self._abort_all)
        self._check_done()

    def _busy_conns(self) -> list[ClientConn]:
        return [c for pool in self._pools.values() for c in pool.conns if c.busy]

    def _abort_all(self) -> None:
        for conn in self._busy_conns():
            conn.timeout()
        self._done.set()

    def _check_done(self) -> None:
        if (
            (self._plan_done or self._stopping)
            and not self._in_flight
            and not self._connecting
            and all(not pool.queue for pool in self._pools.values())
        ):
            self._done.set()

    # Open model

    def _plan_ended(self) -> None:
        self._plan_done = True
        self._check_done()

    def _missed(self, count: int) -> None:
        self.rec.missed += count

    def _dispatch(self, n: int, intended: int, now: int) -> None:
        ti = n % self._ntargets
        # Lateness is the pacing loop's delay in taking the hit up. Waiting for a free
        # connection afterwards counts in the latency, not here: it is what a slow
        # server (or the --max-connections cap) does, not the generator's CPU.
        self.rec.lateness.append(now - intended)
        pool = self._target_pool[ti]
        idle = pool.idle
        while idle:
            conn = idle.pop()
            if conn.open:
                self._send(conn, ti, intended, now)
                return
        if self._may_connect(now):
            self._connect(pool, ti, intended)
        elif len(pool.queue) < _QUEUE_MAX:
            pool.queue.append((ti, intended, now))
            self.rec.queued += 1
        else:
            self._request_failed(_QUEUE_FULL)

    def _may_connect(self, now: int) -> bool:
        if self._open >= self._max_conns or self._connecting >= _MAX_CONNECTING:
            return False
        if not self._keepalive:
            # A connection per request: each hit is its own connect, so there is no pool
            # to grow gradually; the growth budget (8 per 10 ms with few connections
            # open) capped such runs near 800/s.
            return True
        if now - self._budget_at >= _GROWTH_WINDOW_NS:
            self._budget = max(8, self._open // 8)
            self._budget_at = now
        if self._budget > 0:
            self._budget -= 1
            return True
        if not self._drain_armed:
            self._drain_armed = True
            self.loop.call_later(_GROWTH_WINDOW_NS / 1e9, self._drain_all)
        return False

    def _drain_all(self) -> None:
        self._drain_armed = False
        for pool in self._pools.values():
            self._drain(pool)

    def _send(self, conn: ClientConn, ti: int, intended: int, now: int) -> None:
        rec = self.rec
        rec.sent += 1
        if rec.first_send_ns < 0:
            rec.first_send_ns = now
        rec.last_send_ns = now
        rec.bytes_out += self._body_lens[ti]
        self._in_flight += 1
        conn.send(self._requests[ti], intended, self._heads[ti], now, ti)

    # Closed model

    def _start_closed(self) -> None:
        conns = min(self.shard.closed_connections, self._closed.left)
        if conns <= 0:
            self._plan_done = True
            self._check_done()
            return
        for _ in range(conns):
            self._closed_hit(None, monotonic_ns())

    def _closed_hit(self, conn: ClientConn | None, now: int) -> bool:
        """Send the next closed-model request on ``conn`` (or a new connection)."""
        n = -1 if self._stopping else self._closed.take(now)
        if n < 0:
            self._plan_done = True
            return False
        ti = n % self._ntargets
        if conn is not None and conn.pool is self._target_pool[ti]:
            self._send(conn, ti, now, now)
        else:
            if conn is not None:
                conn.close()
            self._connect(self._target_pool[ti], ti, now)
        return True

    # Connections

    def _connect(self, pool: Pool, ti: int, intended: int) -> asyncio.Task[None]:
        """Open a connection for hit ``ti`` (-1: none, the connection goes idle)."""
        self._open += 1
        self._connecting += 1
        return self.loop.create_task(self._open_conn(pool, ti, intended))

    async def _open_conn(self, pool: Pool, ti: int, intended: int) -> None:
        t0 = monotonic_ns()
        sock = None
        try:
            laddr = None
            if self._laddrs:
                laddr = self._laddrs[self._laddr_i % len(self._laddrs)]
                self._laddr_i += 1
            sock = client_socket(pool.family, laddr)
            async with asyncio.timeout(self.config.timeout):
                await self.loop.sock_connect(sock, pool.addr)
            connected, sock = sock, None  # open_conn closes it if it fails
            conn = await open_conn(self.loop, self, pool, connected)  # each layer's own limit
        except (OSError, ssl.SSLError, TimeoutError) as e:
            self._connecting -= 1
            self._open -= 1
            if sock is not None:
                sock.close()
            if ti < 0:
                return  # a warm-up connection: no request lost; the hits will say why
            self._request_failed(e)
            self._drain(pool)
            self._check_done()
            return
        self._connecting -= 1
        now = monotonic_ns()
        rec = self.rec
        rec.opened += 1
        rec.connect.append(now - t0)
        if isinstance(conn, TLSClientConn) and conn.resumed:
            rec.tls_resumed += 1
        pool.conns.add(conn)
        if self._stopping:
            conn.close()
            self._check_done()
            return
        if ti < 0:
            pool.idle.append(conn)
            return
        self._send(conn, ti, intended, now)
        self._drain(pool)

    def _drain(self, pool: Pool) -> None:
        """Give queued hits to free capacity."""
        while (
            len(pool.queue) > self._connecting
            and not self._stopping
            and self._may_connect(monotonic_ns())
        ):
            ti, intended, _ = pool.queue.popleft()
            self._connect(pool, ti, intended)

    # Called by connections

    def on_response(
        self, conn: ClientConn, now: int, status: int, body_bytes: int, keep_alive: bool
    ) -> None:
        rec = self.rec
        rec.done += 1
        rec.codes[status] += 1
        sent = conn.sent_ns
        if conn.first_byte_ns == now:  # one read: ttfb = service (see recorder.py)
            if conn.intended_ns == sent:
                rec.same3.append(now - sent)
            else:
                rec.same2.append(now - sent)
                rec.latency.append(now - conn.intended_ns)
        else:
            rec.latency.append(now - conn.intended_ns)
            rec.service.append(now - sent)
            rec.ttfb.append(conn.first_byte_ns - sent)
        rec.bytes_in += body_bytes
        rec.last_done_ns = now
        if self._results is not None:
            self._result(conn, now, status, body_bytes, "")
        self._in_flight -= 1
        if keep_alive and self._keepalive and not conn.eof:
            if self._pacer is None:
                if self._single:
                    # Closed model, one target: the next request on this connection
                    # (the plan's count and end read here: the hot path of --rate 0).
                    closed = self._closed
                    if closed.left > 0 and now < closed.end_ns:
                        closed.left -= 1
                        self._send(conn, 0, now, now)
                        return
                    self._plan_done = True
                else:
                    self._closed_hit(conn, now)
            else:
                queue = conn.pool.queue
                if queue and not self._stopping:
                    ti, intended, _ = queue.popleft()
                    self._send(conn, ti, intended, now)
                else:
                    conn.pool.idle.append(conn)
                schedule = self._schedule
                if schedule is not None and schedule.next_due <= now:
                    schedule.pump()
        elif self._pacer is None:
            self._closed_hit(None, now)
        if self._plan_done or self._stopping:
            self._check_done()

    def on_error(self, conn: ClientConn, exc: BaseException) -> None:
        self._in_flight -= 1
        self._request_failed(exc)
        if self._results is not None:
            self._result(conn, monotonic_ns(), 0, 0, classify_error(exc)[1])
        self._check_done()

    def _request_failed(self, exc: BaseException) -> None:
        rec = self.rec
        kind, message = classify_error(exc)
        rec.error(kind, message)
        rec.done += 1
        rec.codes[0] += 1
        rec.last_done_ns = monotonic_ns()
        if self._pacer is None:
            self._closed_hit(None, monotonic_ns())

    def on_closed(self, conn: ClientConn, pool: Pool) -> None:
        if conn in pool.conns:
            pool.conns.discard(conn)
            self._open -= 1
            self.rec.closed += 1
        self._drain(pool)
        self._check_done()

    # Timers

    def _sweep(self) -> None:
        if self._done.is_set():
            return
        now = monotonic_ns()
        limit = now - self._timeout_ns
        for conn in [c for c in self._busy_conns() if c.sent_ns < limit]:
            conn.timeout()
        for pool in self._pools.values():
            queue = pool.queue
            while queue and queue[0][1] < limit:
                queue.popleft()
                self._request_failed(TimeoutError("waited --timeout for a free connection"))
        self._check_done()
        self.loop.call_later(_SWEEP_S, self._sweep)

    def _absorb(self) -> None:
        if self._done.is_set():
            return
        self.rec.absorb()
        self.loop.call_later(_ABSORB_S, self._absorb)

    def _state(self) -> tuple[int, int]:
        return self._open, self._in_flight

    def _emit(self, record: Interval) -> None:
        self.emit(record)
        if self._results is not None:
            self._results.flush()

    def _result(self, conn: ClientConn, now: int, code: int, body: int, error: str) -> None:
        assert self._results is not None
        target = self.config.targets[conn.ti]
        self._results.add(target, conn.intended_ns, now - conn.intended_ns, code, body, error)
