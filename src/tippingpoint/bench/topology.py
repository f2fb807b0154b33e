"""What a bench starts: backends and HAProxy instances, each start paired with its stop.

Everything is entered into one :class:`contextlib.ExitStack`, so every process that
was started is stopped whatever raises, in reverse order, and one stop that fails does
not skip the others. Each child also asks the kernel to end it when the bench dies
(``PR_SET_PDEATHSIG``), so even ``kill -9`` of the bench leaves nothing listening.

Each role starts on the CPUs it is given, set in the child (the bench itself runs on
the client's CPUs, which its children would otherwise inherit), and where every one of
its processes and threads may run is read back from /proc once it is up: the rows of
the report's placement table (:attr:`Topology.placed`). A role that runs anywhere else
is refused with one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Final

from tippingpoint.broker import BrokerConfig, BrokerError, BrokerFleet
from tippingpoint.listeners import PortBusy, check_free, wait_listening
from tippingpoint.placement import Placed, PlacementError, cpu_list, spawn, verify
from tippingpoint.procs import describe_returncode, die_with_parent, stop_process
from tippingpoint.proxy.config import ProxyConfig
from tippingpoint.proxy.instance import HAProxyError, ProxyFleet

__all__ = ["BenchFailure", "LabFailure", "Topology", "serve_command"]


class BenchFailure(RuntimeError):
    """The bench cannot go on; a one-line reason."""


class LabFailure(BenchFailure):
    """A lab's host was lost or one of its roles died: the bench stopped the run itself
    (as Ctrl-C would), and this is why."""


_SERVE_OPTION: Final = {"http": "--ports", "mqtt": "--mqtt"}
"""serve's option for the ports of each kind of listener (``Scheme.listener``)."""


def serve_command(
    listeners: dict[str, tuple[int, ...]],
    processes: int,
    cpus: tuple[int, ...] = (),
    share: bool = False,
    host: str = "",
) -> list[str]:
    """`tippingpoint serve` on the ports of each kind of listener (``share``: join servers
    already there; ``cpus``: every process there, checked by serve itself; ``host``: the
    address to listen on, 127.0.0.1 by default)."""
    command = [sys.executable, "-m", "tippingpoint", "serve", "--processes", str(processes)]
    if host:
        command += ["--host", host]
    for listener, ports in listeners.items():
        command += [_SERVE_OPTION[listener], ",".join(map(str, ports))]
    command.append("--ws")  # ws:// and wss:// experiments; plain HTTP is unchanged
    if share:
        command.append("--share-ports")
    if cpus:
        command += ["--cpus", cpu_list(cpus)]
    return command


