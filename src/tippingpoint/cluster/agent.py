"""A lab host's side of the bench, run by the Dask worker on that host.

The bench calls these functions on a worker (``Client.run``): they start a role's
processes there (``serve``, HAProxy, mosquitto), check its ports, sample the machine
and stop what they started. Each process is the worker's child and dies with it
(``PR_SET_PDEATHSIG``), as a local role dies with the bench. The files a role needs
travel as arguments (the certificate bundle) and are written in a directory of the
lab on the host; configurations are rendered there, with the host's own addresses.

A lab's processes are held on a lease: every call renews it, and the bench samples
each host once a second. A lab not renewed for :data:`LEASE_S` (the bench was killed,
or lost its way to the scheduler) is stopped by the host itself.

Every function returns plain data; a failure is ``{"error": "one line"}``, never an
exception across the wire.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

__all__ = [
    "LEASE_S",
    "check_ports",
    "lab_sample",
    "lab_sample_of",
    "lab_stop",
    "sample_hosts",
    "start_brokers",
    "start_proxy",
    "start_serve",
    "watch_listeners",
]

LEASE_S: Final = float(os.environ.get("TIPPINGPOINT_LAB_LEASE", "20"))
"""A lab not heard of for this long is stopped by its host (seconds; the worker's
``TIPPINGPOINT_LAB_LEASE`` sets it, at least 3: the bench samples once a second)."""

Result = dict[str, Any]


class _HostLab:
    """One bench's processes on this host, and the monitor that watches them."""

    def __init__(self, lab: str, name: str) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"tippingpoint-{lab}-"))
        self.roles: dict[str, ExitStack] = {}
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.sockets: list[Path] = []
        self.deadline = time.monotonic() + LEASE_S
        from tippingpoint.monitor import Monitor

        self.monitor = Monitor(haproxy_sockets=lambda: list(self.sockets), exit_status=self.status)
        self.monitor.host = name

    def status(self, pid: int) -> str | None:
        proc = self.procs.get(pid)
        if proc is None or proc.poll() is None:
            return None
        from tippingpoint.procs import describe_returncode

        return describe_returncode(proc.returncode)

    def add(self, role: str, stack: ExitStack, pids: list[int]) -> None:
        self.roles[role] = stack
        self.monitor.add_role(role, pids)

    def stop(self, role: str) -> None:
        stack = self.roles.pop(role, None)
        self.monitor.remove_role(role)
        if stack is not None:
            stack.close()

    def close(self) -> None:
        for role in reversed(list(self.roles)):
            self.stop(role)
        shutil.rmtree(self.dir, ignore_errors=True)


_LABS: dict[str, _HostLab] = {}
_LOCK = threading.Lock()
_WATCHDOG: list[threading.Thread] = []


def _lab(lab: str, name: str) -> _HostLab:
    """The lab ``lab`` on this host (made on first use), its lease renewed."""
    with _LOCK:
        host = _LABS.get(lab)
        if host is None:
            host = _LABS[lab] = _HostLab(lab, name)
            if not _WATCHDOG:
                _WATCHDOG.append(threading.Thread(target=_expire, daemon=True))
                _WATCHDOG[0].start()
        host.deadline = time.monotonic() + LEASE_S
        return host


def _expire() -> None:
    """Stop the labs whose bench stopped renewing them."""
    while True:
        time.sleep(1.0)
        with _LOCK:
            late = [k for k, h in _LABS.items() if time.monotonic() > h.deadline]
            hosts = [_LABS.pop(k) for k in late]
        for host in hosts:
            host.close()


def _cpus(asked: tuple[int, ...]) -> tuple[int, ...]:
    """The CPUs a role asked for, or every CPU of this host (not the worker's own, which
    may be placed for the load it runs)."""
    return asked or tuple(range(os.cpu_count() or 1))


def _guarded(run: Callable[[], Result]) -> Result:
    try:
        return run()
    except Exception as e:
        return {"error": str(e) or type(e).__name__}


def _settle(
    host: _HostLab,
    role: str,
    stack: ExitStack,
    procs: list[subprocess.Popen[bytes]],
    cpus: tuple[int, ...],
) -> dict[str, Any]:
    """A started role's processes read back from /proc (stopped if astray), then
    watched: its pids and placement row."""
    from tippingpoint.placement import verify

    pids = [p.pid for p in procs]
    for proc in procs:
        host.procs[proc.pid] = proc
    try:
        placed = verify(role, pids, cpus)
    except BaseException:
        stack.close()
        raise
    host.add(role, stack, pids)
    return {"pids": pids, "placed": placed.to_json()}


def check_ports(address: str, ports: tuple[int, ...], what: str, advice: str) -> Result:
    """Refuse ports where something listens on this host."""
    from tippingpoint.listeners import check_free

    def run() -> Result:
        check_free(address, ports, what, None, advice)
        return {}

    return _guarded(run)


def start_serve(
    lab: str,
    name: str,
    role: str,
    command: list[str],
    ports: list[tuple[str, int]],
    asked: tuple[int, ...],
) -> Result:
    """``tippingpoint serve`` (``command``, without its interpreter) on this host, up
    on ``ports`` when this returns: its pid and placement."""
    import sys

    from tippingpoint.listeners import wait_listening
    from tippingpoint.placement import spawn
    from tippingpoint.procs import die_with_parent, stop_process

    def run() -> Result:
        host = _lab(lab, name)
        cpus = _cpus(asked)
        parent = os.getpid()
        log_path = host.dir / f"{role}.log".replace(" ", "-")
        stack = ExitStack()
        with open(log_path, "wb") as log:
            proc = spawn(
                [sys.executable, *command], cpus, role, log, lambda: die_with_parent(parent)
            )
        stack.callback(stop_process, proc, 15.0)
        try:
            for address, port in ports:
                wait_listening(address, port, proc, log_path, role)
        except BaseException:
            stack.close()
            raise
        return _settle(host, role, stack, [proc], cpus)

    return _guarded(run)


