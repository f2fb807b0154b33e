"""A proxy the bench does not start: its counters from what it publishes.

HAProxy's stats page as CSV (``stats uri /stats`` in a ``listen`` or ``frontend``; the CSV
is the page's URL followed by ``;csv``) or its Prometheus endpoint (``http-request
use-service prometheus-exporter``). Either gives the same fields the stats socket's ``show
info`` gives for a proxy the bench started (:data:`tippingpoint.proxy.stats.SUMMED`), summed
over the frontends: current and total connections, total requests, the session rate.
A proxy's CPU and memory are not among them: they are seen only from its own machine.
"""

from __future__ import annotations

import csv
import io
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Final

__all__ = ["StatsError", "parse_csv", "parse_prometheus", "reader"]


class StatsError(RuntimeError):
    """The proxy's statistics cannot be read; a one-line reason."""


_CSV: Final = {"scur": "CurrConns", "stot": "CumConns", "req_tot": "CumReq", "rate": "SessRate"}
"""A frontend's CSV column -> the ``show info`` field it adds up to."""

_PROMETHEUS: Final = {
    "haproxy_frontend_current_sessions": "CurrConns",
    "haproxy_frontend_sessions_total": "CumConns",
    "haproxy_frontend_http_requests_total": "CumReq",
    "haproxy_frontend_current_session_rate": "SessRate",
}


def parse_csv(text: str) -> dict[str, float]:
    """The frontends' counters of HAProxy's stats CSV, summed."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    out = dict.fromkeys(_CSV.values(), 0.0)
    frontends = 0
    for row in rows:
        if row.get("svname") != "FRONTEND":
            continue
        frontends += 1
        for column, name in _CSV.items():
            value = row.get(column) or "0"
            out[name] += float(value) if value.replace(".", "", 1).isdigit() else 0.0
    if not frontends:
        raise StatsError("no FRONTEND rows: is this HAProxy's stats CSV?")
    return out


def parse_prometheus(text: str) -> dict[str, float]:
    """The frontends' counters of HAProxy's Prometheus exporter, summed over labels."""
    out = dict.fromkeys(_PROMETHEUS.values(), 0.0)
    seen = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric, _, value = line.rpartition(" ")
        name = metric.partition("{")[0]
        if name in _PROMETHEUS:
            seen = True
            try:
                out[_PROMETHEUS[name]] += float(value)
            except ValueError:
                continue
    if not seen:
        raise StatsError("no haproxy_frontend_* metrics: is this HAProxy's exporter?")
    return out


def _fetch(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return str(answer.read().decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise StatsError(f"cannot read {url}: {getattr(e, 'reason', e)}") from None


def reader(
    stats: str = "", prometheus: str = "", timeout: float = 2.0
) -> Callable[[], dict[str, float]]:
    """A function that reads the proxy's counters now (:class:`StatsError` if it cannot):
    from the stats page's CSV, else from the Prometheus endpoint."""
    if stats:
        url = stats if stats.endswith(";csv") else stats + ";csv"
        return lambda: parse_csv(_fetch(url, timeout))
    if prometheus:
        return lambda: parse_prometheus(_fetch(prometheus, timeout))
    raise ValueError("give the proxy's stats page or its Prometheus endpoint")
