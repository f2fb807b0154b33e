"""`tippingpoint bench`: plan, start the topology, run the experiments, write the report.

Plans are made before anything starts (a hold that cannot fit is refused with its
numbers), every port is checked before a server binds it, the topology lives in one
:class:`~tippingpoint.bench.topology.Topology` (every start has its stop), and the
report is rewritten after each experiment. A backend or HAProxy process that dies
ends the bench with a :class:`BenchFailure` once the report holds what ran.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tippingpoint import interrupt, tap
from tippingpoint.bench.experiments import Bench
from tippingpoint.bench.kinds import KINDS
from tippingpoint.bench.lab import Lab, lab_cpus
from tippingpoint.bench.report import BenchReport
from tippingpoint.bench.scenario import plan_holds
from tippingpoint.bench.spec import ClusterSpec, External, Scenario, ScenarioError
from tippingpoint.bench.topology import BenchFailure, LabFailure, Topology
from tippingpoint.broker import SysWatcher
from tippingpoint.certs import make_certificate
from tippingpoint.cluster import agent
from tippingpoint.cores import Ledger
from tippingpoint.engine.runner import Local
from tippingpoint.limits import check_nofile, memory_available, port_range
from tippingpoint.monitor import Monitor
from tippingpoint.placement import PlacementError, place_self, verify
from tippingpoint.plan import ConnectionPlan
from tippingpoint.proxy.config import Frontend, MQTTRouting, ProxyConfig, derive_maxconn
from tippingpoint.proxy.external import StatsError, reader
from tippingpoint.proxy.instance import find_haproxy
from tippingpoint.schemes import SCHEMES
from tippingpoint.tap import Tapped

if TYPE_CHECKING:
    from tippingpoint.cluster.fleet import Fleet

__all__ = ["run_bench"]


@contextmanager
def _limits(soft: int, hard: int, cpus: tuple[int, ...]) -> Iterator[None]:
    """The open-file limit for everything started, and this process (every thread) on
    the client's CPUs: the load's workers are forked from it. Restored after."""
    old_affinity = os.sched_getaffinity(0)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        place_self(cpus)
        yield
    finally:
        place_self(old_affinity)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def role_cpus(scenario: Scenario, home: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Where each role runs: the scenario's CPUs, or ``home`` (where the bench was
    started) for a role it does not place."""
    return {
        "proxy": scenario.proxy_cpus or home,
        "backends": scenario.backend_cpus or home,
        "brokers": scenario.backend_cpus or home,
        "client": scenario.client_cpus or home,
    }


def _proxy_frontends(scenario: Scenario) -> tuple[Frontend, ...]:
    """HAProxy's frontends, plain and TLS, for each kind of listener the scenario needs
    (a WebSocket goes through the HTTP ones)."""
    schemes = [s.name for s in SCHEMES.values() if s.app in scenario.listeners]
    return tuple(Frontend(s, scenario.frontend_address(s)) for s in schemes)


def _proxy_config(
    scenario: Scenario,
    out: Path,
    soft: int,
    where: dict[str, tuple[str, ...]] | None = None,
    addresses: tuple[str, ...] = (),
) -> ProxyConfig:
    """HAProxy's configuration; ``where``: the addresses of each kind of listener's
    backends (by default 127.0.0.1), ``addresses``: the proxy's, in its certificate."""
    bundle = make_certificate(out / "tls", scenario.cert, addresses=addresses)[2]
    frontends = _proxy_frontends(scenario)
    ports = {k: scenario.backend(k).ports for k in scenario.listeners}
    hosts = where or {}
    return ProxyConfig(
        servers={
            f.app: tuple((a, p) for a in hosts.get(f.app, ("127.0.0.1",)) for p in ports[f.app])
            for f in frontends
        },
        frontends=frontends,
        mqtt=MQTTRouting(scenario.mqtt_balance, timeout_s=scenario.mqtt_timeout),
        cert_bundle=bundle,
        maxconn=derive_maxconn(soft),
        nbthread=scenario.proxy_threads,
        cpus=scenario.proxy_cpus,
        rate_limit_sessions=scenario.rate_limit,
        http_reuse=scenario.http_reuse,
        raw=scenario.proxy_raw,
    )


