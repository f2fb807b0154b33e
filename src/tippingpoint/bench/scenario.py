"""Bench scenarios: TOML in, a validated :class:`Scenario` out; no I/O but reading files.

The default scenario ships once, as package data (``default.toml``): ``bench
--print-scenario`` prints it and the tests read it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import replace
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from tippingpoint.bench.keys import check_keys, with_line
from tippingpoint.bench.kinds import KIND_NAMES, KINDS
from tippingpoint.bench.kinds.base import whole
from tippingpoint.bench.spec import (
    Backend,
    ClusterSpec,
    Experiment,
    External,
    Hosts,
    Request,
    Scenario,
    ScenarioError,
    Session,
    Setup,
)
from tippingpoint.pacer import parse_duration
from tippingpoint.plan import ConnectionPlan
from tippingpoint.proxy.config import MQTT_BALANCE, binds_of
from tippingpoint.schemes import SCHEMES
from tippingpoint.server.config import parse_cpus, parse_ports
from tippingpoint.targets import parse_header

__all__ = [
    "DEFAULT_SCENARIO",
    "MQTT_BACKENDS",
    "Backend",
    "Experiment",
    "Scenario",
    "ScenarioError",
    "Setup",
    "parse_scenario",
    "plan_holds",
    "quick",
]

DEFAULT_SCENARIO = files("tippingpoint.bench").joinpath("default.toml").read_text()


MQTT_BACKENDS = ("serve", "mosquitto")


_SETUP_KEYS = (
    "name",
    "threads",
    "instances",
    "cpus",
    "cert",
    "backend_processes",
    "client_processes",
)


def _setup(raw: dict[str, Any], i: int) -> Setup:
    key = f"matrix[{i}]"
    unknown = sorted(set(raw) - set(_SETUP_KEYS))
    if unknown:
        raise ScenarioError(f"{key}.{unknown[0]}: a setup sets {', '.join(_SETUP_KEYS[1:])}")
    if "name" not in raw:
        raise ScenarioError(f"{key}.name: each setup needs a name (it labels the charts)")
    cert = raw.get("cert")
    if cert is not None and cert not in ("ecdsa", "rsa"):
        raise ScenarioError(f"{key}.cert: use ecdsa or rsa")
    counts = {k: raw.get(k) for k in _SETUP_KEYS[1:] if k not in ("cpus", "cert")}
    for name, value in counts.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ScenarioError(f"{key}.{name}: a whole number >= 1")
    return Setup(
        name=str(raw["name"]),
        threads=raw.get("threads"),
        instances=raw.get("instances"),
        cpus=parse_cpus(str(raw["cpus"])) if raw.get("cpus") is not None else None,
        cert=cert,
        backend_processes=raw.get("backend_processes"),
        client_processes=raw.get("client_processes"),
    )


def _cluster(raw: dict[str, Any]) -> ClusterSpec | None:
    if not raw:
        return None
    address = raw.get("address")  # its keys: checked with every table's (bench/keys.py)
    names: tuple[str, ...] = ()
    if isinstance(raw.get("workers"), list):
        names = _names(raw["workers"], "cluster.workers")
        raw = {**raw, "workers": len(names)}
    workers = whole(raw, "workers", 0, "cluster", 0)
    if (address is None) == (workers == 0):
        raise ScenarioError(
            'cluster: give address = "tcp://HOST:PORT" (a running scheduler) or workers = N '
            "(a local cluster for the bench), not both"
        )
    if workers < 0 or workers > 255:
        raise ScenarioError("cluster.workers: 1 to 255")
    return ClusterSpec(
        address=str(address) if address is not None else None,
        workers=workers,
        names=names,
        certs=str(raw["certs"]) if raw.get("certs") else None,
        max_clock_skew=parse_duration(str(raw.get("max_clock_skew", "50ms"))),
        insecure=bool(raw.get("insecure", False)),
    )


def _cpus(table: dict[str, Any], elsewhere: bool) -> tuple[int, ...]:
    """A role's ``cpus`` (none: ()); ``elsewhere``: of another host's, checked there."""
    if table.get("cpus") is None:
        return ()
    return parse_cpus(str(table["cpus"]), None if elsewhere else 0)


def _names(value: Any, key: str) -> tuple[str, ...]:
    """A list of host (or worker) names, each once."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ScenarioError(f'{key}: a list of names, e.g. ["be1", "be2"]')
    if len(set(value)) < len(value):
        raise ScenarioError(f"{key}: a name is given twice")
    return tuple(value)


