"""What physics guarantees, checked against the bench's own figures. Pure: report
entries in, warnings out (one sentence each, with the figures that disagree).

* TLS costs HAProxy more per request than plain HTTP: on the same frontend, the plain
  HTTP keep-alive knee is not below the TLS keep-alive knee, and a tls-cost experiment
  does not find TLS keep-alive cheaper.
* A new connection per request costs more than a kept one: the TLS new-connection
  knee is not above the TLS keep-alive knee.
* An open model cannot carry more than a closed loop on the same frontend: the open
  sweep's tipping point is not above the closed sweep's best throughput.
* A generator with CPU to spare is not the limit: a sweep that ends "client-limited"
  had its CPUs nearly full.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from typing import Any

__all__ = ["invariants"]

_NOISE = 1.05
"""Figures this close are the same within the noise of repeated runs."""

_ROOM = 80.0
"""A client whose CPUs were less busy than this (%) had room left."""


def _sweeps(experiments: list[dict[str, Any]], model: str) -> Iterator[dict[str, Any]]:
    for exp in experiments:
        if exp.get("kind") == "sweep" and exp["sweep"].get("model") == model:
            yield exp


def _find(
    experiments: list[dict[str, Any]], setup: str, frontend: str, keepalive: bool
) -> dict[str, Any] | None:
    for exp in _sweeps(experiments, "open"):
        same = exp.get("setup", "") == setup and exp.get("frontend") == frontend
        if same and exp.get("keepalive", True) == keepalive:
            return exp
    return None


def _knee(exp: dict[str, Any] | None) -> tuple[float, float] | None:
    """``(last good, first bad)`` of a sweep with a confirmed knee."""
    if exp is None:
        return None
    sweep = exp["sweep"]
    if sweep.get("tipping_point") is None or sweep.get("first_bad") is None:
        return None
    return float(sweep.get("last_good") or sweep["tipping_point"]), float(sweep["first_bad"])


def _span(knee: tuple[float, float]) -> str:
    return f"{knee[0]:,.0f}-{knee[1]:,.0f}/s"


def _tls_order(experiments: list[dict[str, Any]], setup: str) -> list[str]:
    where = f" [{setup}]" if setup else ""
    out = []
    http = _knee(_find(experiments, setup, "http", True))
    tls = _knee(_find(experiments, setup, "https", True))
    new = _knee(_find(experiments, setup, "https", False))
    if http and tls and http[0] < tls[0]:
        out.append(
            f"The plain HTTP keep-alive knee ({_span(http)}) is below the TLS keep-alive "
            f"knee ({_span(tls)}) on the same HAProxy{where}, though TLS costs it more per "
            "request: one of them was measured on a disturbed machine, or within the "
            "noise of the knee; run the bench again before using either"
        )
    if tls and new and new[0] > tls[1] * _NOISE:
        out.append(
            f"TLS with a new connection per request tipped over at {_span(new)}, above TLS "
            f"keep-alive ({_span(tls)}){where}, though every handshake costs more than a "
            "request: check the two sweeps' tables"
        )
    return out


def _tls_cost(exp: dict[str, Any]) -> list[str]:
    ratios = [r["tls_over_http"] for r in exp["tls_cost"].get("ratios", [])]
    if ratios and statistics.median(ratios) < 1 / _NOISE:
        return [
            f"{exp['name']}: TLS keep-alive cost HAProxy {statistics.median(ratios):.2f}x the "
            "CPU of plain HTTP per request: less than plain HTTP, which physics rules out; "
            "HAProxy's CPU was not measured where it ran"
        ]
    return []


def _open_over_closed(experiments: list[dict[str, Any]], setup: str) -> list[str]:
    out = []
    for closed in _sweeps(experiments, "closed"):
        if closed.get("setup", "") != setup:
            continue
        best = max((s["achieved"] for s in closed["sweep"]["steps"]), default=0.0)
        knee = _knee(_find(experiments, setup, closed.get("frontend", "http"), True))
        if best and knee and knee[0] > best * _NOISE:
            out.append(
                f"The open-model tipping point ({_span(knee)}) is above the most the closed "
                f"loop carried through the same frontend ({best:,.0f}/s in "
                f"{closed['name']!r}): an open model cannot carry more"
            )
    return out


def _client_room(exp: dict[str, Any]) -> list[str]:
    sweep = exp.get("sweep") or {}
    if not sweep.get("client_limited") or not sweep.get("steps"):
        return []
    last = [s for s in sweep["steps"] if not s.get("disturbed")][-1]
    load = last.get("client_load_pct")
    if load is not None and load < _ROOM:
        return [
            f"{exp['name']}: called client-limited with the client's CPUs {load:.0f} % busy; "
            "a generator with room is not the limit (the connection pool or the server's "
            "queue may be): read the step's lateness and queue"
        ]
    return []


def invariants(experiments: list[dict[str, Any]]) -> list[str]:
    """Every place where the bench's figures contradict what physics guarantees."""
    out: list[str] = []
    setups = list(dict.fromkeys(exp.get("setup", "") for exp in experiments))
    for setup in setups:
        out += _tls_order(experiments, setup)
        out += _open_over_closed(experiments, setup)
    for exp in experiments:
        if exp.get("kind") == "tls-cost":
            out += _tls_cost(exp)
        out += _client_room(exp)
    return out