def start_proxy(
    lab: str,
    name: str,
    role: str,
    config: Any,
    bundle: bytes,
    instances: int,
    asked: tuple[int, ...],
    share: bool,
) -> Result:
    """HAProxy instances of ``config`` (a :class:`~tippingpoint.proxy.config.ProxyConfig`)
    on this host, with the certificate ``bundle`` written here; answering on their
    stats sockets when this returns. Checked with ``haproxy -c`` here."""
    from tippingpoint.proxy.instance import ProxyFleet, find_haproxy

    def run() -> Result:
        host = _lab(lab, name)
        cpus = _cpus(asked)
        workdir = host.dir / role.replace(" ", "-").replace("(", "").replace(")", "")
        tls = workdir / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        (tls / "bundle.pem").write_bytes(bundle)
        os.chmod(tls / "bundle.pem", 0o600)
        fleet = ProxyFleet(
            find_haproxy(),
            workdir,
            replace(config, cert_bundle=tls / "bundle.pem"),
            instances,
            share_ports=share,
            cpus=cpus,
        )
        fleet.start(timeout=15.0 + 3.0 * instances)
        stack = ExitStack()
        stack.callback(fleet.stop, 1.0 if share else 5.0)
        host.sockets += fleet.sockets
        stack.callback(
            lambda: setattr(host, "sockets", [s for s in host.sockets if s not in fleet.sockets])
        )
        answer = _settle(host, role, stack, list(fleet.procs), cpus)
        return {**answer, "config": fleet.config_paths[0].read_text()}

    return _guarded(run)


def start_brokers(
    lab: str, name: str, role: str, address: str, port: int, instances: int, asked: tuple[int, ...]
) -> Result:
    """mosquitto instances on ``address`` ports ``port``... of this host."""
    from tippingpoint.broker import BrokerConfig, BrokerFleet

    def run() -> Result:
        host = _lab(lab, name)
        cpus = _cpus(asked)
        config = BrokerConfig(host=address, port=port, instances=instances)
        fleet = BrokerFleet(config, host.dir / "brokers", cpus=cpus)
        fleet.start(timeout=15.0)
        stack = ExitStack()
        stack.callback(fleet.stop, 5.0)
        return _settle(host, role, stack, list(fleet.procs), cpus)

    return _guarded(run)


def watch_listeners(lab: str, name: str, role: str, address: str, ports: tuple[int, ...]) -> Result:
    """Watch, as ``role``, the processes that listen on ``address`` ``ports`` here (an
    external proxy beside this worker): their CPU and memory go into this host's
    samples. Never stopped by the lab: they are not its own."""
    from tippingpoint.listeners import listeners

    def run() -> Result:
        host = _lab(lab, name)
        found = listeners(address, ports)
        pids = sorted({s.pid for s in found if s.pid is not None})
        if not pids:
            why = "nothing listens there" if not found else "their owner is another user"
            raise RuntimeError(
                f"no process listening on {address} ports {', '.join(map(str, ports))} can be "
                f"watched: {why} (run the worker as the proxy's user, or as root)"
            )
        host.add(role, ExitStack(), pids)
        commands = sorted({s.command or "" for s in found if s.pid is not None})
        return {"pids": pids, "commands": commands}

    return _guarded(run)


def lab_sample(lab: str, name: str) -> Result:
    """This host as the monitor sees it now (its lease renewed): the machine, each
    role's CPU and memory, HAProxy's counters where it runs here."""

    def run() -> Result:
        host = _lab(lab, name)
        for proc in host.procs.values():
            proc.poll()  # reaped: the monitor then finds it gone, with its status
        return host.monitor.sample()

    return _guarded(run)


def lab_sample_of(lab: str, names: dict[str, str], dask_worker: Any = None) -> Result:
    """:func:`lab_sample` under this worker's name of ``names`` (worker -> host name)."""
    address = getattr(dask_worker, "address", "")
    if address not in names:
        return {"error": f"worker {address} is not a host of this lab"}
    return lab_sample(lab, names[address])


def sample_hosts(client: Any, lab: str, names: dict[str, str]) -> dict[str, Result | None]:
    """(Client side.) Every host of ``names`` (worker -> host name) sampled now through
    its worker, in one round: its sample, ``{"error": ...}`` when sampling failed there,
    None for a worker that is gone."""
    try:
        alive = set(client.ncores())
        answers = client.run(
            lab_sample_of, lab, names, workers=[w for w in names if w in alive], on_error="return"
        )
    except Exception:  # the scheduler itself is gone
        answers = {}
    out: dict[str, Result | None] = {}
    for worker in names:
        answer = answers.get(worker)
        if isinstance(answer, BaseException):
            answer = {"error": str(answer) or type(answer).__name__}
        out[worker] = answer if worker in answers and isinstance(answer, dict) else None
    return out


def lab_stop(lab: str, role: str | None = None) -> Result:
    """Stop one role of the lab on this host, or all of it (``None``)."""

    def run() -> Result:
        with _LOCK:
            host = _LABS.get(lab) if role is not None else _LABS.pop(lab, None)
        if host is None:
            return {}
        if role is None:
            host.close()
        else:
            host.stop(role)
        return {}

    return _guarded(run)
