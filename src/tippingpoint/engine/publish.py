"""One shard of an MQTT attack: sessions publishing at a constant rate (or a plan, or
closed-loop), with latency from each message's intended send time.

Hit ``n`` is due at ``start + pacer.time_of(n)``; this process publishes hits
``k, k+P, k+2P...``, dealt round-robin over its publishing sessions. A session holds at
most ``inflight`` unacknowledged QoS 1/2 messages; hits beyond that wait in the
session's queue, their latency clock running. Where latency ends is ``until``:

* ``ack``: the PUBACK (QoS 1) or PUBCOMP (QoS 2); at QoS 0, the write itself (there is
  no acknowledgement, so the figure is the generator's own lateness);
* ``echo``: the backend's pong (``serve --mqtt``) carrying the message back;
* ``delivery``: a subscriber of this process receiving it through the broker.

Echoed and delivered messages carry their hit number and intended send time in the
first 16 bytes of the payload, so any process on this machine can time them (the
monotonic clock is shared). Subscribers count duplicates and messages out of order;
messages neither delivered nor echoed by the end (or within ``--timeout``) are lost.
Records are the attack's :class:`~tippingpoint.stream.Interval`, so ``report`` and
``sweep`` read them as they read HTTP; a completed message counts as code 200.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import ssl
from collections import deque
from collections.abc import Callable
from time import monotonic_ns
from typing import Final

from tippingpoint import interrupt
from tippingpoint.engine.client import Pool, classify_error, client_socket
from tippingpoint.engine.intervals import IntervalClock
from tippingpoint.engine.mqtt import Session, expand, open_session, reason_text
from tippingpoint.engine.recorder import Recorder
from tippingpoint.engine.schedule import NEVER, ClosedPlan, Schedule, run_plan
from tippingpoint.engine.timer import Alarm
from tippingpoint.engine.tls import make_ssl_context
from tippingpoint.model import STAMP, AttackConfig, Shard
from tippingpoint.stream import Interval
from tippingpoint.wire import mqtt as m

__all__ = ["Publisher", "start_delay"]

_STAMP: Final = STAMP
_TICKS: Final = ((10_000, 250_000),)
"""The pacing loop's tick (see :data:`tippingpoint.engine.schedule.TICKS`)."""
_SWEEP_S: Final = 0.1
_ABSORB_S: Final = 0.05
_OPENING: Final = 64
"""Sessions opened at once, per process."""
_STOP_GRACE_S: Final = 2.0


def _share(total: int, index: int, count: int) -> int:
    return total // count + (1 if index < total % count else 0)


