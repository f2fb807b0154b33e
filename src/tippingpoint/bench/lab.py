"""A lab across machines: the bench's roles on the hosts of a Dask cluster.

``[hosts]`` names the cluster's workers; ``[proxy] host``, ``[backends] hosts``,
``[broker] hosts`` and ``[client] hosts`` say where each role runs. Each role is
started by its host's worker (:mod:`tippingpoint.cluster.agent`), bound to the host's
own address (the one its worker is reached at, never 127.0.0.1 by accident), placed on
its CPUs and read back from /proc there. Every host is sampled once a second through
its worker, which also renews the lab's lease there; the samples go into the bench's
monitor records under ``hosts``, and each role's CPU and memory into its ``roles``
(backends on two hosts: summed), so every figure the bench derives from HAProxy's CPU
works as on one machine.

A worker that disappears is noticed within a second; the bench then ends with one line
naming the host and the roles it carried. The lab's processes die with their worker.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tippingpoint import interrupt
from tippingpoint.bench.spec import Hosts, Scenario, ScenarioError
from tippingpoint.bench.topology import BenchFailure, Topology, serve_command
from tippingpoint.cluster import agent
from tippingpoint.cluster.address import is_loopback
from tippingpoint.placement import Placed
from tippingpoint.proxy.config import ProxyConfig

if TYPE_CHECKING:
    from tippingpoint.cluster.fleet import Fleet

__all__ = ["Lab", "LabHost", "lab_cpus"]

_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class LabHost:
    name: str
    """The scenario's name for it (``lb``)."""
    worker: str
    """The Dask worker that starts and watches its roles."""
    address: str
    """The host's own address: where its roles listen."""
    machine: str
    """Its machine's host name, as its worker reports it."""


def _placed(row: dict[str, Any], host: str) -> Placed:
    from tippingpoint.placement import parse_cpu_list

    return Placed(
        row["role"],
        tuple(row["pids"]),
        row["threads"],
        frozenset(parse_cpu_list(row["cpus_asked"])),
        frozenset(parse_cpu_list(row["cpus_seen"])),
        host,
    )


