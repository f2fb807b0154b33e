"""What a bench scenario is, once parsed: its experiments, setups, cluster and the
backends behind HAProxy. Plain data; :mod:`tippingpoint.bench.scenario` reads it from
TOML and each kind's module (``bench/kinds/``) reads its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from tippingpoint.schemes import SCHEMES

__all__ = [
    "Backend",
    "ClusterSpec",
    "Experiment",
    "External",
    "Hosts",
    "Request",
    "Scenario",
    "ScenarioError",
    "Session",
    "Setup",
    "Steps",
]


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the key."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a request, or a WebSocket message, is made of: the keys of an experiment
    through an HTTP or WebSocket frontend."""

    keepalive: bool = True
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    method: str = "GET"
    path: str = "/ping"
    tls_resume: bool = False


@dataclass(frozen=True, slots=True)
class Session:
    """An MQTT session's own key, through an MQTT frontend."""

    keepalive: int = 60
    """Seconds between a session's pings when it has nothing else to send."""


@dataclass(frozen=True, slots=True)
class Steps:
    """How a sweep's steps rise and when its knee is found (a sweep, an MQTT sweep, a
    connect storm)."""

    start: float = 1000.0
    step: tuple[str, float] = ("x", 1.5)
    step_duration: float = 5.0
    max_steps: int = 8
    refine: int = 1
    confirm_steps: int = 8
    """Not a scenario key: ``--quick`` lowers it."""
    slo: tuple[float, float] | None = None
    closed: bool = False
    """Step the connections of a closed loop (``start``/``step`` count connections)."""

    def quick(self) -> Steps:
        """A few minutes: short steps, fewer of them, half the confirmation (a quick knee
        more often "did not repeat"); a closed loop has no schedule to settle into, so a
        second a step is enough."""
        return replace(
            self,
            step_duration=min(self.step_duration, 1.0 if self.closed else 2.0),
            max_steps=min(self.max_steps, 6),
            refine=min(self.refine, 1),
            confirm_steps=min(self.confirm_steps, 4),
        )


S = TypeVar("S")
"""An experiment kind's own spec (``bench/kinds/``)."""


@dataclass(frozen=True, slots=True)
class Experiment(Generic[S]):
    """One ``[[experiment]]``: what every kind has, what its frontend's application
    reads (``request`` through HTTP and WebSocket frontends, ``session`` through MQTT's),
    and its kind's own typed ``spec``."""

    name: str
    kind: str
    spec: S
    frontend: str = "http"
    timeout: float = 30.0
    request: Request = Request()
    session: Session = Session()

    @property
    def mqtt(self) -> bool:
        """It runs MQTT sessions (through the proxy's MQTT frontends)."""
        return SCHEMES[self.frontend].app == "mqtt"


@dataclass(frozen=True, slots=True)
class Setup:
    """One ``[[matrix]]`` entry: a proxy setup the scenario's experiments run on in turn
    (the article's tables: 4, 6, 8, 16 cores; SSL or not). Unset keys keep the
    scenario's own."""

    name: str
    threads: int | None = None
    instances: int | None = None
    cpus: tuple[int, ...] | None = None
    cert: str | None = None
    backend_processes: int | None = None
    client_processes: int | None = None

    def apply(self, scenario: Scenario) -> Scenario:
        return replace(
            scenario,
            proxy_threads=self.threads or scenario.proxy_threads,
            proxy_instances=self.instances or scenario.proxy_instances,
            proxy_cpus=self.cpus if self.cpus is not None else scenario.proxy_cpus,
            cert=self.cert or scenario.cert,
            backend_processes=self.backend_processes or scenario.backend_processes,
            client_processes=self.client_processes or scenario.client_processes,
            setups=(),
            setup=self.name,
        )


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """``[cluster]``: the client side on the workers of a Dask cluster."""

    address: str | None = None
    """An existing scheduler, e.g. tls://scheduler.example:8786."""
    workers: int = 0
    """Or a local cluster of this many workers, started for the bench and stopped after."""
    names: tuple[str, ...] = ()
    """The local workers' names (``workers = ["lb", "be1"]``): each stands for a host."""
    certs: str | None = None
    """TLS with mutual authentication (``tippingpoint cluster certs``)."""
    max_clock_skew: float = 0.05
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class Hosts:
    """Where each role runs: ``[hosts]`` (a name for each Dask worker, by its name, its
    address or its machine's host name) and each role's ``host``/``hosts``. Empty: the
    role on this machine, as a bench without a lab."""

    workers: tuple[tuple[str, str], ...] = ()
    """``[hosts]``: (name, the worker it is)."""
    proxy: str = ""
    backends: tuple[str, ...] = ()
    brokers: tuple[str, ...] = ()
    """``[broker] hosts``: mosquitto's hosts (default: the backends')."""
    client: tuple[str, ...] = ()

    @property
    def lab(self) -> bool:
        """Some role runs on a host of the cluster."""
        return bool(self.proxy or self.backends or self.brokers or self.client)


@dataclass(frozen=True, slots=True)
class External:
    """``[proxy] external``: a proxy the bench neither starts nor stops."""

    address: tuple[str, int]
    """Its HTTP frontend (``[proxy] https``, ``mqtt``... give the others)."""
    stats: str = ""
    """HAProxy's stats page (its CSV is read), e.g. http://haproxy-1.example:8404/stats."""
    prometheus: str = ""
    """Or its Prometheus endpoint."""

    @property
    def source(self) -> str:
        """Where its counters come from, in words."""
        if self.stats:
            return f"its stats CSV ({self.stats})"
        if self.prometheus:
            return f"its Prometheus endpoint ({self.prometheus})"
        return "nowhere (give [proxy] stats or prometheus)"