def _start_backends(
    scenario: Scenario, out: Path, topology: Topology, cpus: dict[str, tuple[int, ...]]
) -> tuple[dict[str, list[int]], list[SysWatcher]]:
    """serve (and mosquitto for MQTT if asked) on 127.0.0.1, each on its CPUs: their
    roles' PIDs, and the brokers' $SYS watchers. None with ``[backends] external``."""
    if scenario.backends_external:
        return {}, []
    backends = {k: scenario.backend(k) for k in scenario.listeners}
    for backend in backends.values():
        topology.check_free("127.0.0.1", backend.ports, backend.role, backend.key)
    serve = topology.start_backends(
        scenario.served(),
        scenario.backend_processes,
        out / "serve.log",
        cpus["backends"],
    )
    roles = {"backends": [serve.pid]}
    watchers: list[SysWatcher] = []
    for backend in backends.values():
        if backend.shares_ports:
            continue
        brokers = topology.start_brokers(
            backend.ports[0], len(backend.ports), out / "brokers", cpus["brokers"]
        )
        roles["brokers"] = brokers.pids
        # Their $SYS counters (clients, messages/s) go into the monitor's samples.
        watchers = [SysWatcher("127.0.0.1", p) for p in backend.ports]
        for watcher in watchers:
            topology.on_exit(watcher.close)
    return roles, watchers


def _start(
    scenario: Scenario,
    out: Path,
    topology: Topology,
    binary: str,
    soft: int,
    cpus: dict[str, tuple[int, ...]],
) -> tuple[ProxyConfig, Monitor]:
    """Backends, then HAProxy, each on its CPUs, then the monitor that watches them and
    accounts for every core they use. An external proxy is not started: its counters
    come from its statistics."""
    if scenario.external is None:
        for frontend in _proxy_frontends(scenario):
            host, port = frontend.addr
            topology.check_free(host, (port,), "proxy", f"[proxy] {frontend.scheme}")
    roles, watchers = _start_backends(scenario, out, topology, cpus)
    config = _proxy_config(scenario, out, soft)
    if scenario.external is not None:
        return config, _external_monitor(scenario.external, out, roles, topology)
    fleet = topology.start_proxy(
        binary, out / "proxy", config, scenario.proxy_instances, cpus["proxy"]
    )
    (out / "haproxy.cfg").write_text(fleet.config_paths[0].read_text())
    monitor = Monitor(
        {"proxy": fleet.pids, **roles},
        lambda: fleet.sockets,
        topology.exit_status,
        brokers=watchers,
    )
    monitor.cores = Ledger(topology.roles, cpus["client"])
    return fleet.config, monitor


def _external_monitor(
    external: External, out: Path, roles: dict[str, list[int]], topology: Topology
) -> Monitor:
    """The monitor of a bench whose proxy is external: its counters read from its stats
    page or Prometheus endpoint (refused now if they cannot be read)."""
    host, port = external.address
    (out / "haproxy.cfg").write_text(
        f"# The proxy under test is external, at {host}:{port}: the bench neither started nor\n"
        f"# stopped it, and its configuration is its own. Its counters: {external.source}.\n"
    )
    monitor = Monitor(roles, None, topology.exit_status)
    if external.stats or external.prometheus:
        monitor.proxy_counters = reader(external.stats, external.prometheus)
        try:
            monitor.proxy_counters()
        except StatsError as e:
            raise BenchFailure(f"proxy.external: {e}") from None
    return monitor


