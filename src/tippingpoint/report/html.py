"""The bench's self-contained HTML report: plotly.js embedded once, data inline.

Works offline. Charts: the tipping-point graph of each sweep (p50 and p99 against the
offered rate, the knee marked), achieved against offered rate, HAProxy CPU against the
offered rate per protocol (tls-cost), TCP established, CPU % and memory per role over
time, and per-experiment latency over time; then the tables.
"""

from __future__ import annotations

import html
import json
import statistics
from importlib import resources
from typing import Any

__all__ = ["DRAW", "STYLE", "plotly_js", "render_body", "render_html"]


def plotly_js() -> str:
    """plotly.min.js from the plotly package (no network at report time or view time)."""
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text()


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
.verdict { font-weight: bold; } .chart { width: 100%; height: 420px; }
pre { background: #f8f8f8; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.warning { background: #fff4e5; border-left: 4px solid #e8890c; padding: 0.6em 1em; margin: 1em 0; }
tr.disturbed td { color: #999; }
"""

DRAW = """
function draw(DATA) {
const layout = (title, x, y, extra) => Object.assign({
  title: {text: title}, xaxis: {title: {text: x}}, yaxis: {title: {text: y}},
  margin: {t: 50, r: 20}, legend: {orientation: 'h'}}, extra || {});
const config = {displaylogo: false, responsive: true};
let rendered = 0;
function counted() {
  rendered += 1;
  document.body.dataset.charts = String(rendered);
}
function plot(id, traces, lay) {
  const div = document.getElementById(id);
  if (!div) return;
  // A live page calls draw again each second: a chart whose figures did not change is
  // left as it is, one that grew is drawn again in place (react).
  const key = JSON.stringify([traces, lay]);
  if (div.drawnKey === key) {
    counted();
    return;
  }
  div.drawnKey = key;
  Plotly.react(div, traces, lay, config).then(counted);
}
for (const exp of DATA.experiments) {
  if (exp.shape === 'sweep') {
    const unit = exp.unit || 'requests/s';
    const what = exp.latency || 'latency';
    // A closed sweep steps connections: its charts are drawn against them (log scale),
    // the knee at the connections whose throughput is the tipping point.
    const closed = exp.sweep.model === 'closed';
    const keyOf = r => closed ? r.connections : r.offered;
    const all = exp.sweep.steps.slice().sort((a, b) => keyOf(a) - keyOf(b));
    // The curve: each value's first counted run; repeats and disturbed runs apart.
    const rows = all.filter((r, i) => !r.disturbed && !r.repeat);
    const again = all.filter(r => !r.disturbed && r.repeat);
    const spoiled = all.filter(r => r.disturbed);
    const x = rows.map(keyOf);
    const tp = exp.sweep.tipping_point;
    const at = closed ? exp.sweep.knee_connections : tp;
    const bad = exp.sweep.first_bad;
    const label = tp === null ? '' : 'tipping point ' + Math.round(closed ? tp : at)
      + (closed ? ' ' + unit + ' (' + at + ' connections)'
                : (bad ? '-' + Math.round(bad) : '') + ' ' + unit);
    const shapes = tp === null ? [] : [{type: 'line', x0: at, x1: at, yref: 'paper', y0: 0,
      y1: 1, line: {dash: 'dot', color: '#d62728'}}];
    if (tp !== null && bad) shapes.push({type: 'rect', x0: at, x1: bad, yref: 'paper', y0: 0,
      y1: 1, fillcolor: '#d62728', opacity: 0.08, line: {width: 0}});
    const annotations = tp === null ? [] : [{x: closed ? Math.log10(at) : at, yref: 'paper',
      y: 1, text: label, showarrow: false, yanchor: 'bottom'}];
    const xaxis = closed ? {xaxis: {type: 'log', title: {text: 'connections (log)'}}} : {};
    plot('knee-' + exp.id, [
      {x: x, y: rows.map(r => r.p50_ms), name: 'p50', mode: 'lines+markers'},
      {x: x, y: rows.map(r => r.p99_ms), name: 'p99', mode: 'lines+markers'},
      {x: x, y: rows.map(r => r.mean_ms), name: 'mean', mode: 'lines+markers'},
      {x: again.map(keyOf), y: again.map(r => r.p99_ms), name: 'p99, runs again',
       mode: 'markers', marker: {symbol: 'circle-open', size: 10}},
      {x: spoiled.map(keyOf), y: spoiled.map(r => r.p99_ms), name: 'p99, disturbed',
       mode: 'markers', marker: {symbol: 'x', color: '#999', size: 10}}],
      layout(exp.name + (closed ? ': latency against connections (closed loop)'
                                : ': ' + what + ' against offered rate'),
             closed ? 'connections' : 'offered ' + unit, 'ms',
             {yaxis: {type: 'log', title: {text: 'ms (log)'}}, shapes: shapes,
              annotations: annotations, ...xaxis}));
    if (closed) {
      plot('rate-' + exp.id, [
        {x: x, y: rows.map(r => r.achieved), name: 'achieved', mode: 'lines+markers'}],
        layout(exp.name + ': throughput against connections', 'connections', 'requests/s',
               {shapes: shapes, ...xaxis}));
    } else {
      plot('rate-' + exp.id, [
        {x: x, y: rows.map(r => r.achieved), name: 'achieved', mode: 'lines+markers'},
        {x: x, y: x, name: 'offered', mode: 'lines', line: {dash: 'dash'}}],
        layout(exp.name + ': achieved against offered', 'offered ' + unit, unit));
    }
    if (exp.per_1000) {
      // HAProxy's CPU per 1,000 messages (or new sessions) a second, at each step.
      const ok = rows.filter(r => r.proxy_cpu_per_1000 !== null);
      plot('cpu1k-' + exp.id, [{x: ok.map(r => r.offered), y: ok.map(r => r.proxy_cpu_per_1000),
        name: 'HAProxy', mode: 'lines+markers'}],
        layout(exp.name + ': HAProxy CPU per 1,000 ' + unit, 'offered ' + unit,
               '% of a core per 1,000 ' + unit));
    }
  } else if (exp.shape === 'tls-cost') {
    // The article's question: HAProxy CPU against the offered rate, a line per protocol.
    const ways = exp.tls_cost.protocols.filter(w => w.steps.length);
    const ok = w => w.steps.filter(s => !s.limited && s.proxy_cpu_pct !== null);
    plot('tls-' + exp.id, ways.map(w => ({x: ok(w).map(s => s.offered),
      y: ok(w).map(s => s.proxy_cpu_pct), name: w.label, mode: 'lines+markers'})),
      layout(exp.name + ': HAProxy CPU against offered rate', 'offered requests/s',
             '% of one core'));
    plot('tlsus-' + exp.id, ways.map(w => ({x: ok(w).map(s => s.offered),
      y: ok(w).map(s => s.us_per_request), name: w.label, mode: 'lines+markers'})),
      layout(exp.name + ': HAProxy CPU per request', 'offered requests/s',
             'µs of HAProxy CPU per request', {yaxis: {type: 'log',
             title: {text: 'µs per request (log)'}}}));
  } else if (exp.shape === 'hold') {
    const h = exp.hold;
    const noun = exp.noun;
    plot('hold-' + exp.id, [
      {x: h.t, y: h.established, name: 'established', fill: 'tozeroy'},
      {x: h.t, y: h.lost, name: 'lost'}],
      layout(exp.name + ': ' + noun + ' established over time', 's', noun));
    if (h.request_p99_ms) {
      const asked = h.t.map((t, i) => [t, h.request_p99_ms[i]]).filter(p => p[1] > 0);
      plot('ping-' + exp.id, [{x: asked.map(p => p[0]), y: asked.map(p => p[1]),
        name: 'p99', mode: 'lines+markers'}],
        layout(exp.name + ': ' + exp.ping + ' latency over time', 's', 'p99 ms'));
    }
  } else {
    const t = exp.timeline;
    plot('lat-' + exp.id, [
      {x: t.t, y: t.p50_ms, name: 'p50'}, {x: t.t, y: t.p99_ms, name: 'p99'}],
      layout(exp.name + ': latency over time', 's', 'ms'));
    // On a cluster of several client machines, each machine's rate beside the total.
    const hosts = t.hosts || {};
    plot('rate-' + exp.id, [{x: t.t, y: t.rate, name: 'responses/s'}].concat(
      Object.keys(hosts).map(h => ({x: t.t, y: hosts[h], name: h, line: {dash: 'dot'}}))),
      layout(exp.name + ': rate over time', 's', 'requests/s'));
  }
}
// A matrix scenario: each experiment's curves of every setup on one chart.
(DATA.setups || []).length > 1 && DATA.experiments.filter(e => e.setup === DATA.setups[0])
  .forEach((first, k) => {
    const runs = DATA.experiments.filter(e => e.name === first.name);
    if (first.shape === 'sweep') {
      const closed = first.sweep.model === 'closed';
      plot('overlay-' + k, runs.map(e => {
        const rows = e.sweep.steps.filter(r => !r.disturbed && !r.repeat).sort(closed
          ? (a, b) => a.connections - b.connections : (a, b) => a.offered - b.offered);
        return {x: rows.map(r => closed ? r.connections : r.offered),
                y: rows.map(r => r.p99_ms), name: e.setup + ' p99', mode: 'lines+markers'};
      }), layout(first.name + ': p99 against ' + (closed ? 'connections' : 'offered rate')
                 + ', a line per setup', closed ? 'connections'
                 : 'offered ' + (first.unit || 'requests/s'),
                 'ms', {yaxis: {type: 'log', title: {text: 'ms (log)'}}}));
    } else if (first.shape === 'tls-cost') {
      const traces = [];
      for (const e of runs) {
        for (const w of e.tls_cost.protocols) {
          const ok = w.steps.filter(s => !s.limited && s.proxy_cpu_pct !== null);
          if (ok.length) traces.push({x: ok.map(s => s.offered), y: ok.map(s => s.proxy_cpu_pct),
            name: e.setup + ': ' + w.label, mode: 'lines+markers'});
        }
      }
      plot('overlay-' + k, traces, layout(first.name + ': HAProxy CPU against offered rate, '
        + 'a line per setup and protocol', 'offered requests/s', '% of one core'));
    }
  });
const m = DATA.monitor;
plot('tcp', [{x: m.t, y: m.tcp_established, name: 'TCP established', fill: 'tozeroy'}],
  layout('TCP established (both ends of every connection)', 's', 'connections'));
plot('cpu', Object.keys(m.roles).map(r => ({x: m.t, y: m.roles[r].cpu_pct, name: r})),
  layout('CPU % per role', 's', '% of one core'));
plot('mem', [{x: m.t, y: m.mem_used_mib, name: 'memory used (MiB)'}]
  .concat(Object.keys(m.roles).map(r => ({x: m.t, y: m.roles[r].rss_mib, name: r + ' RSS'}))),
  layout('Memory', 's', 'MiB'));
plot('pkts', [{x: m.t, y: m.rx_packets, name: 'packets in/s (lo)'},
              {x: m.t, y: m.tx_packets, name: 'packets out/s (lo)'}],
  layout('Packets per second', 's', 'packets/s'));
// A lab: one panel per host on the same time axis, each sweep's tipping point marked.
const marks = DATA.marks || [];
const marked = {shapes: marks.map(k => ({type: 'line', x0: k.t, x1: k.t, yref: 'paper',
  y0: 0, y1: 1, line: {dash: 'dot', color: '#c0392b'}})),
  annotations: marks.map(k => ({x: k.t, yref: 'paper', y: 1, text: k.name + ': knee',
  showarrow: false, font: {size: 10, color: '#c0392b'}}))};
Object.keys(m.hosts || {}).sort().forEach((name, k) => {
  const h = m.hosts[name];
  const cores = Object.keys(h.cpus).map(c => ({x: h.t, y: h.cpus[c], name: 'CPU ' + c + ' busy'}))
    .concat(Object.keys(h.steal).filter(c => h.steal[c].some(v => v > 0))
      .map(c => ({x: h.t, y: h.steal[c], name: 'CPU ' + c + ' steal', line: {dash: 'dot'}})))
    .concat(Object.keys(h.roles).map(r => ({x: h.t, y: h.roles[r], name: r + ' (% of a core)',
      line: {width: 3}})));
  plot('host-cpu-' + k, cores, layout(name + ': CPU per core and per role', 's', '%', marked));
  plot('host-net-' + k, [
    {x: h.t, y: h.tcp_established, name: 'TCP established'},
    {x: h.t, y: h.rx_packets, name: 'packets in/s', yaxis: 'y2'},
    {x: h.t, y: h.tx_packets, name: 'packets out/s', yaxis: 'y2'},
    {x: h.t, y: h.mem_used_mib, name: 'memory used (MiB)'},
    {x: h.t, y: h.load1, name: 'load (1 min)', yaxis: 'y3', visible: 'legendonly'}],
    layout(name + ': connections, packets, memory, load', 's', 'connections, MiB',
      {yaxis2: {overlaying: 'y', side: 'right', title: {text: 'packets/s'}},
       yaxis3: {overlaying: 'y', side: 'right', visible: false}, ...marked}));
});
}
"""
"""The report's charts, as one function of its data: the report calls it once, the live
page (:mod:`tippingpoint.web.page`) each time its data grows."""

_SCRIPT = DRAW + "draw(JSON.parse(document.getElementById('bench-data').textContent));\n"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["<table><tr>"]
    out += [
        f'<th class="{"l" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers)
    ]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>")
        out += [
            f'<td class="{"l" if i == 0 else ""}">{html.escape(str(v))}</td>'
            for i, v in enumerate(row)
        ]
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _pct(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.0f}%"


_RUNS = {"confirm": "repeat", "disturbed": "again (disturbed before)"}


def _sweep_rows(sweep: dict[str, Any]) -> list[list[Any]]:
    key = "connections" if sweep.get("model") == "closed" else "offered"
    rows = []
    for r in sorted(sweep["steps"], key=lambda r: r[key]):
        foreign = (
            "-"
            if r.get("sut_foreign") is None
            else f"{r['sut_foreign'] * 100:.0f}% / {(r.get('client_foreign') or 0) * 100:.0f}%"
        )
        rows.append(
            [
                f"{r[key]:,.0f}",
                _RUNS.get(r.get("repeat", ""), "first"),
                f"{r['achieved']:,.0f}",
                f"{r['mean_ms']:.2f}",
                f"{r['p50_ms']:.2f}",
                f"{r['p99_ms']:.2f}",
                f"{r.get('p99_sustained_ms', 0.0):.2f}",
                f"{r['success'] * 100:.2f}%",
                _pct(r["proxy_cpu_pct"]),
                _pct(r.get("client_load_pct", r.get("client_cpu_pct"))),
                foreign,
                f"{r['tcp_established']:,}",
                f"{r['packets_in_per_s']:,.0f}",
                f"{r['packets_out_per_s']:,.0f}",
                r["verdict"],
            ]
        )
    return rows


def _placement(data: dict[str, Any]) -> str:
    """The placement table, and what the bench process itself used."""
    rows = data.get("placement") or []
    if not rows:
        return ""
    setups = any(r.get("setup") for r in rows)
    hosts = any(r.get("host") for r in rows)
    table = _table(
        ["role", "PIDs", "threads", "CPUs asked", "CPUs seen (/proc)"]
        + (["host"] if hosts else [])
        + (["setup"] if setups else []),
        [
            [
                r["role"],
                " ".join(map(str, r["pids"])),
                r["threads"],
                r["cpus_asked"],
                r["cpus_seen"],
                *([r.get("host", "this machine")] if hosts else []),
                *([r.get("setup", "")] if setups else []),
            ]
            for r in rows
        ],
    )
    costs = ", ".join(
        f"{e['bench_cpu_pct']:.1f} % during {e['name']}"
        for e in data["experiments"]
        if e.get("bench_cpu_pct") is not None
    )
    note = (
        "Each role was started on its CPUs and every thread's CPUs were read back from "
        "/proc. The bench process (monitor, records, report) runs beside the load it "
        "forks, on the client's CPUs, its monitor at idle priority: it never takes a core "
        "of the system under test, and what it uses counts as the client's side. "
        f"Its CPU, in % of a core: {costs}."
        if costs
        else ""
    )
    return "<h2>Where each process ran</h2>" + table + (f"<p>{html.escape(note)}</p>")


def _hosts(data: dict[str, Any]) -> list[str]:
    """A lab's hosts: what each carries, then a panel of charts each."""
    rows = data.get("hosts") or []
    if not rows:
        return []
    parts = [
        "<h2>The hosts</h2>",
        _table(
            ["host", "machine", "address", "Dask worker", "roles"],
            [
                [
                    r["host"],
                    r["machine"],
                    r["address"],
                    r["worker"],
                    ", ".join(r["roles"]) + (" (lost)" if r.get("lost") else ""),
                ]
                for r in rows
            ],
        ),
    ]
    for k, name in enumerate(sorted(data["monitor"].get("hosts", {}))):
        parts += [
            f"<h3>{html.escape(name)}</h3>",
            f'<div id="host-cpu-{k}" class="chart"></div>',
            f'<div id="host-net-{k}" class="chart"></div>',
        ]
    return parts


def _at_tipping_point(sweep: dict[str, Any]) -> dict[str, Any] | None:
    """The step of a sweep at its tipping point (closed: at the knee's connections)."""
    steps = sweep["steps"]
    if sweep["tipping_point"] is None or not steps:
        return None
    if sweep.get("model") == "closed":
        match = [s for s in steps if s.get("connections") == sweep.get("knee_connections")]
    else:
        match = [s for s in steps if s["offered"] == sweep["tipping_point"]]
    return match[0] if match else None


def _comparison(experiments: list[dict[str, Any]]) -> str:
    """The article's table: each setup's tipping points, p99 and HAProxy CPU there, and
    what TLS costs it."""
    rows = []
    for exp in experiments:
        setup, name = exp.get("setup", ""), exp["name"]
        if exp["shape"] == "sweep":
            sweep = exp["sweep"]
            step = _at_tipping_point(sweep)
            if sweep.get("client_limited"):
                tp = "client-limited"
            elif sweep["tipping_point"] is not None:
                tp = f"{sweep['tipping_point']:,.0f}/s"
            else:
                tp = "none"
            cpu = step.get("proxy_cpu_pct") if step else None
            rows.append(
                [
                    setup,
                    name,
                    tp,
                    f"{step['p99_ms']:.2f} ms" if step else "-",
                    f"{cpu:.0f}%" if cpu is not None else "-",
                    "-",
                ]
            )
        elif exp["shape"] == "tls-cost":
            cost = exp["tls_cost"]
            ratios = [r["tls_over_http"] for r in cost["ratios"]]
            parts = []
            if ratios:
                parts.append(f"keep-alive {statistics.median(ratios):.1f}x HTTP")
            if cost["handshake_us"] is not None:
                parts.append(f"{cost['handshake_us']:,.0f} µs per handshake")
            rows.append([setup, name, "-", "-", "-", ", ".join(parts) or "-"])
    return _table(
        [
            "setup",
            "experiment",
            "tipping point",
            "p99 there",
            "HAProxy CPU there",
            "TLS cost",
        ],
        rows,
    )


def _session_costs(experiments: list[dict[str, Any]]) -> str:
    """One row per experiment whose kind has a costs row (MQTT's): plain or TLS,
    HAProxy's memory and CPU per 1,000 held sessions, its tipping points and its CPU per
    1,000 a second there."""
    rows = []
    for exp in experiments:
        if not exp["costs_row"]:
            continue
        tls = "TLS" if exp["tls"] else "plain"
        name = exp["name"] + (f" [{exp['setup']}]" if exp.get("setup") else "")
        if exp["shape"] == "hold":
            cost = exp.get("cost")
            if not cost:
                rows.append([name, tls, "-", "-", "-", "-"])
                continue
            rows.append(
                [
                    name,
                    tls,
                    f"{cost['held']:,} sessions held",
                    f"{cost['bytes_per_connection'] * 1000 / 2**20:,.1f} MiB"
                    if cost["bytes_per_connection"] >= 100
                    else "did not grow",
                    f"{cost['cpu_pct_per_1000']:.3f} %",
                    "-",
                ]
            )
            continue
        sweep = exp["sweep"]
        step = _at_tipping_point(sweep)
        if sweep["tipping_point"] is None:
            tp = "client-limited" if sweep.get("client_limited") else "none"
        else:
            tp = f"{sweep['tipping_point']:,.0f} {exp.get('unit', '/s')}"
        per = step.get("proxy_cpu_per_1000") if step else None
        rows.append([name, tls, tp, "-", "-", f"{per:.2f} %" if per is not None else "-"])
    if not rows:
        return ""
    return _table(
        [
            "experiment",
            "frontend",
            "held, or tipping point",
            "HAProxy memory per 1,000 sessions",
            "HAProxy CPU per 1,000 sessions (of a core)",
            "HAProxy CPU per 1,000 a second at the tipping point",
        ],
        rows,
    )


def _tls_cost_table(cost: dict[str, Any]) -> str:
    """A row per offered rate: HAProxy CPU and µs per request of each protocol, the
    TLS / plain ratio and the cost of a handshake."""
    ratios = {r["offered"]: r["tls_over_http"] for r in cost["ratios"]}
    handshakes = {h["offered"]: h["us"] for h in cost["handshakes"]}
    by_rate: dict[float, dict[str, dict[str, Any]]] = {}
    for way in cost["protocols"]:
        for step in way["steps"]:
            by_rate.setdefault(step["offered"], {})[way["key"]] = step

    def cell(step: dict[str, Any] | None) -> str:
        if step is None:
            return "-"
        if step["limited"]:
            return str(step["limited"])
        if step["proxy_cpu_pct"] is None:
            return "not sampled"
        return f"{step['proxy_cpu_pct']:.1f}% ({step['us_per_request']:,.1f} µs)"

    rows = []
    for rate in sorted(by_rate):
        ways = by_rate[rate]
        ratio = ratios.get(rate)
        handshake = handshakes.get(rate)
        rows.append(
            [
                f"{rate:,.0f}",
                cell(ways.get("http")),
                cell(ways.get("tls")),
                cell(ways.get("tls-new")),
                f"{ratio:.2f}x" if ratio is not None else "-",
                f"{handshake:,.0f} µs" if handshake is not None else "-",
            ]
        )
    return _table(
        [
            "offered/s",
            "HTTP keep-alive: HAProxy CPU (per request)",
            "TLS keep-alive",
            "TLS, new connection per request",
            "TLS / HTTP",
            "per handshake",
        ],
        rows,
    )


_SWEEP_COLUMNS = [
    "run",
    "achieved/s",
    "mean ms",
    "p50 ms",
    "p99 ms (whole step)",
    "p99 ms judged (without the client's own stalls)",
    "success",
    "proxy CPU",
    "client CPUs (all their load)",
    "foreign load: SUT / client CPUs (of a core)",
    "TCP est.",
    "pkts in/s",
    "pkts out/s",
    "verdict",
]


def _sweep_verdict(sweep: dict[str, Any], unit: str) -> str:
    if sweep.get("running"):
        return "Running: the tipping point is judged when the sweep ends"
    if sweep.get("client_limited"):
        verdict = "No tipping point: the client was the limit, not HAProxy"
        if sweep.get("lift"):
            verdict += f" (to go further: {sweep['lift']})"
        return verdict
    if sweep["tipping_point"] is not None and sweep.get("model") == "closed":
        return (
            f"Tipping point: {sweep['tipping_point']:,.0f} {unit} with "
            f"{sweep['knee_connections']:,} connections in a closed loop"
        )
    if sweep["tipping_point"] is not None:
        low = sweep.get("last_good") or sweep["tipping_point"]
        return (
            f"Tipping point: {low:,.0f}-{sweep['first_bad']:,.0f} {unit} "
            "(the last step within the knee to the first past it)"
        )
    return "No tipping point"


def _experiment(exp: dict[str, Any]) -> list[str]:
    """One experiment's section: its verdict, its charts' places and its tables."""
    eid = exp["id"]
    title = exp["name"] + (f" [{exp['setup']}]" if exp.get("setup") else "")
    parts = [f"<h2>{html.escape(title)}</h2><p>{html.escape(exp['description'])}</p>"]
    if exp["shape"] == "sweep":
        sweep = exp["sweep"]
        unit = exp.get("unit", "requests/s")
        verdict = _sweep_verdict(sweep, unit)
        parts.append(
            f'<p class="verdict">{html.escape(verdict)} — {html.escape(sweep["reason"])}</p>'
        )
        parts.append(f'<div id="knee-{eid}" class="chart"></div>')
        parts.append(f'<div id="rate-{eid}" class="chart"></div>')
        if exp["per_1000"]:
            parts.append(f'<div id="cpu1k-{eid}" class="chart"></div>')
        first = "connections" if sweep.get("model") == "closed" else f"offered {unit}"
        parts.append(_table([first, *_SWEEP_COLUMNS], _sweep_rows(sweep)))
    elif exp["shape"] == "tls-cost":
        cost = exp["tls_cost"]
        parts.append(f'<p class="verdict">{html.escape(cost["sentence"])}</p>')
        parts.append(f'<div id="tls-{eid}" class="chart"></div>')
        parts.append(f'<div id="tlsus-{eid}" class="chart"></div>')
        parts.append(_tls_cost_table(cost))
    elif exp["shape"] == "hold":
        parts.append(f'<div id="hold-{eid}" class="chart"></div>')
        if any(exp["hold"].get("request_p99_ms", [])):
            parts.append(f'<div id="ping-{eid}" class="chart"></div>')
        parts.append(f"<pre>{html.escape(exp['report'])}</pre>")
    else:
        parts.append(f'<div id="lat-{eid}" class="chart"></div>')
        parts.append(f'<div id="rate-{eid}" class="chart"></div>')
        parts.append(f"<pre>{html.escape(exp['report'])}</pre>")
    return parts


def render_body(data: dict[str, Any]) -> str:
    """The report's body without its data and script: headings, verdicts, tables and
    the places of the charts :data:`DRAW` draws. ``data``: ``title``, ``summary`` rows,
    ``experiments`` (sweeps, attacks, holds), ``monitor`` series, ``config`` text,
    ``machine``, ``placement``, ``warnings``."""
    parts = [
        f"<h1>{html.escape(data['title'])}</h1>",
        f"<p>{html.escape(data['machine'])}</p>",
    ]
    if data.get("failure"):
        parts.append(
            f'<p class="verdict">The bench stopped early: {html.escape(data["failure"])}</p>'
        )
    parts += [
        f'<div class="warning">Warning: {html.escape(w)}</div>' for w in data.get("warnings", [])
    ]
    parts += [
        "<h2>Summary</h2>",
        _table(["experiment", "result"], data["summary"]),
    ]
    costs = _session_costs(data["experiments"])
    if costs:
        parts += ["<h2>What each connection costs HAProxy</h2>", costs]
    setups = data.get("setups") or []
    if len(setups) > 1:
        parts.append("<h2>Setups compared</h2>")
        parts.append(_comparison(data["experiments"]))
        for k, exp in enumerate(e for e in data["experiments"] if e.get("setup") == setups[0]):
            if exp["shape"] in ("sweep", "tls-cost"):
                parts.append(f'<div id="overlay-{k}" class="chart"></div>')
    # In sections, each with its own id: a live page replaces only those that changed,
    # and the charts of the others stay as they are.
    sections = [_section("head", parts)]
    for exp in data["experiments"]:
        sections.append(_section(str(exp["id"]), _experiment(exp)))
    sections.append(_section("placement", [_placement(data)]))
    machine = [
        "<h2>The machine</h2>",
        '<div id="tcp" class="chart"></div>',
        '<div id="cpu" class="chart"></div>',
        '<div id="mem" class="chart"></div>',
        '<div id="pkts" class="chart"></div>',
    ]
    machine += _hosts(data)
    sections.append(_section("machine", machine))
    config = ["<h2>HAProxy configuration</h2>", f"<pre>{html.escape(data['config'])}</pre>"]
    sections.append(_section("config", config))
    return "".join(sections)


def _section(key: str, parts: list[str]) -> str:
    return f'<section id="s-{html.escape(key)}">' + "".join(parts) + "</section>"


def render_html(data: dict[str, Any]) -> str:
    """The whole report: :func:`render_body`, plotly.js, the data and :data:`DRAW`."""
    payload = json.dumps(data, default=str).replace("</", "<\\/")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(data['title'])}</title><style>{STYLE}</style>"
        f"<script>{plotly_js()}</script></head><body>"
        + render_body(data)
        + f'<script type="application/json" id="bench-data">{payload}</script>'
        + f"<script>{_SCRIPT}</script></body></html>\n"
    )