class Publisher:
    """An attack's shard of MQTT sessions: publishers, and subscribers where delivery is
    measured."""

    @staticmethod
    def connections(config: AttackConfig) -> int | None:
        """The sessions the whole attack holds: a fixed set."""
        pub = config.mqtt
        assert pub is not None
        return config.connections + pub.subscribers

    def __init__(
        self,
        config: AttackConfig,
        shard: Shard,
        emit: Callable[[Interval], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        pub = config.mqtt
        assert pub is not None
        self.config = config
        self.pub = pub
        self.shard = shard
        self.emit = emit
        self.loop = loop
        self.rec = Recorder(shard.index, shard.start_ns)
        target = config.targets[0]
        ctx = make_ssl_context(config.tls) if target.origin.tls else None
        self.pool = Pool(target.origin, ctx, config.tls.server_name)
        self.pool.handshake_s = min(self.pool.handshake_s, config.timeout)
        self.version = pub.options.version
        count = shard.count
        self.nsessions = max(1, _share(config.connections, shard.index, count))
        self.nsubs = _share(pub.subscribers, shard.index, count) if pub.subscribers else 0
        if pub.until == "delivery":
            self.nsubs = max(1, self.nsubs)
        self.sessions: list[Session | None] = [None] * self.nsessions
        self.subs: list[Session | None] = [None] * self.nsubs
        self.topics = [
            expand(pub.topic, shard.index + k * count, shard.index) for k in range(self.nsessions)
        ]
        props: m.Properties | None = None
        self.templates = [
            m.PublishTemplate(t, pub.payload_size, pub.qos, self.version, pub.retain, props)
            for t in self.topics
        ]
        self.stamp = pub.until != "ack"
        self.padding = bytes(pub.payload_size - _STAMP.size if self.stamp else pub.payload_size)
        window = pub.inflight if pub.qos else NEVER
        self.windows = [window] * self.nsessions
        """Per session: --inflight, or less where the broker's receive maximum says so."""
        self.inflight: list[dict[int, tuple[int, int, int]]] = [{} for _ in range(self.nsessions)]
        """Per session: packet id -> (hit, intended ns, sent ns) until its PUBACK/PUBCOMP."""
        self.queues: list[deque[tuple[int, int]]] = [deque() for _ in range(self.nsessions)]
        """Per session: hits waiting for room in its window (hit, intended ns)."""
        self.down: list[tuple[str, str] | None] = [None] * self.nsessions
        """Per session: why it could not open (its hits fail at once until it does)."""
        self._reopening: set[asyncio.Task[None]] = set()
        """Sessions opening again after a close: cancelled if the run ends first."""
        self.waiting: dict[int, int] = {}
        """Echo/delivery: hit -> sent ns, until the echo or the delivery."""
        self.waiting_order: deque[tuple[int, int]] = deque()
        self.seen = bytearray()
        """Delivery: one byte per local hit, set once delivered (duplicates)."""
        self.last_seq = [-1] * self.nsessions
        """Delivery: per publishing session, the last hit delivered (out of order)."""
        self.duplicates = 0
        self.out_of_order = 0
        self._timeout_ns = int(config.timeout * 1e9)
        self._start = shard.start_ns
        self._stopping = False
        self._plan_done = False
        self._draining = False
        self._done = asyncio.Event()
        self._in_flight = 0
        self._intervals = IntervalClock(
            self.rec, loop, shard.start_ns, config.interval, self._state, self._emit
        )
        self._plan(config, count)
        self._closed = ClosedPlan(
            config.requests, config.duration, shard.start_ns, shard.index, shard.count
        )

    def _plan(self, config: AttackConfig, count: int) -> None:
        """The schedule of this shard's hits (every ``count``-th from its index)."""
        self._step = count
        self._pacer = pacer = config.pacer() if not config.closed else None
        self._schedule = None
        if pacer is None:
            return
        total = pacer.total_hits()
        if total is not None and self.pub.until == "delivery":
            self.seen = bytearray(total // count + 2)
        loop = self.loop
        self._schedule = Schedule(
            pacer,
            self.shard.start_ns,
            self.shard.index,
            count,
            self._dispatch,
            self._plan_ended,
            self._missed,
            lambda pump: Alarm(loop, pump),
            loop.call_soon,
            ticks=self.config.ticks(_TICKS),
        )

    def _plan_ended(self) -> None:
        self._plan_done = True
        self._check_done()

    def _missed(self, count: int) -> None:
        """Sends the schedule could not make in time. When no session could open, they
        were never the generator's to make: they fail with the sessions' reason (the
        opening, bounded by the handshake limit, ran past their time)."""
        down = self.down[0] if not self.rec.opened else None
        if down is None:
            self.rec.missed += count
            return
        rec = self.rec
        rec.error(*down, count)
        rec.done += count
        rec.codes[0] += count
        rec.last_done_ns = monotonic_ns()

    # Running

    async def run(self) -> None:
        loop = self.loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        if interrupt.requested():  # before the loop had the signals
            self.stop()
        await self._open_all()
        self._intervals.start()
        loop.call_later(_SWEEP_S, self._sweep)
        loop.call_later(_ABSORB_S, self._absorb)
        await run_plan(self._schedule, self._start, self._start_closed, self._done)
        self._finish_waiting()
        for task in list(self._reopening):
            task.cancel()
        if self._reopening:
            await asyncio.gather(*self._reopening, return_exceptions=True)
        for session in [*self.sessions, *self.subs]:
            if session is not None:
                session.close()
        await asyncio.sleep(0)
        self._intervals.finish(interrupted=self._stopping)

    async def _open_all(self) -> None:
        """Subscribers first, one after the other (subscribed before anything is
        published; and a proxy that keeps a user name's sessions on one broker with a
        stick table learns that broker from the first), then the publishing sessions, at
        most 64 opening at once."""
        gate = asyncio.Semaphore(_OPENING)
        for k in range(self.nsubs):
            await self._open(gate, k, True)
        await asyncio.gather(*(self._open(gate, k, False) for k in range(self.nsessions)))

    async def _open(self, gate: asyncio.Semaphore, k: int, subscriber: bool) -> None:
        options = self.pub.options
        shard = self.shard
        count = shard.count
        if subscriber:
            client_id = expand(options.client_id, shard.index + k * count, shard.index) + "-sub"
            filters = [(t, self.pub.qos) for i, t in enumerate(self.topics) if i % self.nsubs == k]
            subscribe = m.encode_subscribe(1, filters, self.version) if filters else None
        else:
            client_id = expand(options.client_id, shard.index + k * count, shard.index)
            subscribe = None
        connect = options.connect_packet(client_id)
        async with gate:
            t0 = monotonic_ns()
            sock = None
            try:
                sock = client_socket(self.pool.family, self._laddr(k))
                async with asyncio.timeout(self.config.timeout):
                    await self.loop.sock_connect(sock, self.pool.addr)
                connected, sock = sock, None
                # Past the connect, each layer's opening has its own limit (HANDSHAKE_S).
                session, _, _ = await open_session(
                    self.loop,
                    self,
                    self.pool,
                    connected,
                    self.version,
                    connect,
                    subscribe,
                    k if not subscriber else -1 - k,
                    ws_path=self.pub.options.ws_path,
                )
            except (OSError, ssl.SSLError, TimeoutError) as e:
                if sock is not None:
                    sock.close()
                self._session_failed(e, k, subscriber)
                return
            except Exception as e:
                if not hasattr(e, "kind"):
                    raise
                self._session_failed(e, k, subscriber)
                return
        self.rec.opened += 1
        self.rec.connect.append(monotonic_ns() - t0)
        if subscriber:
            self.subs[k] = session
        else:
            self.sessions[k] = session
            self.down[k] = None
            if self.pub.qos:
                self.windows[k] = min(self.pub.inflight, session.send_quota)
            self._drain(k)

    def _laddr(self, k: int) -> str | None:
        laddrs = self.shard.laddrs
        return laddrs[k % len(laddrs)] if laddrs else None

    def _session_failed(self, exc: BaseException, k: int, subscriber: bool) -> None:
        """A session could not open: counted once as a session error; a publishing
        session's waiting hits, and those that come its way while it is down, fail at once
        with its reason (not after --timeout, as if the server were slow)."""
        kind, message = classify_error(exc)
        self.rec.error(
            f"session-{kind}" if not kind.startswith(("connack", "subscribe")) else kind, message
        )
        if subscriber:
            return
        self.down[k] = (kind, f"no session: {message}")
        queue = self.queues[k]
        while queue:
            queue.popleft()
            self._failed(kind, f"no session: {message}")
        self._check_done()

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._closed.stop()
        for queue in self.queues:
            for _ in queue:
                self._failed("interrupted", "stopped before this message could be sent")
            queue.clear()
        if self._schedule is not None:
            self._schedule.stop()
        self.loop.call_later(_STOP_GRACE_S, self._done.set)
        self._check_done()

    def _check_done(self) -> None:
        if (
            (self._plan_done or self._stopping)
            and not self._in_flight
            and not self.waiting
            and not any(self.queues)
        ):
            self._done.set()

    # Pacing

    def _dispatch(self, n: int, intended: int, now: int) -> None:
        self.rec.lateness.append(now - intended)
        k = (n // self._step) % self.nsessions
        session = self.sessions[k]
        down = self.down[k]
        if session is None and down is not None:
            self._failed(*down)
            return
        if session is None or not session.open or len(self.inflight[k]) >= self.windows[k]:
            self.queues[k].append((n, intended))
            self.rec.queued += 1
            return
        self._publish(session, k, n, intended, now)

    def _publish(self, session: Session, k: int, n: int, intended: int, now: int) -> None:
        pub = self.pub
        template = self.templates[k]
        rec = self.rec
        rec.sent += 1
        if rec.first_send_ns < 0:
            rec.first_send_ns = now
        rec.last_send_ns = now
        rec.bytes_out += pub.payload_size
        payload = (
            _STAMP.pack(n, intended - self._start) + self.padding if self.stamp else self.padding
        )
        if pub.qos:
            pid = session.packet_id()
            self.inflight[k][pid] = (n, intended, now)
            self._in_flight += 1
            session.out(template.head + pid.to_bytes(2, "big") + template.mid + payload)
        else:
            session.out(template.head + template.mid + payload)
        if self.stamp:
            self.waiting[n] = now
            self.waiting_order.append((n, now))
        elif not pub.qos:  # QoS 0 until ack: done once written
            self._complete(now, intended, now)
            if self._pacer is None:
                self._next_closed(k, now)

    # Completions

    def _complete(self, now: int, intended: int, sent: int) -> None:
        rec = self.rec
        rec.done += 1
        rec.codes[200] += 1
        rec.last_done_ns = now
        if intended == sent:
            rec.same3.append(now - sent)
        else:
            rec.same2.append(now - sent)
            rec.latency.append(now - intended)

    def _failed(self, kind: str, message: str) -> None:
        rec = self.rec
        rec.error(kind, message)
        rec.done += 1
        rec.codes[0] += 1
        rec.last_done_ns = monotonic_ns()

    def on_ack(self, conn: Session, packet_id: int, now: int, reason: int) -> None:
        k = conn.index
        entry = self.inflight[k].pop(packet_id, None)
        if entry is None:
            return  # after its timeout
        self._in_flight -= 1
        n, intended, sent = entry
        if reason >= 0x80:
            kind = "puback-refused" if self.pub.qos == 1 else "pubrec-refused"
            self._failed(kind, f"the broker refused message {n}: {reason_text(reason)}")
            self.waiting.pop(n, None)
        elif not self.stamp:
            self._complete(now, intended, sent)
            if self._pacer is None:
                self._next_closed(k, now)
        if self.queues[k]:
            self._drain(k)
        if self._plan_done or self._stopping:
            self._check_done()

    def on_message(self, conn: Session, packet: m.Publish, now: int) -> None:
        payload = packet.payload
        self.rec.bytes_in += len(payload)
        if self.pub.until == "echo":
            if not payload.startswith(b"pong") or len(payload) < 4 + _STAMP.size:
                return
            n, offset = _STAMP.unpack_from(payload, 4)
        else:
            if len(payload) < _STAMP.size:
                return
            n, offset = _STAMP.unpack_from(payload)
            j = n // self._step
            seen = self.seen
            if j < len(seen):
                if seen[j]:
                    self.duplicates += 1
                    return
                seen[j] = 1
            k = j % self.nsessions
            if j < self.last_seq[k]:
                self.out_of_order += 1
            else:
                self.last_seq[k] = j
        sent = self.waiting.pop(n, None)
        if sent is None:
            if self.pub.until == "echo":
                self.duplicates += 1
            return  # after its timeout (counted lost then)
        self._complete(now, self._start + offset, sent)
        if self._pacer is None and self.pub.until == "echo":
            self._next_closed(conn.index, now)
        if self._plan_done or self._stopping:
            self._check_done()

    def on_response(
        self, conn: Session, now: int, status: int, body_bytes: int, keep_alive: bool
    ) -> None:
        pass  # no pings are timed here

    def on_error(self, conn: Session, exc: BaseException) -> None:
        kind, message = classify_error(exc)
        self.rec.error(kind, message)

    def on_closed(self, conn: Session, pool: Pool) -> None:
        k = conn.index
        if k < 0 or self.sessions[k] is not conn:
            if k < 0 and self.subs[-1 - k] is conn and not self._stopping:
                self.subs[-1 - k] = None
                self.rec.closed += 1
            return
        self.sessions[k] = None
        self.rec.closed += 1
        reason = conn.disconnect_reason
        why = f" ({reason_text(reason)})" if reason is not None else ""
        for _ in self.inflight[k].values():
            self._in_flight -= 1
            self._failed("reset", f"the session closed before its acknowledgement{why}")
        self.inflight[k].clear()
        if self.pub.until == "echo" and self.waiting:
            # The echo comes back on the session it was sent on: closed, it never will.
            gone = [n for n in self.waiting if (n // self._step) % self.nsessions == k]
            for n in gone:
                del self.waiting[n]
                self._failed("reset", f"the session closed before its echo{why}")
        if not self._stopping and not self._done.is_set():
            gate = asyncio.Semaphore(1)
            task = self.loop.create_task(self._open(gate, k, False))
            self._reopening.add(task)  # cancelled at the end if still opening
            task.add_done_callback(self._reopening.discard)
        self._check_done()

    # Queues, closed model, timeouts

    def _drain(self, k: int) -> None:
        queue = self.queues[k]
        session = self.sessions[k]
        if session is None:
            return
        inflight = self.inflight[k]
        now = monotonic_ns()
        window = self.windows[k]
        while queue and session.open and len(inflight) < window:
            n, intended = queue.popleft()
            self._publish(session, k, n, intended, now)

    def _start_closed(self) -> None:
        now = monotonic_ns()
        per_session = self.pub.inflight if self.pub.qos else 1
        for k in range(self.nsessions):
            for _ in range(per_session):
                if not self._next_closed(k, now, True):
                    break
        if self._closed.left <= 0:
            self._plan_done = True
            self._check_done()

    def _next_closed(self, k: int, now: int, first: bool = False) -> bool:
        """Closed model: the session's next message, once the last one completed."""
        closed = self._closed
        if self._stopping or closed.left <= 0 or now >= closed.end_ns:
            self._plan_done = True
            return False
        session = self.sessions[k]
        if session is None or not session.open:
            return False
        closed.left -= 1  # ClosedPlan.take, inline: once per message of --rate 0
        n = closed.n
        closed.n = n + self._step
        if not self.pub.qos and not self.stamp and not first:
            # QoS 0 until ack completes on write: yield to the loop between messages.
            self.loop.call_soon(self._publish, session, k, n, now, now)
            return True
        self._publish(session, k, n, now, now)
        return True

    def _sweep(self) -> None:
        if self._done.is_set():
            return
        now = monotonic_ns()
        limit = now - self._timeout_ns
        for k, inflight in enumerate(self.inflight):
            # Packet ids enter a session's dict in send order: the oldest is first, and
            # the scan stops at the first one still within --timeout.
            expired = 0
            for pid, (n, _, sent) in list(itertools.islice(inflight.items(), 64)):
                if sent >= limit:
                    break
                del inflight[pid]
                expired += 1
                self._in_flight -= 1
                self.waiting.pop(n, None)
                self._failed("timeout", "no acknowledgement within --timeout")
            queue = self.queues[k]
            while queue and queue[0][1] < limit:
                queue.popleft()
                self._failed("timeout", "waited --timeout for room in the session's window")
            if expired:
                self._drain(k)
        self._expire_waiting(limit)
        self._check_done()
        self.loop.call_later(_SWEEP_S, self._sweep)

    def _expire_waiting(self, limit: int) -> None:
        order = self.waiting_order
        waiting = self.waiting
        what = "delivered" if self.pub.until == "delivery" else "echoed"
        while order and order[0][1] < limit:
            n, _ = order.popleft()
            if waiting.pop(n, None) is not None:
                self._failed("lost", f"not {what} within --timeout")

    def _finish_waiting(self) -> None:
        """At the end: what is still waiting for its echo or delivery is lost."""
        self._expire_waiting(NEVER)
        rec = self.rec
        if self.duplicates:
            rec.errors["duplicate"] = [self.duplicates, "delivered more than once"]
        if self.out_of_order:
            rec.errors["out-of-order"] = [
                self.out_of_order,
                "delivered after a later message of the same session",
            ]

    def _absorb(self) -> None:
        if self._done.is_set():
            return
        self.rec.absorb()
        self.loop.call_later(_ABSORB_S, self._absorb)

    def _state(self) -> tuple[int, int]:
        open_sessions = sum(1 for s in self.sessions if s is not None and s.open)
        return open_sessions, self._in_flight + len(self.waiting)

    def _emit(self, record: Interval) -> None:
        self.emit(record)


def start_delay(config: AttackConfig, processes: int) -> float:
    """Seconds to allow before time zero for a process to open its sessions."""
    pub = config.mqtt
    if pub is None:
        return 0.0
    sessions = math.ceil((config.connections + pub.subscribers) / max(1, processes))
    per_second = 700 if config.targets[0].origin.tls else 3000
    return sessions / per_second