def _start_lab(
    scenario: Scenario, out: Path, topology: Topology, lab: Lab, soft: int
) -> tuple[ProxyConfig, Monitor]:
    """The roles on the lab's hosts through their workers, each bound to its host's
    address: the backends (and mosquitto), then HAProxy, routing to them; the monitor of
    this machine (the caller adds every host's samples to it)."""
    hosts = scenario.hosts
    cpus = lab_cpus(scenario)
    address = {name: host.address for name, host in lab.hosts.items()}
    brokers = hosts.brokers or hosts.backends
    where: dict[str, tuple[str, ...]] = {}
    for key in scenario.listeners:
        backend = scenario.backend(key)
        on = hosts.backends if backend.shares_ports else brokers
        if on:
            where[key] = tuple(address[h] for h in on)
        for host in on:
            lab.check_free(host, backend.ports, backend.role, backend.key)
    for frontend in _proxy_frontends(scenario) if scenario.external is None else ():
        key = f"[proxy] {frontend.scheme}"
        lab.check_free(hosts.proxy, (frontend.addr[1],), "proxy", key)
    lab.start_serve(
        topology, "backends", scenario.served(), scenario.backend_processes, cpus["backends"]
    )
    for key in scenario.listeners:
        backend = scenario.backend(key)
        if backend.shares_ports:
            continue  # serve's, started above
        for host in brokers:
            args = (address[host], backend.ports[0], len(backend.ports), cpus["brokers"])
            lab.start(topology, host, "brokers", agent.start_brokers, *args)
    if scenario.external is not None:
        return _proxy_config(scenario, out, soft), _watch_external(scenario, out, topology, lab)
    config = _proxy_config(scenario, out, soft, where, (address[hosts.proxy],))
    written = lab.start_proxy(topology, "proxy", config, scenario.proxy_instances, cpus["proxy"])
    (out / "haproxy.cfg").write_text(written)
    return config, Monitor({}, None, topology.exit_status)


def _watch_external(scenario: Scenario, out: Path, topology: Topology, lab: Lab) -> Monitor:
    """An external proxy beside a lab host's worker: the processes listening on its
    frontend there watched as the proxy role (its CPU and memory), its counters from its
    statistics."""
    assert scenario.external is not None
    address, port = scenario.external.address
    answer = lab.watch("proxy", address, (port,))
    lab.log(
        f"bench: lab: the external proxy on host {scenario.hosts.proxy}: pids "
        f"{answer['pids']} ({', '.join(answer['commands'])}), watched, never stopped"
    )
    return _external_monitor(scenario.external, out, {}, topology)


def run_bench(
    scenario: Scenario,
    out: Path,
    log: Callable[[str], None],
    haproxy_bin: str | None = None,
) -> BenchReport:
    """Run everything; the report is in ``out`` (also when this raises). Cleans up
    whatever happens: :class:`BenchFailure` when a process of the bench died."""
    try:
        soft, hard = check_nofile()
    except ValueError as e:
        raise ScenarioError(str(e)) from None
    if scenario.open_files is not None:
        if scenario.open_files < 256:
            raise ScenarioError("bench.open_files: at least 256")
        soft = min(scenario.open_files, hard)
    if scenario.hosts.lab and scenario.cluster is None:
        raise ScenarioError(
            "hosts: roles on other hosts run through a Dask cluster's workers: add [cluster] "
            'address = "tls://SCHEDULER:8786" or --cluster (workers = ["lb", "be1"]: try it here)'
        )
    binary = find_haproxy(haproxy_bin) if scenario.external is None else "haproxy"
    home = tuple(sorted(os.sched_getaffinity(0)))
    plans = plan_holds(scenario, soft, port_range(), memory_available())
    out = out.absolute()
    machine = f"{os.cpu_count()} CPUs, open-file limit {soft}, {time.strftime('%Y-%m-%d %H:%M')}"
    if scenario.external is not None:
        host, port = scenario.external.address
        machine += (
            f"; the proxy under test is external, at {host}:{port} (started and stopped by no "
            f"one here): its counters from {scenario.external.source}; "
            + (
                f"its CPU and memory from its processes on host {scenario.hosts.proxy}, read "
                "by the worker beside it"
                if scenario.hosts.proxy
                else "its CPU and memory are not seen from here, so no figure of HAProxy's "
                "CPU is given (a worker on its machine and proxy.host would see them)"
            )
        )
    report = BenchReport(out, scenario.title, machine)
    report.write()  # the directory is writable before anything starts
    for index, plan in plans.items():
        log(f"bench: plan for {scenario.experiments[index].name}: {plan.describe()}")
        for warning in plan.warnings:
            log(f"bench: warning: {warning}")
    setups = [setup.apply(scenario) for setup in scenario.setups] or [scenario]
    report.setups = [s.setup for s in setups if s.setup]
    first = 0
    with ExitStack() as stack:
        fleet = lab = None
        if scenario.cluster is not None:
            fleet = _open_fleet(scenario.cluster, log, stack, role_cpus(scenario, home)["client"])
            if scenario.hosts.lab:
                lab = stack.enter_context(Lab(fleet, scenario.hosts, log))
                fleet.restrict(lab.client_workers)
                report.hosts = lab.table
                setups = [lab.rewrite(s) for s in setups]
            hosts = sorted({f.host for f in fleet.facts.values()})
            report.machine += (
                f"; the client side on a Dask cluster of {len(fleet.workers)} worker(s) "
                f"on {', '.join(hosts)}"
            )
        for n, setup in enumerate(setups):
            where = out if not setup.setup else out / f"setup-{n + 1}"
            if setup.setup:
                log(f"bench: setup {n + 1} of {len(setups)}: {setup.setup}")
            cpus = role_cpus(setup, home)
            _run_setup(
                setup, where, log, report, binary, (soft, hard), cpus, plans, first, fleet, lab
            )
            first += len(setup.experiments)
    return report