class Topology:
    """Processes started for a bench (or for one experiment, nested in the bench's:
    its processes count as the enclosing one's until it is left). One that exits while
    it is meant to run is a failure of the bench, reported by :meth:`failure`."""

    def __init__(self, parent: Topology | None = None) -> None:
        self.stack = ExitStack()
        self.parent = parent
        self.procs: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}
        self.serve_logs: list[Path] = []
        self.placed: list[Placed] = []
        """Where each role started here runs, read back from /proc."""
        self.checks: list[Callable[[], str | None]] = []
        """More ways the bench may have failed (a lab host lost), asked by :meth:`failure`."""

    def __enter__(self) -> Topology:
        self.stack.__enter__()
        self.stack.callback(self._forget)  # the last thing done on leaving
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return bool(self.stack.__exit__(kind, exc, tb))

    def _forget(self) -> None:
        """Our processes, now stopped on purpose, are no failure of the enclosing bench."""
        node = self.parent
        while node is not None:
            for pid in self.procs:
                node.procs.pop(pid, None)
            node = node.parent

    def check_free(self, host: str, ports: tuple[int, ...], what: str, key: str) -> None:
        """Refuse ports where a process that is not ours listens (before starting); the
        advice names the scenario's ``key`` that sets them."""
        try:
            check_free(host, ports, what, None, f"set other ports in the scenario ({key})")
        except PortBusy as e:
            raise BenchFailure(str(e)) from None

    def _register(self, role: str, proc: subprocess.Popen[bytes]) -> None:
        node: Topology | None = self
        while node is not None:
            node.procs[proc.pid] = (role, proc)
            node = node.parent

    def _verify(self, role: str, pids: list[int], cpus: tuple[int, ...]) -> None:
        """Where the role's processes and threads run, from /proc (a row of the
        placement table here and in every enclosing topology); refused if astray."""
        try:
            placed = verify(role, pids, cpus)
        except PlacementError as e:
            raise BenchFailure(str(e)) from None
        self.add_placed(placed)

    def add_placed(self, placed: Placed) -> None:
        """A row of the placement table, here and in every enclosing topology."""
        node: Topology | None = self
        while node is not None:
            node.placed.append(placed)
            node = node.parent

    def roles(self) -> dict[str, tuple[frozenset[int], list[int]]]:
        """Each placed role that runs now: its CPUs and its live PIDs."""
        cpus = {p.role: p.asked for p in self.placed}
        out: dict[str, tuple[frozenset[int], list[int]]] = {}
        for pid, (role, proc) in self.procs.items():
            if role in cpus and proc.poll() is None:
                out.setdefault(role, (cpus[role], []))[1].append(pid)
        return out

    def start_backends(
        self,
        listeners: dict[str, tuple[int, ...]],
        processes: int,
        log_path: Path,
        cpus: tuple[int, ...],
        role: str = "backends",
        share: bool = False,
    ) -> subprocess.Popen[bytes]:
        """`tippingpoint serve` on 127.0.0.1, on the ports of each kind of listener, on
        ``cpus``, up and accepting when this returns."""
        log = self.stack.enter_context(open(log_path, "wb"))  # noqa: SIM115
        self.serve_logs.append(log_path)
        parent = os.getpid()
        command = serve_command(listeners, processes, cpus, share)
        try:
            proc = spawn(command, cpus, "the backends", log, lambda: die_with_parent(parent))
        except PlacementError as e:
            raise BenchFailure(str(e)) from None
        self._register(role, proc)
        self.stack.callback(stop_process, proc, 15.0)
        try:
            for ports in listeners.values():
                wait_listening("127.0.0.1", ports[-1], proc, log_path, "the backends")
        except RuntimeError as e:
            raise BenchFailure(str(e)) from None
        self._verify(role, [proc.pid], cpus)
        return proc

    def start_brokers(
        self,
        port: int,
        instances: int,
        workdir: Path,
        cpus: tuple[int, ...],
        role: str = "brokers",
    ) -> BrokerFleet:
        """``instances`` mosquitto processes on 127.0.0.1 ports ``port``, ``port + 1``...
        on ``cpus``, accepting when this returns."""
        fleet = BrokerFleet(BrokerConfig(port=port, instances=instances), workdir, cpus=cpus)
        try:
            fleet.start(timeout=15.0)
        except BrokerError as e:
            raise BenchFailure(str(e)) from None
        self.stack.callback(fleet.stop, 5.0)
        for proc in fleet.procs:
            self._register(role, proc)
        self._verify(role, fleet.pids, cpus)
        return fleet

    def start_proxy(
        self,
        binary: str,
        workdir: Path,
        config: ProxyConfig,
        instances: int,
        cpus: tuple[int, ...],
        role: str = "proxy",
        share: bool = False,
        grace: float = 5.0,
    ) -> ProxyFleet:
        """HAProxy instances on ``cpus`` (their threads spread over them), answering on
        their stats sockets when this returns."""
        fleet = ProxyFleet(binary, workdir, config, instances, share_ports=share, cpus=cpus)
        try:
            fleet.start(timeout=15.0 + 3.0 * instances)
        except HAProxyError as e:
            raise BenchFailure(str(e)) from None
        self.stack.callback(fleet.stop, grace)
        for proc in fleet.procs:
            self._register(role, proc)
        self._verify(role, fleet.pids, cpus)
        return fleet

    def on_exit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when this topology is left (before the stops registered so far)."""
        self.stack.callback(callback)

    def exit_status(self, pid: int) -> str | None:
        """How one of our processes ended ("killed by signal 9 (SIGKILL)"), or None."""
        entry = self.procs.get(pid)
        if entry is None or entry[1].poll() is None:
            return None
        return describe_returncode(entry[1].returncode)

    def worker_restarts(self) -> list[str]:
        """The backends' log lines of workers that died and were started again."""
        lines: list[str] = []
        for path in self.serve_logs:
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            lines += [line for line in text.splitlines() if "restarted as pid" in line]
        return lines

    def failure(self) -> str | None:
        """The first process of ours that ended while it was meant to run, in words."""
        for pid, (role, proc) in self.procs.items():
            if proc.poll() is not None:
                return f"{role} pid {pid} {self.exit_status(pid)}"
        for check in self.checks:
            problem = check()
            if problem is not None:
                return problem
        return None

    @property
    def pids(self) -> list[int]:
        return list(self.procs)