@dataclass(frozen=True, slots=True)
class Backend:
    """What answers one kind of listener behind HAProxy (``Scheme.listener``)."""

    program: str
    """"serve", or "mosquitto" for MQTT (``[backends] mqtt``)."""
    ports: tuple[int, ...]
    key: str
    """The scenario key that gives its ports."""
    role: str
    """What it is called in messages."""

    @property
    def shares_ports(self) -> bool:
        """serve's processes share a port (SO_REUSEPORT): a bigger hold can add some.
        mosquitto cannot: one instance per port, each under the open-file limit."""
        return self.program == "serve"


@dataclass(frozen=True, slots=True)
class Scenario:
    title: str
    backend_ports: tuple[int, ...]
    backend_processes: int
    backend_cpus: tuple[int, ...]
    proxy_threads: int
    proxy_instances: int
    proxy_cpus: tuple[int, ...]
    cert: str
    http: tuple[str, int]
    https: tuple[str, int]
    rate_limit: int | None
    client_processes: int
    client_cpus: tuple[int, ...]
    experiments: tuple[Experiment[Any], ...] = field(default=())
    http_reuse: str | None = None
    open_files: int | None = None
    """Soft open-file limit for everything the bench starts (at most the hard limit):
    rehearses a plan for a machine with a lower limit, at a small scale."""
    setups: tuple[Setup, ...] = ()
    """``[[matrix]]``: the experiments run once on each (none: once, as configured)."""
    setup: str = ""
    """The name of the setup this scenario is (after :meth:`Setup.apply`)."""
    mqtt_backend: str = "serve"
    """``[backends] mqtt``: what the MQTT frontends reach, serve --mqtt or mosquitto."""
    mqtt_ports: tuple[int, ...] = (21883, 21884)
    mqtt: tuple[str, int] = ("127.0.0.1", 11883)
    mqtts: tuple[str, int] = ("127.0.0.1", 18883)
    cluster: ClusterSpec | None = None
    """``[cluster]``: attacks, sweeps and holds run on a Dask cluster's workers."""
    hosts: Hosts = field(default_factory=Hosts)
    """``[hosts]`` and the roles' hosts: a lab across machines."""
    external: External | None = None
    """``[proxy] external``: the proxy under test is one the bench does not start."""
    backends_external: bool = False
    """``[backends] external``: the proxy's backends are its own; the bench starts none."""
    proxy_raw: str | None = None
    """``[proxy] config``: the user's HAProxy configuration, run as written."""
    proxy_cacert: str = ""
    """``[proxy] cacert``: the CA of a user's proxy's TLS certificates."""
    mqtt_balance: str = "client-id"
    """``[proxy] mqtt_balance``: what keeps a session on its broker (client-id, username,
    roundrobin). With mosquitto, username by default: an MQTT sweep's sessions share one,
    so its publishers and subscribers meet on one broker, while held sessions (no user
    name) spread round robin."""

    @property
    def listeners(self) -> tuple[str, ...]:
        """The kinds of listener HAProxy and the backends need: HTTP always (the
        default scenario's, and a WebSocket's upgrade), MQTT where an experiment runs it."""
        used = {"http"} | {SCHEMES[e.frontend].listener for e in self.experiments}
        return tuple(k for k in dict.fromkeys(s.listener for s in SCHEMES.values()) if k in used)

    def backend(self, listener: str) -> Backend:
        """What answers ``listener`` behind HAProxy."""
        return {
            "http": Backend("serve", self.backend_ports, "[backends] ports", "backends"),
            "mqtt": Backend(
                self.mqtt_backend, self.mqtt_ports, "[backends] mqtt_ports", "MQTT backends"
            ),
        }[listener]

    def backend_of(self, exp: Experiment[Any]) -> Backend:
        return self.backend(SCHEMES[exp.frontend].listener)

    def served(self) -> dict[str, tuple[int, ...]]:
        """The ports ``serve`` listens on, per kind of listener (mosquitto takes its own)."""
        return {k: b.ports for k in self.listeners if (b := self.backend(k)).shares_ports}

    @property
    def mqtt_timeout(self) -> float:
        """HAProxy's idle timeout on both sides of an MQTT session: 1.5x the longest
        keepalive, as a broker allows (MQTT 3.1.1, 3.1.2.10)."""
        keepalives = [
            e.session.keepalive for e in self.experiments if e.mqtt and e.session.keepalive
        ]
        return 1.5 * max(keepalives, default=60)

    def frontend_address(self, scheme: str) -> tuple[str, int]:
        """Where HAProxy listens for ``scheme`` (WebSockets through the HTTP frontends)."""
        return {
            "http": self.http,
            "https": self.https,
            "ws": self.http,
            "wss": self.https,
            "mqtt": self.mqtt,
            "mqtts": self.mqtts,
        }[scheme]

    def until(self, asked: str) -> str:
        """Where an MQTT sweep's latency ends: as ``asked``, else echo (serve's pong) with
        serve and delivery (to a subscriber) with mosquitto."""
        return asked or ("echo" if self.mqtt_backend == "serve" else "delivery")