def _open_fleet(
    spec: ClusterSpec, log: Callable[[str], None], stack: ExitStack, cpus: tuple[int, ...]
) -> Fleet:
    """The cluster's workers, measured; a local cluster started first when asked for
    (on the client's ``cpus``, as the load it runs; stopped with the bench)."""
    from tippingpoint.cluster.certs import client_security, node_security
    from tippingpoint.cluster.fleet import Fleet
    from tippingpoint.cluster.local import local_cluster

    address = spec.address
    try:
        node = node_security(spec.certs) if spec.certs else None
        client = client_security(spec.certs) if spec.certs else None
    except ValueError as e:
        raise ScenarioError(f"cluster.certs: {e}") from None
    if spec.workers:
        home = os.sched_getaffinity(0)
        place_self(cpus)  # its processes inherit this process's CPUs
        try:
            local = local_cluster(spec.names or spec.workers, 0, node)
        finally:
            place_self(home)
        stack.callback(local.close, timeout=10)
        address = str(local.scheduler_address)
        log(f"bench: a local Dask cluster of {spec.workers} worker(s) at {address}")
    assert address is not None
    fleet = Fleet(
        address,
        lambda line: log(f"bench: {line}"),
        insecure=spec.insecure,
        max_skew=spec.max_clock_skew,
        security=client,
    )
    return stack.enter_context(fleet)


def _run_setup(
    scenario: Scenario,
    out: Path,
    log: Callable[[str], None],
    report: BenchReport,
    binary: str,
    nofile: tuple[int, int],
    cpus: dict[str, tuple[int, ...]],
    plans: dict[int, ConnectionPlan],
    first: int,
    fleet: Fleet | None = None,
    lab: Lab | None = None,
) -> None:
    """Start one setup's topology, run the experiments on it, stop it (whatever raises)."""
    out.mkdir(parents=True, exist_ok=True)
    soft, hard = nofile
    with _limits(soft, hard, cpus["client"]), Topology() as topology:
        try:
            # The bench process (the monitor, the records, the report) beside the load
            # it forks: what it costs shows as the client's side, never as HAProxy's.
            topology.placed.append(verify("bench", [os.getpid()], cpus["client"], False))
            if lab is not None and lab.remote:
                proxy_config, monitor = _start_lab(scenario, out, topology, lab, soft)
            else:
                proxy_config, monitor = _start(scenario, out, topology, binary, soft, cpus)
            if lab is not None:  # every host watched; a lost one fails the bench
                monitor.hosts = lab.samples
                topology.checks.append(lab.failure)
        except PlacementError as e:
            raise BenchFailure(str(e)) from None
        finally:
            _sync_placement(report, topology, scenario.setup)
            report.write()
        monitor.on_event = lambda event: log(f"bench: {event}")
        config = (out / "haproxy.cfg").read_text()
        label = f"# setup: {scenario.setup}\n" if scenario.setup else ""
        report.config = (report.config + "\n" if report.config else "") + label + config
        brokers = any(role.name == "brokers" for role in monitor.roles)
        what = "backends, mosquitto, HAProxy" if brokers else "backends, HAProxy"
        if scenario.external is not None:
            what = "backends; the proxy is external" if monitor.roles else "nothing: all external"
        if lab is not None and lab.remote:
            log(f"bench: started {lab.started()}")
        else:
            log(f"bench: started pids {topology.pids} ({what})")
        bench = Bench(
            scenario, out, log, topology, monitor, report.samples, proxy_config, binary,
            _cacert(scenario, out), cpus, plans, Tapped(fleet or Local(soft)), lab,
        )  # fmt: skip
        try:
            _run_experiments(bench, report, first)
        except KeyboardInterrupt:
            _stopped(bench, report, report.running)
        finally:
            report.write()


