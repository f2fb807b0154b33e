"""The live page: the report's own body and charts, drawn again as the run grows.

The page is one HTML file with plotly.js inside (no network, no build step). It opens
an event stream; each update carries the report's body (:func:`render_body`), its data
and a status panel. The page swaps the body when it changed and calls the report's
``draw`` (:data:`DRAW`) on the data, so the live charts and the final report's are
drawn by the same code. The experiment running now is drawn as the report draws a
finished one: its latency and rate over time, the steps finished so far against the
offered rate, a hold's connections over time.
"""

from __future__ import annotations

import html
import json
from typing import Any

from tippingpoint.bench.report import monitor_series, timeline_of
from tippingpoint.report.html import DRAW, STYLE, plotly_js, render_body
from tippingpoint.web.feed import Running, State

__all__ = ["page_html", "update"]

_BLANK: dict[str, Any] = {
    "summary": [],
    "experiments": [],
    "config": "(none yet)",
    "failure": None,
    "setups": [],
    "placement": [],
    "warnings": [],
}

_LIVE_STYLE = """
#live { position: sticky; top: 0; background: #fff; border-bottom: 2px solid #2a6;
        padding: 0.4em 0; z-index: 10; }
#live .ended { color: #a60; } #live ul { max-height: 9em; overflow-y: auto; margin: 0.3em 0;
        font-family: monospace; font-size: 0.85em; padding-left: 1.2em; }
#live li.warning { color: #b60; } #live li.error { color: #c00; }
"""

_CLIENT = """
const token = new URLSearchParams(location.search).get('token');
const q = token ? '?token=' + encodeURIComponent(token) : '';
// The report's sections, each replaced only when its HTML changed (the charts of the
// others are left as they are; draw() redraws only the charts whose figures changed).
function patch(container, body) {
  const fresh = document.createElement('div');
  fresh.innerHTML = body;
  const wanted = Array.from(fresh.children);
  const ids = new Set(wanted.map(e => e.id));
  for (const old of Array.from(container.children)) if (!ids.has(old.id)) old.remove();
  let before = null;
  for (const section of wanted) {
    const html = section.outerHTML;
    let current = document.getElementById(section.id);
    if (!current || current.sourceHtml !== html) {
      section.sourceHtml = html;
      if (current) current.replaceWith(section); else container.appendChild(section);
      current = section;
    }
    const next = before ? before.nextElementSibling : container.firstElementChild;
    if (next !== current) container.insertBefore(current, next);
    before = current;
  }
}
const source = new EventSource('events' + q);
source.onmessage = (event) => {
  const u = JSON.parse(event.data);
  document.getElementById('live').innerHTML = u.live.replaceAll('{q}', q);
  patch(document.getElementById('report'), u.body);
  draw(u.data);
  document.body.dataset.version = String(u.version);
  if (u.ended) {
    document.body.dataset.ended = u.ended;
    source.close();
  }
};
source.onerror = () => { document.body.dataset.disconnected = '1'; };
"""


def page_html(title: str) -> bytes:
    """The page as served: empty until its first update arrives (at once, with the
    history so far)."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)} (live)</title><style>{STYLE}{_LIVE_STYLE}</style>"
        f"<script>{plotly_js()}</script></head><body>"
        '<div id="live">connecting…</div><div id="report"></div>'
        f"<script>{DRAW}{_CLIENT}</script></body></html>\n"
    ).encode()


def update(state: State) -> bytes:
    """One update of the page, as its JSON text."""
    data = _data(state)
    return json.dumps(
        {
            "version": state.version,
            "ended": state.ended,
            "live": _panel(state),
            "body": render_body(data),
            "data": data,
        },
        default=str,
    ).encode()


def _data(state: State) -> dict[str, Any]:
    base = state.report or {**_BLANK, "title": state.title, "machine": state.host}
    data = dict(base)
    if state.samples or "monitor" not in data:
        data["monitor"] = monitor_series(state.samples)
    if state.running is not None:
        how = "ended" if state.ended else "running"
        data["experiments"] = [*data["experiments"], *_running(state.running, how)]
    return data


def _running(r: Running, how: str) -> list[dict[str, Any]]:
    """The running experiment as the report's entries: steps so far, hold, timeline."""
    common = {"setup": "", "costs_row": False, "per_1000": False, "tls": False}
    out: list[dict[str, Any]] = []
    if r.sweep is not None:
        out.append({**common, "id": "live-steps", "name": f"{r.name} ({how})",
                    "description": r.description, "shape": "sweep", "sweep": r.sweep})  # fmt: skip
    elif r.rows:
        closed = r.rows[0].get("connections") is not None
        out.append(
            {
                **common,
                "id": "live-steps",
                "name": f"{r.name} ({how})",
                "description": r.description,
                "shape": "sweep",
                "sweep": {
                    "model": "closed" if closed else "open",
                    "running": how == "running",
                    "tipping_point": None,
                    "first_bad": None,
                    "knee_connections": None,
                    "client_limited": False,
                    "reason": f"{len(r.rows)} step(s) finished so far",
                    "steps": r.rows,
                },
            }
        )
    if r.hold:
        ts = sorted(r.hold)
        out.append(
            {
                **common,
                "id": "live-hold",
                "name": f"{r.name} ({how})",
                "description": r.description,
                "shape": "hold",
                "noun": "connections",
                "ping": "request",
                "report": r.step,
                "hold": {
                    "t": ts,
                    "established": [r.hold[t][0] for t in ts],
                    "lost": [r.hold[t][1] for t in ts],
                    "request_p99_ms": [r.hold[t][2] / 1000 for t in ts],
                },
            }
        )
    if r.seconds or not out:
        out.append(
            {
                **common,
                "id": "live-now",
                "name": f"{r.name} ({how}{': ' + r.step if r.step else ''})",
                "description": r.description,
                "shape": "attack",
                "report": r.step or "waiting for the first second of load",
                "timeline": timeline_of(r.seconds),
            }
        )
    return out


def _panel(state: State) -> str:
    """What runs now, what is left, and the log as it comes; or how the run ended."""
    esc = html.escape
    if state.ended:
        link = (
            f' Final report: <a id="final-report" href="report/index.html{{q}}">'
            f"{esc(state.report_path)}</a>"
            if state.report_path
            else ""
        )
        head = f'<p class="ended"><b>The run ended</b> ({esc(state.ended)}).{link}</p>'
    elif state.running is not None:
        r = state.running
        left = ", ".join(r.left) if r.left else "nothing after it"
        head = (
            f'<p><b>Running:</b> <span id="running">{esc(r.name)}</span>'
            f"{' — ' + esc(r.step) if r.step else ''}. Left: {esc(left)}.</p>"
        )
    else:
        head = "<p><b>Starting</b>…</p>"
    events = "".join(
        f'<li class="{level}">{t:7.1f} s  {esc(text)}</li>'
        for t, level, text in reversed(state.events[-50:])
    )
    return f"<b>{esc(state.title)}</b> · {esc(state.command)} on {esc(state.host)}{head}" + (
        f'<ul id="events">{events}</ul>' if events else ""
    )