def _hosts(data: dict[str, Any]) -> Hosts:
    """``[hosts]`` and where each role runs; a role's host must be a name of ``[hosts]``
    when there is one (else a worker's name, address or host name, found at the start)."""
    table = data.get("hosts", {})
    for name, worker in table.items():
        if not isinstance(worker, str) or not worker:
            raise ScenarioError(
                f"hosts.{name}: the Dask worker this host is: its name, its address "
                '("tls://client-1.example:40000") or its machine\'s host name'
            )
    proxy = data.get("proxy", {}).get("host", "")
    if not isinstance(proxy, str):
        raise ScenarioError('proxy.host: one name, e.g. "lb"')
    roles = {
        "proxy.host": (proxy,) if proxy else (),
        "backends.hosts": _names(data["backends"]["hosts"], "backends.hosts")
        if "hosts" in data.get("backends", {})
        else (),
        "broker.hosts": _names(data["broker"]["hosts"], "broker.hosts")
        if "hosts" in data.get("broker", {})
        else (),
        "client.hosts": _names(data["client"]["hosts"], "client.hosts")
        if "hosts" in data.get("client", {})
        else (),
    }
    for key, names in roles.items():
        for name in names:
            if table and name not in table:
                raise ScenarioError(
                    f"{key}: {name!r} is not a host of [hosts] ({', '.join(table)})"
                )
    if proxy and not roles["backends.hosts"] and not data.get("backends", {}).get("external"):
        raise ScenarioError(
            f"backends.hosts: the proxy runs on {proxy}: name the backends' hosts too (e.g. "
            '["be1", "be2"]), which it reaches at their own addresses'
        )
    if not proxy and (roles["backends.hosts"] or roles["broker.hosts"]):
        raise ScenarioError(
            'proxy.host: the backends run on hosts of the lab: name the proxy\'s too (e.g. "lb")'
        )
    return Hosts(
        workers=tuple((str(k), str(v)) for k, v in table.items()),
        proxy=proxy,
        backends=roles["backends.hosts"],
        brokers=roles["broker.hosts"],
        client=roles["client.hosts"],
    )


def _external(proxy: dict[str, Any], experiments: list[Experiment[Any]]) -> External | None:
    """``[proxy] external``: refused with what it cannot do."""
    if "external" not in proxy:
        for key in ("stats", "prometheus", "cacert"):
            if key in proxy:
                raise ScenarioError(
                    f"proxy.{key}: read for an external proxy only (external = ...)"
                )
        return None
    for exp in experiments:
        if exp.kind == "tls-cost" and not proxy.get("host"):
            raise ScenarioError(
                f"proxy.external: {exp.name!r} (tls-cost) reads HAProxy's CPU from its "
                "processes, which are not seen from here: name its host (proxy.host, a worker "
                "beside it), remove the experiment, or drop external"
            )
        key = {"ws": "http", "wss": "https"}.get(exp.frontend, exp.frontend)
        if key != "http" and key not in proxy:
            raise ScenarioError(
                f"proxy.{key}: {exp.name!r} goes through the external proxy's {key} frontend: "
                f'give its address (proxy.{key} = "HOST:PORT")'
            )
    return External(
        address=_addr(str(proxy["external"]), "proxy.external"),
        stats=str(proxy.get("stats", "")),
        prometheus=str(proxy.get("prometheus", "")),
    )


_DECIDED_BY_CONFIG: Final = ("threads", "cert", "rate_limit", "http_reuse", "mqtt_balance")
"""``[proxy]`` keys a user's own configuration decides for itself."""


