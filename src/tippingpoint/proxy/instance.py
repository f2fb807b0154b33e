"""HAProxy processes: validate, start, reload, stop. Several instances share the same
ports with SO_REUSEPORT (HAProxy's default on Linux) — the modern form of the
article's ``nbproc``, and the way past one process's descriptor limit."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from tippingpoint.listeners import PortBusy, check_free
from tippingpoint.placement import PlacementError, spawn, spread_threads, verify
from tippingpoint.procs import die_with_parent
from tippingpoint.proxy.config import ProxyConfig, render
from tippingpoint.proxy.stats import show_info

__all__ = ["HAProxyError", "ProxyFleet", "find_haproxy"]


class HAProxyError(Exception):
    """A one-line reason, with the fix where there is one."""


def find_haproxy(binary: str | None = None) -> str:
    path = shutil.which(binary or "haproxy")
    if path is None:
        where = f"{binary!r} is not an executable" if binary else "haproxy is not on PATH"
        raise HAProxyError(
            f"{where}: install it (Debian: apt-get install haproxy) or give --haproxy-bin PATH"
        )
    return path


def validate(binary: str, config_path: Path) -> None:
    result = subprocess.run(
        [binary, "-c", "-f", str(config_path)], capture_output=True, text=True, timeout=30
    )
    if result.returncode != 0:
        alerts = [ln for ln in (result.stdout + result.stderr).splitlines() if "ALERT" in ln]
        reason = alerts[0] if alerts else (result.stderr or result.stdout).strip()[-300:]
        raise HAProxyError(f"HAProxy refused the configuration {config_path}: {reason}")


def _child_setup(parent: int) -> None:
    die_with_parent(parent)


class ProxyFleet:
    """``instances`` HAProxy processes with one configuration, in ``workdir``.

    Every path written into a configuration is absolute: HAProxy reads a stats socket
    path that does not start with ``/`` as ``host:port``. ``share_ports`` lets the
    fleet start where another process already listens on its frontends (a second
    fleet that joins on purpose); otherwise that is refused up front.

    Each instance starts on ``cpus`` (default: the configuration's ``cpus``; none:
    where this process may run), set in the child before exec; with several threads
    and CPUs, thread k of instance i then goes to the (i * threads + k)-th CPU, as
    ``cpu-map`` would (HAProxy ignores ``cpu-map`` in the foreground). Once it answers,
    every thread's CPUs are read back from /proc: :class:`HAProxyError` if one may run
    elsewhere."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        config: ProxyConfig,
        instances: int = 1,
        share_ports: bool = False,
        cpus: tuple[int, ...] | None = None,
    ) -> None:
        if instances < 1:
            raise ValueError("--instances must be >= 1")
        self.cpus = cpus if cpus is not None else config.cpus or None
        self.binary = binary
        workdir = Path(workdir).absolute()
        self.workdir = workdir
        self.config = config
        self.instances = instances
        self.share_ports = share_ports
        self.procs: list[subprocess.Popen[bytes]] = []
        self._retired: list[subprocess.Popen[bytes]] = []
        self.sockets = [_socket_path(workdir, i) for i in range(instances)]
        self.config_paths = [workdir / f"haproxy-{i}.cfg" for i in range(instances)]
        self.log_paths = [workdir / f"haproxy-{i}.log" for i in range(instances)]

    def write_configs(self) -> None:
        self.config = _absolute(self.config)
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i, sock in enumerate(self.sockets):
            _link_socket(self.workdir / f"haproxy-{i}.sock", sock)
        for i in range(self.instances):
            text = render(replace(self.config, stats_socket=self.sockets[i]))
            self.config_paths[i].write_text(text)
            validate(self.binary, self.config_paths[i])

    def _spawn(self, i: int, old_pid: int | None = None) -> subprocess.Popen[bytes]:
        args = [self.binary, "-f", str(self.config_paths[i]), "-db"]
        if old_pid is not None:
            args += ["-sf", str(old_pid)]
        parent = os.getpid()
        log = open(self.log_paths[i], "ab")  # noqa: SIM115
        try:
            return spawn(args, self.cpus, "HAProxy", log, lambda: _child_setup(parent))
        except PlacementError as e:
            raise HAProxyError(str(e)) from None
        finally:
            log.close()

    def _place(self, i: int, proc: subprocess.Popen[bytes]) -> None:
        """Spread the instance's threads over the CPUs, then read back where they run."""
        if self.cpus is None:
            return
        threads = self.config.nbthread
        if threads > 1 and len(self.cpus) > 1:
            offset = i * threads
            order = self.cpus[offset % len(self.cpus) :] + self.cpus[: offset % len(self.cpus)]
            spread_threads(proc.pid, order)
        try:
            verify(f"HAProxy instance {i}", [proc.pid], self.cpus)
        except PlacementError as e:
            raise HAProxyError(str(e)) from None

    def _wait_ready(self, i: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = self.log_paths[i].read_text(errors="replace").strip().splitlines()[-3:]
                raise HAProxyError(
                    f"HAProxy instance {i} exited with code {proc.returncode}: " + " | ".join(tail)
                )
            try:
                if int(show_info(self.sockets[i]).get("Pid", "0")) == proc.pid:
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise HAProxyError(f"HAProxy instance {i} did not answer on {self.sockets[i]}")
            time.sleep(0.05)

    def check_ports(self) -> None:
        """Refuse frontends on which a process that is not ours already listens."""
        if self.share_ports:
            return
        config = self.config
        for frontend in config.frontends:
            try:
                check_free(frontend.addr[0], [frontend.addr[1]], "proxy", "--share-ports")
            except PortBusy as e:
                raise HAProxyError(str(e)) from None

    def start(self, timeout: float = 15.0) -> None:
        self.check_ports()
        self.write_configs()
        try:
            for i in range(self.instances):
                proc = self._spawn(i)
                self.procs.append(proc)
                self._wait_ready(i, proc, timeout)
                self._place(i, proc)
        except BaseException:
            self.stop()
            raise

    def reload(self, config: ProxyConfig | None = None, timeout: float = 15.0) -> None:
        """New processes take over the ports; the old ones finish their connections."""
        if config is not None:
            self.config = config
        self.write_configs()
        for i, old in enumerate(self.procs):
            proc = self._spawn(i, old.pid)
            self._wait_ready(i, proc, timeout)
            self._place(i, proc)
            self.procs[i] = proc
            self._retired.append(old)

    @property
    def pids(self) -> list[int]:
        """The live instances (and reaps retired ones that have finished)."""
        self._retired = [p for p in self._retired if p.poll() is None]
        return [p.pid for p in self.procs if p.poll() is None]

    def run(self, on_event: Callable[[str], None]) -> bool:
        """Keep the fleet up until SIGINT/SIGTERM (True) or until every instance has
        exited (False). SIGHUP reloads: new processes take the ports over, the old ones
        finish their connections. Stops the fleet before returning."""
        stop = False
        reload = False

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stop, reload
            if signum == signal.SIGHUP:
                reload = True
            else:
                stop = True

        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        old = {s: signal.signal(s, on_signal) for s in signals}
        try:
            while not stop and self.pids:
                time.sleep(0.2)
                if reload:
                    reload = False
                    try:
                        self.reload()
                        on_event(f"reloaded, pids {self.pids}")
                    except HAProxyError as e:
                        on_event(f"reload failed: {e}")
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.stop()
        return stop

    def stop(self, grace: float = 5.0) -> None:
        """Soft-stop every instance (SIGUSR1), then SIGTERM, then SIGKILL."""
        procs = [*self.procs, *self._retired]
        for sig, wait in ((signal.SIGUSR1, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            alive = [p for p in procs if p.poll() is None]
            if not alive:
                break
            for p in alive:
                try:
                    p.send_signal(sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while any(p.poll() is None for p in alive) and time.monotonic() < deadline:
                time.sleep(0.02)
        self.procs = []
        self._retired = []


_SOCKET_PATH_MAX = 90
"""HAProxy takes stats socket paths up to 97 bytes (AF_UNIX's 108, less its suffix)."""


def _socket_path(workdir: Path, index: int) -> Path:
    """``workdir/haproxy-N.sock``; in a deep workdir, a short path in the temporary
    directory instead (:func:`_link_socket` puts a symlink to it in the workdir)."""
    path = workdir / f"haproxy-{index}.sock"
    if len(str(path)) <= _SOCKET_PATH_MAX:
        return path
    digest = hashlib.sha1(str(workdir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tippingpoint-{digest}" / path.name


def _link_socket(path: Path, socket_path: Path) -> None:
    """Where the socket is not ``path`` itself, a symlink there so that readers find it."""
    if socket_path == path:
        return
    socket_path.parent.mkdir(mode=0o700, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(socket_path)


def _absolute(config: ProxyConfig) -> ProxyConfig:
    bundle = config.cert_bundle
    return replace(
        config,
        cert_bundle=Path(bundle).absolute() if bundle is not None else None,
        stats_socket=Path(config.stats_socket).absolute(),
    )
