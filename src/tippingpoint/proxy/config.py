"""The HAProxy configuration tippingpoint runs: rendered from one value, no I/O.

An HTTP frontend and a TLS frontend share one round-robin backend over the `serve`
ports, with health checks. ``maxconn`` follows from the real open-file limit: HAProxy
needs about two descriptors per connection (client side and server side). Timeouts
are long by default, as the article needed for its long-sleep requests.

MQTT frontends (plain, and TLS terminated by HAProxy) run in TCP mode in front of
``serve --mqtt`` or mosquitto: a connection whose first packet is not a valid CONNECT
is rejected (``mqtt_is_valid``), and a stick table on the CONNECT's client id (or user
name) keeps a client on the broker it first went to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tippingpoint.schemes import SCHEMES

__all__ = [
    "LOG_FORMAT",
    "MQTT_BALANCE",
    "Frontend",
    "MQTTRouting",
    "ProxyConfig",
    "binds_of",
    "derive_maxconn",
    "render",
    "with_stats_socket",
]

MQTT_BALANCE: Final = {
    "client-id": "req.payload(0,0),mqtt_field_value(connect,client_identifier)",
    "username": "req.payload(0,0),mqtt_field_value(connect,username)",
    "roundrobin": "",
}
"""How the MQTT backend is chosen: round robin for the first session of a client id (or
of a user name: a publisher and its subscribers), then a stick table keeps every later one
on the same broker. (``balance hash`` on the same expression compiles in HAProxy 2.6 but
finds no payload when it runs: the sessions went round robin.)"""

# The article's log line: client, date, frontend, backend/server, the timers
# Tq/Tw/Tc/Tr/Tt, status, bytes, termination state, connection counts, request line.
LOG_FORMAT: Final = (
    "%ci:%cp [%t] %ft %b/%s %Tq/%Tw/%Tc/%Tr/%Tt %ST %B %tsc %ac/%fc/%bc/%sc/%rc %{+Q}r"
)
_FD_RESERVE: Final = 200


def derive_maxconn(fd_limit: int) -> int:
    """Connections one HAProxy process can carry within ``fd_limit`` descriptors."""
    return max(100, (fd_limit - _FD_RESERVE) // 2)


_SPOKEN: Final = ("http", "https", "mqtt", "mqtts")


@dataclass(frozen=True, slots=True)
class Frontend:
    """An address HAProxy listens on and the scheme it speaks there: ``http`` or
    ``https`` (HTTP mode: WebSocket upgrades pass through them), ``mqtt`` or ``mqtts``
    (TCP mode). TLS is ended by HAProxy where the scheme has it."""

    scheme: str
    addr: tuple[str, int]

    def __post_init__(self) -> None:
        if self.scheme not in _SPOKEN:
            raise ValueError(f"a proxy frontend speaks {', '.join(_SPOKEN)}, not {self.scheme}")

    @property
    def app(self) -> str:
        return SCHEMES[self.scheme].app

    def __str__(self) -> str:
        return f"{self.scheme}://{self.addr[0]}:{self.addr[1]}"


@dataclass(frozen=True, slots=True)
class MQTTRouting:
    """How MQTT sessions reach their brokers."""

    balance: str = "client-id"
    validate: bool = True
    """Refuse a connection whose first packet is not a valid CONNECT (``mqtt_is_valid``)."""
    timeout_s: float | None = None
    """Idle time an MQTT session may spend between packets on either side (it must be at
    least 1.5x the clients' keepalive). Default: the client timeout."""

    def __post_init__(self) -> None:
        if self.balance not in MQTT_BALANCE:
            raise ValueError(f"MQTT balance: use {', '.join(MQTT_BALANCE)}")


_WEB_DEFAULT: Final = (
    Frontend("http", ("127.0.0.1", 8080)),
    Frontend("https", ("127.0.0.1", 8443)),
)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    servers: Mapping[str, tuple[tuple[str, int], ...]]
    """The backend servers of each application (a scheme's ``app``: "http", "mqtt")."""
    frontends: tuple[Frontend, ...] = _WEB_DEFAULT
    cert_bundle: Path | None = None
    maxconn: int = 9900
    nbthread: int = 1
    cpus: tuple[int, ...] = ()
    """CPUs HAProxy runs on (set when it starts and read back, see ProxyFleet; also
    written as ``cpu-map``, thread i on cpus[i % len], for a daemon-mode reader of the
    file); empty: no pinning."""
    timeout_connect_s: float = 10.0
    timeout_client_s: float = 7200.0
    timeout_server_s: float = 7200.0
    timeout_request_s: float | None = None
    """``timeout http-request``: also how long a new connection may wait, idle, for its
    first request — HAProxy's 30 s habit cuts every held connection. Default: the client
    timeout."""
    timeout_tunnel_s: float | None = None
    """``timeout tunnel``: how long an upgraded connection (WebSocket) may stay silent on
    both sides; it must outlast the clients' ping interval. Default: the client timeout."""
    rate_limit_sessions: int | None = None
    http_reuse: str | None = None
    """``http-reuse`` for the backend (never, safe, aggressive, always); None: HAProxy's
    default (safe: a session's first request opens its own backend connection)."""
    log: bool = False
    mqtt: MQTTRouting = MQTTRouting()
    health_checks: bool = True
    stats_socket: Path = Path("haproxy.sock")
    extra_global: tuple[str, ...] = field(default=())
    raw: str | None = None
    """A user's own configuration, run as written with a stats socket added (its
    frontends, backends and tuning are its own; the fields above then only tell the
    bench where its frontends are)."""

    def __post_init__(self) -> None:
        if not self.frontends:
            raise ValueError("give an HTTP, TLS or MQTT frontend address")
        for app in self.apps:
            if not self.servers.get(app):
                raise ValueError(_SECTIONS_OF[app][1])
        if self.cert_bundle is None and any(SCHEMES[f.scheme].tls for f in self.frontends):
            raise ValueError("the TLS frontend needs a certificate bundle")
        if self.nbthread < 1 or self.maxconn < 1:
            raise ValueError("threads and maxconn must be >= 1")
        if self.http_reuse not in (None, "never", "safe", "aggressive", "always"):
            raise ValueError("http-reuse: use never, safe, aggressive or always")

    @property
    def apps(self) -> tuple[str, ...]:
        """The applications it carries, in the order of their first frontend."""
        return tuple(dict.fromkeys(f.app for f in self.frontends))

    def address(self, scheme: str) -> tuple[str, int] | None:
        """The address of the frontend that speaks ``scheme``, if there is one."""
        return next((f.addr for f in self.frontends if f.scheme == scheme), None)


def _ms(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


def with_stats_socket(text: str, path: Path) -> str:
    """``text`` with an admin stats socket at ``path`` in its ``global`` section (one
    added at the top when it has none)."""
    line = f"    stats socket {path} mode 600 level admin"
    lines = text.splitlines()
    for i, current in enumerate(lines):
        if current.split("#", 1)[0].strip() == "global":
            return "\n".join([*lines[: i + 1], line, *lines[i + 1 :]]) + "\n"
    return "\n".join(["global", line, "", *lines]) + "\n"


def binds_of(text: str) -> list[tuple[tuple[str, int], bool]]:
    """The ``bind`` addresses of a configuration, each with whether it speaks TLS
    (``ssl``); a bind on every address (``:8080``, ``*:8080``) is reached at 127.0.0.1."""
    out = []
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split()
        if len(words) < 2 or words[0] != "bind":
            continue
        for address in words[1].split(","):
            host, _, port = address.rpartition(":")
            if port.isdigit():
                host = host.strip("[]")
                out.append(
                    (
                        (host if host not in ("", "*", "0.0.0.0") else "127.0.0.1", int(port)),
                        "ssl" in words[2:],
                    )
                )
    return out


def render(config: ProxyConfig) -> str:
    if config.raw is not None:
        return with_stats_socket(config.raw, config.stats_socket)
    request_timeout = config.timeout_request_s
    if request_timeout is None:
        request_timeout = config.timeout_client_s
    lines = [
        "global",
        f"    maxconn {config.maxconn}",
        f"    nbthread {config.nbthread}",
        f"    stats socket {config.stats_socket} mode 600 level admin expose-fd listeners",
        "    tune.ssl.default-dh-param 2048",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
    ]
    if config.cpus:
        for thread in range(config.nbthread):
            lines.append(f"    cpu-map 1/{thread + 1} {config.cpus[thread % len(config.cpus)]}")
    if config.log:
        lines.append("    log stdout format raw local0")
    lines.extend(f"    {line}" for line in config.extra_global)
    lines += [
        "",
        "defaults",
        "    mode http",
        f"    maxconn {config.maxconn}",
        "    retries 3",
        "    option redispatch",
        "    option dontlognull",
        f"    timeout connect {_ms(config.timeout_connect_s)}",
        f"    timeout client {_ms(config.timeout_client_s)}",
        f"    timeout server {_ms(config.timeout_server_s)}",
        f"    timeout http-keep-alive {_ms(config.timeout_client_s)}",
        f"    timeout http-request {_ms(request_timeout)}",
        "    timeout check 5s",
    ]
    if config.log:
        lines += ["    log global", f'    log-format "{LOG_FORMAT}"']
    for app in config.apps:
        lines += _SECTIONS_OF[app][0](config)
    return "\n".join(lines) + "\n"


def _binds(config: ProxyConfig, app: str, tls_options: str = "") -> list[str]:
    """The ``bind`` lines of the frontends that carry ``app``; TLS where the scheme has it."""
    lines = []
    for f in config.frontends:
        if f.app == app:
            tls = f" ssl crt {config.cert_bundle}{tls_options}" if SCHEMES[f.scheme].tls else ""
            lines.append(f"    bind {f.addr[0]}:{f.addr[1]}{tls}")
    return lines


def _http(config: ProxyConfig) -> list[str]:
    lines = ["", "frontend api", *_binds(config, "http", " alpn http/1.1")]
    if config.rate_limit_sessions is not None:
        lines.append(f"    rate-limit sessions {config.rate_limit_sessions}")
    lines += ["    default_backend servers", "", "backend servers", "    balance roundrobin"]
    # Upgraded connections (WebSocket): here, not in defaults, where TCP-mode MQTT
    # sessions would take it in place of their own idle timeout.
    lines.append(f"    timeout tunnel {_ms(config.timeout_tunnel_s or config.timeout_client_s)}")
    if config.http_reuse is not None:
        lines.append(f"    http-reuse {config.http_reuse}")
    if config.health_checks:
        lines += ["    option httpchk GET /health", "    default-server inter 2s fall 3 rise 2"]
    check = " check" if config.health_checks else ""
    for i, (host, port) in enumerate(config.servers["http"], start=1):
        lines.append(f"    server s{i} {host}:{port}{check}")
    return lines


def _mqtt(config: ProxyConfig) -> list[str]:
    routing = config.mqtt
    idle = _ms(routing.timeout_s or config.timeout_client_s)
    lines = ["", "frontend mqtt", "    mode tcp", *_binds(config, "mqtt")]
    if config.rate_limit_sessions is not None:
        lines.append(f"    rate-limit sessions {config.rate_limit_sessions}")
    if routing.validate or MQTT_BALANCE[routing.balance]:
        # Wait for the first packet (10 s at most): the stick table reads its client id.
        lines.append("    tcp-request inspect-delay 10s")
    if routing.validate:
        # The first packet must be a whole, valid CONNECT.
        lines.append("    tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }")
    lines += [
        f"    timeout client {idle}",
        "    default_backend mqtt_servers",
        "",
        "backend mqtt_servers",
        "    mode tcp",
        "    balance roundrobin",
    ]
    key = MQTT_BALANCE[routing.balance]
    if key:
        # Entries live as long as an idle session may: a client that comes back within
        # that time finds its broker (and its persistent session) again.
        lines += [
            f"    stick-table type string len 128 size 2m expire {idle}",
            f"    stick on {key}",
        ]
    lines.append(f"    timeout server {idle}")
    check = " check inter 2s fall 3 rise 2" if config.health_checks else ""
    for i, (host, port) in enumerate(config.servers["mqtt"], start=1):
        lines.append(f"    server m{i} {host}:{port}{check}")
    return lines


_SECTIONS_OF: Final[dict[str, tuple[Callable[[ProxyConfig], list[str]], str]]] = {
    # a scheme's app: (its frontend and backend sections, what to say when it has no servers)
    "http": (_http, "give at least one backend address, e.g. 127.0.0.1:8282"),
    "mqtt": (_mqtt, "give the MQTT backends, e.g. --mqtt-backends 127.0.0.1:1883"),
}