def _own_config(proxy: dict[str, Any]) -> dict[str, Any]:
    """``[proxy] config``: the user's file as text, and its frontends where the scenario
    does not give them (its first plain and first TLS ``bind``)."""
    if "config" not in proxy:
        return {}
    path = Path(str(proxy["config"]))
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"proxy.config: cannot read {path}: {e.strerror or e}") from None
    for key in _DECIDED_BY_CONFIG:
        if key in proxy:
            raise ScenarioError(
                f"proxy.{key}: your configuration ({path}) decides this: set it there"
            )
    binds = binds_of(text)
    if not binds:
        raise ScenarioError(f"proxy.config: {path} has no bind line: nothing to send load to")
    found = {}
    for address, tls in reversed(binds):
        found["https" if tls else "http"] = f"{address[0]}:{address[1]}"
    return {**found, **proxy, "raw": text}


def _addr(text: str, key: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ScenarioError(f"{key}: use HOST:PORT, got {text!r}")
    return host, int(port)


def _experiment(raw: dict[str, Any], i: int) -> Experiment[Any]:
    key = f"experiment[{i}]"
    name = raw.get("kind", "sweep")
    if name not in KINDS:
        names = ", ".join(KIND_NAMES[:-1]) + " or " + KIND_NAMES[-1]
        raise ScenarioError(f"{key}.kind: use {names}, got {name!r}")
    kind = KINDS[name]
    frontend = raw.get("frontend", kind.frontends[0])
    if frontend not in kind.frontends:
        raise ScenarioError(f"{key}.frontend: a {name} goes through {' or '.join(kind.frontends)}")
    return Experiment(
        name=str(raw.get("name", f"experiment {i + 1}")),
        kind=name,
        spec=kind.parse(raw, key),
        frontend=frontend,
        timeout=parse_duration(str(raw.get("timeout", "30s"))),
        **_APP_KEYS[SCHEMES[frontend].app](raw, key),
    )


def _request(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """What a request (or a WebSocket message) is made of, through an HTTP or WebSocket
    frontend."""
    body_file = raw.get("body_file")
    return {
        "request": Request(
            keepalive=bool(raw.get("keepalive", True)),
            headers=tuple(parse_header(h) for h in raw.get("headers", [])),
            body=Path(body_file).read_bytes() if body_file else b"",
            method=str(raw.get("method", "POST" if body_file else "GET")).upper(),
            path=str(raw.get("path", "/ping")),
            tls_resume=bool(raw.get("tls_resume", False)),
        )
    }


def _session(raw: dict[str, Any], key: str) -> dict[str, Any]:
    """An MQTT session's keepalive, through an MQTT frontend (its connection is always
    kept: a session)."""
    keepalive = 60
    if "keepalive" in raw:
        # MQTT's keepalive is a time (emqtt-bench -k), HTTP's a yes or no.
        if isinstance(raw["keepalive"], bool):
            raise ScenarioError(f'{key}.keepalive: MQTT\'s keepalive is seconds, e.g. "60s"')
        keepalive = round(
            parse_duration(
                str(raw["keepalive"]) + ("s" if isinstance(raw["keepalive"], int) else "")
            )
        )
        if not 0 <= keepalive <= 65535:
            raise ScenarioError(f"{key}.keepalive: seconds within 0-65535")
    if raw.get("request_every"):
        raise ScenarioError(f"{key}.request_every: MQTT sessions ping once per keepalive")
    return {"session": Session(keepalive)}


_APP_KEYS: Final[dict[str, Callable[[dict[str, Any], str], dict[str, Any]]]] = {
    "http": _request,
    "messages": _request,
    "mqtt": _session,
}
"""What each application reads of an experiment's table, by ``Scheme.app``."""


def parse_scenario(text: str) -> Scenario:
    """The scenario in ``text``; :class:`ScenarioError` names the key that is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"not valid TOML: {e}") from None
    try:
        check_keys(data, text)
    except ValueError as e:
        raise ScenarioError(str(e)) from None
    bench, backends = data.get("bench", {}), data.get("backends", {})
    proxy, client = data.get("proxy", {}), data.get("client", {})
    proxy = {**proxy, **_own_config(proxy)}
    try:
        experiments = [_experiment(raw, i) for i, raw in enumerate(data.get("experiment", []))]
        if not experiments:
            raise ScenarioError("no [[experiment]] tables: add at least one")
        setups = tuple(_setup(raw, i) for i, raw in enumerate(data.get("matrix", [])))
        if len({s.name for s in setups}) < len(setups):
            raise ScenarioError("matrix: two setups have the same name")
        if proxy.get("http_reuse") not in (None, "never", "safe", "aggressive", "always"):
            raise ScenarioError("proxy.http_reuse: use never, safe, aggressive or always")
        mqtt_backend = str(backends.get("mqtt", "serve"))
        if mqtt_backend not in MQTT_BACKENDS:
            raise ScenarioError(
                'backends.mqtt: use "serve" (tippingpoint serve --mqtt) or "mosquitto"'
            )
        mqtt_ports = parse_ports(str(backends.get("mqtt_ports", "21883-21884")))
        consecutive = list(range(mqtt_ports[0], mqtt_ports[0] + len(mqtt_ports)))
        if mqtt_backend == "mosquitto" and list(mqtt_ports) != consecutive:
            raise ScenarioError(
                "backends.mqtt_ports: mosquitto instances listen on consecutive ports "
                '(one each), e.g. "21883-21886"'
            )
        balance = str(
            proxy.get("mqtt_balance", "username" if mqtt_backend == "mosquitto" else "client-id")
        )
        if balance not in MQTT_BALANCE:
            raise ScenarioError(f"proxy.mqtt_balance: use {', '.join(MQTT_BALANCE)}")
        scenario = Scenario(
            title=str(bench.get("title", "tippingpoint bench")),
            backend_ports=parse_ports(str(backends.get("ports", "8282-8285"))),
            backend_processes=whole(backends, "processes", 1, "backends"),
            backend_cpus=_cpus(backends, "hosts" in backends),
            proxy_threads=whole(proxy, "threads", 1, "proxy"),
            proxy_instances=whole(proxy, "instances", 1, "proxy"),
            proxy_cpus=_cpus(proxy, "host" in proxy),
            cert=str(proxy.get("cert", "ecdsa")),
            http=_addr(
                str(proxy.get("external", proxy.get("http", "127.0.0.1:18080"))), "proxy.http"
            ),
            https=_addr(str(proxy.get("https", "127.0.0.1:18443")), "proxy.https"),
            rate_limit=proxy.get("rate_limit"),
            http_reuse=proxy.get("http_reuse"),
            client_processes=whole(client, "processes", 1, "client"),
            client_cpus=parse_cpus(str(client["cpus"])) if client.get("cpus") is not None else (),
            experiments=tuple(experiments),
            open_files=whole(bench, "open_files", 1, "bench") if "open_files" in bench else None,
            setups=setups,
            mqtt_backend=mqtt_backend,
            mqtt_ports=mqtt_ports,
            mqtt=_addr(str(proxy.get("mqtt", "127.0.0.1:11883")), "proxy.mqtt"),
            mqtts=_addr(str(proxy.get("mqtts", "127.0.0.1:18883")), "proxy.mqtts"),
            mqtt_balance=balance,
            cluster=_cluster(data.get("cluster", {})),
            hosts=_hosts(data),
            external=_external(proxy, experiments),
            backends_external=bool(backends.get("external", False)),
            proxy_raw=proxy.get("raw"),
            proxy_cacert=str(proxy.get("cacert", "")),
        )
        for exp in scenario.experiments:
            check = KINDS[exp.kind].check
            if check is not None:
                check(exp, scenario)
        return scenario
    except (ScenarioError, ValueError, OSError, TypeError) as e:
        raise ScenarioError(with_line(str(e), text)) from None


def quick(scenario: Scenario) -> Scenario:
    """A few minutes: each kind's quick spec (short steps, fewer of them, short attacks
    and holds, half the confirmation)."""
    return replace(
        scenario,
        experiments=tuple(
            replace(e, spec=KINDS[e.kind].quick(e.spec)) for e in scenario.experiments
        ),
    )


def plan_holds(
    scenario: Scenario,
    fd_limit: int,
    ports: tuple[int, int],
    memory: int | None,
) -> dict[int, ConnectionPlan]:
    """The plan of every experiment that holds connections (client processes, source
    addresses, backend processes, HAProxy instances), made by its kind before anything
    starts: one that cannot fit is refused with its numbers."""
    plans = {}
    for index, exp in enumerate(scenario.experiments):
        make_plan = KINDS[exp.kind].plan
        if make_plan is not None:
            plans[index] = make_plan(scenario, exp, fd_limit, ports, memory)
    return plans
