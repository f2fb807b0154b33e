"""The live page's server: aiohttp, in a thread of the command's own process.

aiohttp because it is asyncio's own HTTP server and client, kept up for a decade, with
server-sent streams (``StreamResponse``), file responses and middlewares built in, and
it needs no second event loop framework; the commands already run asyncio (uvloop) in
their load's processes. The server's thread runs at a lower priority than the command's
(nice +10) and wherever the command placed its process: it never takes the system under
test's cores.

Routes: ``/`` the page, ``/events`` its stream of updates (the newest at once, then one
a second at most while the run changes, built once for every viewer), ``/metrics``
(Prometheus text, rebuilt at most once a second) and ``/report/...`` (files of the
report directory only). With a token, every request needs it (``?token=`` or
``Authorization: Bearer``).
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import web

from tippingpoint.web.feed import LiveFeed
from tippingpoint.web.metrics import render_metrics
from tippingpoint.web.page import page_html, update

__all__ = ["THREAD_NAME", "WebServer"]

_PERIOD_S: Final = 1.0
THREAD_NAME: Final = "tp-web"
_NICE: Final = 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebServer:
    """Serves ``feed`` on ``host:port`` (0: a free port) until :meth:`stop`."""

    def __init__(
        self,
        feed: LiveFeed,
        host: str,
        port: int,
        token: str | None = None,
        report_dir: Path | None = None,
    ) -> None:
        self.feed = feed
        self.host = host
        self.port = port
        self.token = token
        self.report_dir = report_dir.resolve() if report_dir is not None else None
        self._page = page_html(feed.title)
        self._update: tuple[int, bytes, bool] = (-1, b"", False)
        self._metrics: tuple[float, int, str] = (-1.0, -1, "")
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{host}:{self.port}/{query}"

    def start(self) -> str:
        """Bind and serve; the page's URL. OSError when the address cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="tippingpoint-web", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.url

    def stop(self) -> None:
        """Send the last update to every viewer, then close (within a few seconds)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- the server's thread ---------------------------------------------------------
    def _run(self) -> None:
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, _NICE)
            # Named in /proc (comm), so that its CPU and its placement can be read back.
            Path(f"/proc/self/task/{tid}/comm").write_text(THREAD_NAME)
        except OSError:
            pass
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # the bind's error goes to start()
            self._error = e
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._changed = asyncio.Condition()
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/events", self._events)
        app.router.add_get("/metrics", self._metrics_text)
        app.router.add_get("/report/{tail:.*}", self._report_file)
        app.router.add_get("/favicon.ico", self._no_icon)  # the report's page asks for it
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._ready.set()
            await self._publish()
        finally:
            await runner.cleanup()

    async def _publish(self) -> None:
        """Build one update a second while the feed changes, for every viewer at once."""
        assert self._changed is not None and self._stop is not None
        while True:
            stopping = self._stop.is_set()
            if self.feed.version != self._update[0] or stopping:
                state = self.feed.state()
                body = await asyncio.to_thread(update, state)
                self._update = (state.version, body, bool(state.ended))
                async with self._changed:
                    self._changed.notify_all()
            if stopping:
                await asyncio.sleep(0.3)  # the viewers' last writes
                return
            try:
                await asyncio.wait_for(self._stop.wait(), _PERIOD_S)
            except TimeoutError:
                pass

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.token is not None:
            given = request.query.get("token", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return web.Response(
                    status=401,
                    text="401: this page needs its token: add ?token=TOKEN to the URL, or send "
                    "Authorization: Bearer TOKEN (the command printed it)\n",
                )
        response = await handler(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8")

    async def _no_icon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        assert self._changed is not None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        sent = -1
        try:
            while True:
                if self._update[0] == -1 or self._update[0] == sent:
                    async with self._changed:
                        await self._changed.wait()
                version, body, ended = self._update
                if version != sent:
                    await response.write(b"data: " + body + b"\n\n")
                    sent = version
                if ended:
                    return response
        except (ConnectionResetError, asyncio.CancelledError):
            return response

    async def _metrics_text(self, request: web.Request) -> web.StreamResponse:
        """Rebuilt when the feed changed, at most once a second while the run goes on
        (at once when it has ended: the final counts)."""
        made, version, text = self._metrics
        if self.feed.version != version and (
            time.monotonic() - made >= _PERIOD_S or self.feed.ended
        ):
            state = self.feed.state()
            text = await asyncio.to_thread(render_metrics, state)
            self._metrics = (time.monotonic(), state.version, text)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})  # fmt: skip

    async def _report_file(self, request: web.Request) -> web.StreamResponse:
        """A file of the report directory; nothing outside it, whatever the path says."""
        root = self.report_dir
        if root is None:
            raise web.HTTPNotFound(text="404: this command writes no report directory\n")
        try:
            path = (root / request.match_info["tail"]).resolve()
        except (OSError, ValueError):
            raise web.HTTPNotFound() from None
        if not path.is_relative_to(root):
            raise web.HTTPForbidden(text="403: only the report directory is served\n")
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            raise web.HTTPNotFound(text="404: no such file in the report directory\n")
        return web.FileResponse(path)