def _cacert(scenario: Scenario, out: Path) -> str:
    """What the proxy's TLS certificates are checked against: the bench's own, or an
    external proxy's CA."""
    return scenario.proxy_cacert or str(out / "tls" / "cert.pem")


def _sync_placement(report: BenchReport, topology: Topology, setup: str) -> None:
    """The report's placement table: this setup's rows (every role it started so far,
    the bench process first), after those of the setups before."""
    others = [row for row in report.placement if row.get("setup", "") != setup]
    report.placement = others + [{**p.to_json(), "setup": setup} for p in topology.placed]


def _cpu_seconds() -> float:
    """CPU time of this process (every thread; not its children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stopped(bench: Bench, report: BenchReport, name: str) -> None:
    """Raise what stopped the run: a lab's failure (a host lost, a role dead: it stopped
    the run itself) or the user's Ctrl-C."""
    problem = bench.lab.failure() if bench.lab is not None else None
    if problem is None:
        raise KeyboardInterrupt
    report.failure = f"{problem} during {name!r}" if name else problem
    report.write()
    raise LabFailure(f"{report.failure}; the report has what ran: {bench.out / 'index.html'}")


def _run_experiments(bench: Bench, report: BenchReport, first: int) -> None:
    setup = bench.scenario.setup
    for index, exp in enumerate(bench.scenario.experiments):
        if interrupt.requested():  # Ctrl-C between two experiments
            _stopped(bench, report, exp.name)
        kind = KINDS[exp.kind]
        description = kind.describe(exp, kind.url(bench, exp), bench.scenario)
        bench.log(f"bench: {exp.name} ({description})")
        left = [e.name for e in bench.scenario.experiments[index + 1 :]]
        label = f"{exp.name} [{setup}]" if setup else exp.name  # its counters' label
        tap.begin(label, kind.shape, description, left)
        report.running = exp.name
        restarted = len(bench.topology.worker_restarts())
        began, cpu = time.monotonic(), _cpu_seconds()
        outcome = kind.run(bench, index, exp)
        ended = time.monotonic()
        bench_cpu = (_cpu_seconds() - cpu) / max(ended - began, 1e-3)
        # Its span on the monitor's time axis (a sweep's knee is marked there).
        span = [round(t - bench.monitor.start, 3) for t in (began, ended + 1.0)]
        _sync_placement(report, bench.topology, setup)
        restarts = bench.topology.worker_restarts()[restarted:]
        row = outcome.row
        if restarts:
            # The backends replaced a dead worker: the run had fewer for a moment.
            for line in restarts:
                bench.log(f"bench: backends: {line.removeprefix('tippingpoint serve: ')}")
            row += f" (backends: {len(restarts)} worker(s) died and were restarted during it)"
        head = kind.head(
            first + index, exp, description, setup, restarts, round(bench_cpu * 100, 1)
        )
        name = f"{exp.name} [{setup}]" if setup else exp.name
        report.add([name, row], {**head.to_json(), **outcome.entry, "monitor_t": span})
        if outcome.interrupted or interrupt.requested():
            # Before the roles' check: a terminal's Ctrl-C reaches them too, and their
            # end is then the user's doing, not a failure.
            _stopped(bench, report, exp.name)
        failure = bench.topology.failure()
        if failure is not None:
            report.failure = f"{failure} during {exp.name!r}"
            report.write()
            raise BenchFailure(
                f"{report.failure}; the report has what ran: {bench.out / 'index.html'}"
            )