class Lab:
    """The hosts of a scenario's roles, resolved on ``fleet``'s workers; roles started
    on them; every host sampled while the lab is open (``with Lab(...)``)."""

    def __init__(self, fleet: Fleet, hosts: Hosts, log: Callable[[str], None]) -> None:
        self.id = uuid.uuid4().hex[:10]
        self.client = fleet.client
        self.log = log
        self.spec = hosts
        self.hosts: dict[str, LabHost] = {}
        self.carries: dict[str, list[str]] = {}
        """Host -> the roles it carries now."""
        self.latest: dict[str, dict[str, Any]] = {}
        self.problem: str | None = None
        self.lost: set[str] = set()
        """Hosts whose worker is gone (their roles died with it)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._last_round = 0.0
        workers = {w: f for w, f in fleet.facts.items()}
        names = dict(hosts.workers)
        wanted = [hosts.proxy, *hosts.backends, *hosts.brokers, *hosts.client]
        for name in dict.fromkeys(n for n in wanted if n):
            self.hosts[name] = _resolve(name, names.get(name, name), workers)
        self.client_workers = self._client_workers(fleet)
        self._names = {h.worker: h.name for h in self.hosts.values()}

    def _client_workers(self, fleet: Fleet) -> list[str]:
        """The workers that run the load: every worker of the client hosts; without
        them, the workers of no role's host (all, when every one carries a role)."""
        facts = fleet.facts
        if self.spec.client:
            machines = {(self.hosts[n].machine, self.hosts[n].address) for n in self.spec.client}
            return [w for w in fleet.workers if (facts[w].host, _ip(w)) in machines]
        used = {h.worker for h in self.hosts.values()}
        return [w for w in fleet.workers if w not in used] or list(fleet.workers)

    @property
    def remote(self) -> bool:
        """The proxy and the backends run on hosts of the lab."""
        return bool(self.spec.proxy)

    def rewrite(self, scenario: Scenario) -> Scenario:
        """``scenario`` with the proxy's frontends on the proxy host's address where it
        gives a loopback one (the default scenario's 127.0.0.1)."""
        if not self.remote or scenario.external is not None:
            return scenario  # an external proxy's addresses are the user's, as given
        address = self.hosts[self.spec.proxy].address
        moved: dict[str, Any] = {}
        for key in ("http", "https", "mqtt", "mqtts"):
            host, port = getattr(scenario, key)
            if is_loopback(host):
                moved[key] = (address, port)
        return replace(scenario, **moved)

    def table(self) -> list[dict[str, Any]]:
        """Each host, its worker and machine, and the roles it carries (the report's)."""
        clients = set(self.client_workers)
        return [
            {
                "host": h.name,
                "machine": h.machine,
                "address": h.address,
                "worker": h.worker,
                "roles": list(dict.fromkeys(self.carries.get(h.name, [])))
                + (["client"] if h.worker in clients else []),
                "lost": h.name in self.lost,
            }
            for h in self.hosts.values()
        ]

    def started(self) -> str:
        """What runs where, in words."""
        return "; ".join(
            f"{row['host']}: {', '.join(row['roles']) or 'watched'}" for row in self.table()
        )

    def describe(self) -> list[str]:
        return [
            f"host {h.name}: worker {h.worker} on {h.machine}, address {h.address}"
            for h in self.hosts.values()
        ]

    # -- running on a host --------------------------------------------------------------

    def call(self, host: str, function: Callable[..., dict[str, Any]], *args: Any) -> Any:
        """``function(*args)`` on ``host``'s worker; :class:`BenchFailure` with its reason."""
        worker = self.hosts[host].worker
        try:
            result = self.client.run(function, *args, workers=[worker], on_error="return")
        except (OSError, TimeoutError) as e:
            raise BenchFailure(f"host {host} (worker {worker}): {e}") from None
        answer = result.get(worker)
        if isinstance(answer, BaseException) or answer is None:
            raise BenchFailure(f"host {host} (worker {worker}) did not answer: {answer!r}")
        if "error" in answer:
            raise BenchFailure(f"on host {host}: {answer['error']}")
        return answer

    def check_free(self, host: str, ports: tuple[int, ...], what: str, key: str) -> None:
        self.call(
            host,
            agent.check_ports,
            self.hosts[host].address,
            ports,
            f"{what} on host {host}",
            f"set other ports in the scenario ({key})",
        )

    def start(
        self,
        topology: Topology,
        host: str,
        role: str,
        function: Callable[..., dict[str, Any]],
        *args: Any,
    ) -> dict[str, Any]:
        """Start ``role`` on ``host`` (``function``: one of the agent's), stopped when
        ``topology`` is left; its placement row goes into the topology's table."""
        answer: dict[str, Any] = self.call(host, function, self.id, host, role, *args)
        self.carries.setdefault(host, []).append(role)

        def stop() -> None:
            self.carries[host].remove(role)
            if host not in self.lost:
                try:
                    self.client.run(
                        agent.lab_stop, self.id, role, workers=[self.hosts[host].worker]
                    )
                except Exception:
                    pass

        topology.on_exit(stop)
        topology.add_placed(_placed(answer["placed"], host))
        return answer

    def start_serve(
        self,
        topology: Topology,
        role: str,
        served: dict[str, tuple[int, ...]],
        processes: int,
        cpus: tuple[int, ...],
        share: bool = False,
    ) -> None:
        """``serve`` on every backend host, on its own address, up when this returns."""
        for host in self.spec.backends:
            address = self.hosts[host].address
            command = serve_command(served, processes, cpus, share, address)[1:]
            ports = [(address, p[-1]) for p in served.values()]
            self.start(topology, host, role, agent.start_serve, command, ports, cpus)

    def start_proxy(
        self,
        topology: Topology,
        role: str,
        config: ProxyConfig,
        instances: int,
        cpus: tuple[int, ...],
        share: bool = False,
    ) -> str:
        """HAProxy instances of ``config`` on the proxy host, its certificate carried
        there: the configuration as written there."""
        assert config.cert_bundle is not None
        bundle = config.cert_bundle.read_bytes()
        args = (config, bundle, instances, cpus, share)
        answer = self.start(topology, self.spec.proxy, role, agent.start_proxy, *args)
        return str(answer["config"])

    def watch(self, role: str, address: str, ports: tuple[int, ...]) -> dict[str, Any]:
        """The processes listening on ``address`` ``ports`` of the proxy host, watched
        as ``role`` there and never stopped (an external proxy beside its worker)."""
        host = self.spec.proxy
        answer: dict[str, Any] = self.call(
            host, agent.watch_listeners, self.id, host, role, address, ports
        )
        self.carries.setdefault(host, []).append(f"{role} (external)")
        return answer

    # -- watching -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        for line in self.describe():
            self.log(f"bench: lab: {line}")
        self._thread = threading.Thread(target=self._poll, name="tp-lab", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for host in self.hosts.values():
            if host.name in self.lost:
                continue
            try:
                self.client.run(agent.lab_stop, self.id, None, workers=[host.worker])
            except Exception:
                pass

    def _poll(self) -> None:
        """Between the bench's own samples (and between experiments, when it takes
        none): every host once a second, which renews the lease and finds a lost host."""
        while not self._stop.wait(_POLL_S / 4):
            if time.monotonic() - self._last_round >= _POLL_S * 0.9:
                self._round()

    def _round(self) -> None:
        """Sample every host now, through its worker."""
        with self._lock:
            self._last_round = time.monotonic()
            for worker, answer in agent.sample_hosts(self.client, self.id, self._names).items():
                name = self._names[worker]
                if answer is None:
                    self._lost(name)
                    continue
                if "error" in answer:  # this second unsampled there; the lease renewed
                    continue
                self.latest[name] = answer
                for event in answer.get("events", []):
                    if self.problem is None and self.carries.get(name):
                        self._fail(f"on host {name}: {event}")

    def _lost(self, name: str) -> None:
        self.lost.add(name)
        self.latest.pop(name, None)
        if self.problem is None:
            host = self.hosts[name]
            roles = self.carries.get(name) or []
            what = f"the {' and the '.join(roles)} on it stopped with it" if roles else "no role"
            self._fail(f"host {name} (worker {host.worker}) was lost: {what}")

    def _fail(self, problem: str) -> None:
        """The run cannot go on: stop what runs now (as Ctrl-C would); the bench then
        ends with ``problem`` (:meth:`failure`)."""
        self.problem = problem
        interrupt.request()

    def failure(self) -> str | None:
        """A lost host or a role's process that ended, in one line (None: all well)."""
        return self.problem

    def samples(self) -> dict[str, dict[str, Any]]:
        """Each host sampled now, for the bench's own sample of this second: the hosts'
        figures cover the same second as this machine's (a sample polled up to a second
        earlier would put one step's CPU into the next step's)."""
        self._round()
        return dict(self.latest)


def lab_cpus(scenario: Scenario) -> dict[str, tuple[int, ...]]:
    """Where each role runs on its lab host: the scenario's CPUs, or (none) all of the
    host's."""
    return {
        "proxy": scenario.proxy_cpus,
        "backends": scenario.backend_cpus,
        "brokers": scenario.backend_cpus,
    }


def _ip(worker: str) -> str:
    return urlsplit(worker).hostname or ""


def _resolve(name: str, target: str, workers: dict[str, Any]) -> LabHost:
    """The worker ``target`` names: its address, its name, its machine's host name or
    address (the first of its workers there)."""
    for worker in sorted(workers):
        facts = workers[worker]
        if target in (worker, facts.name, facts.host, _ip(worker)):
            return LabHost(name, worker, _ip(worker), facts.host)
    known = ", ".join(f"{f.name or w} ({f.host}, {w})" for w, f in sorted(workers.items()))
    raise ScenarioError(
        f"hosts.{name}: no worker of the cluster is {target!r}: give a worker's name, its "
        f"address or its machine's host name (the workers: {known})"
    )
