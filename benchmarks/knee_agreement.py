"""Does the bench find the knee a hand-placed sweep finds, run after run?

In one session, ``--runs`` times each:

* the bench's HTTP keep-alive and TLS keep-alive experiments, as the default scenario
  has them (its backends, HAProxy and client placement);
* the same two sweeps as standalone ``tippingpoint sweep`` (same steps, same pool of
  128 connections), on the same topology placed by hand: ``serve`` and HAProxy (one
  thread) under ``taskset -c 1``, the load under ``taskset -c 0``; where every thread
  of it runs is read back from /proc and printed;
* wrk on CPU 0 with ``-c`` matching the pool, through the same HAProxy: the most a
  closed loop carries (the ceiling an open-model knee stays under).

It prints every knee (last good - first bad), the median of the last good steps, each
run's spread from that median, and the bench's median over the standalone one. Then, from
the same runs: the judged p99 of each rate that ran three times or more (how far one rate's
p99 moves between runs near the knee), and how many steps judged past the knee were so by
their second second alone (a step of 4 s or more is judged without its first two).

    python benchmarks/knee_agreement.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from common import HOST, machine, median, need, pinned, start, stop, tippingpoint, wait_port
from tippingpoint.bench import DEFAULT_SCENARIO, parse_scenario
from tippingpoint.placement import verify

NAMES = ("HTTP, keep-alive", "TLS, keep-alive")


def scenario_text() -> str:
    """The default scenario with only its HTTP and TLS keep-alive experiments."""
    head, _, rest = DEFAULT_SCENARIO.partition("[[experiment]]")
    blocks = ["[[experiment]]" + b for b in rest.split("[[experiment]]")]
    kept = [b for b in blocks if any(f'name = "{n}"' in b for n in NAMES)]
    return head + "".join(kept)


def bench(tmp: Path, run: int) -> dict[str, dict[str, Any]]:
    path = tmp / "knees.toml"
    path.write_text(scenario_text())
    out = tmp / f"bench-{run}"
    subprocess.run(
        [*tippingpoint(), "bench", str(path), "-o", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    summary = json.loads((out / "summary.json").read_text())
    return {e["name"]: e["sweep"] for e in summary["experiments"]}


def topology(tmp: Path) -> tuple[list[subprocess.Popen[bytes]], str]:
    """serve and HAProxy as the scenario has them, both under taskset -c 1."""
    sc = parse_scenario(scenario_text())
    ports = f"{sc.backend_ports[0]}-{sc.backend_ports[-1]}"
    serve = start(
        pinned(
            1,
            [*tippingpoint(), "serve", "--ports", ports, "--processes", str(sc.backend_processes)],
        )
    )
    proxy_dir = tmp / "proxy"
    proxy = start(
        pinned(
            1,
            [
                *tippingpoint(),
                "proxy",
                "--backends",
                f"127.0.0.1:{ports}",
                "--http",
                f"{sc.http[0]}:{sc.http[1]}",
                "--https",
                f"{sc.https[0]}:{sc.https[1]}",
                "--threads",
                str(sc.proxy_threads),
                "--dir",
                str(proxy_dir),
            ],
        )
    )
    wait_port(sc.backend_ports[-1])
    wait_port(sc.https[1])
    for role, proc in (("serve", serve), ("HAProxy", proxy)):
        placed = verify(role, [proc.pid], {1})
        print(
            f"  by hand: {role} pids {list(placed.pids)}, {placed.threads} threads on "
            f"CPUs {sorted(placed.seen)} (read from /proc)",
            flush=True,
        )
    return [proxy, serve], str(proxy_dir)


def standalone(name: str, proxy_dir: str, serve_pid: int, out: Path) -> dict[str, Any]:
    """The experiment as `tippingpoint sweep`, watching HAProxy and the backends (so that
    the sweep accounts for every process on CPU 1 as the bench does)."""
    sc = parse_scenario(scenario_text())
    exp = next(e for e in sc.experiments if e.name == name)
    host, port = sc.http if exp.frontend == "http" else sc.https
    out = subprocess.run(
        pinned(
            0,
            [
                *tippingpoint(),
                "sweep",
                f"{exp.frontend}://{host}:{port}{exp.path}",
                "--start",
                str(exp.start),
                "--step",
                f"{exp.step[0]}{exp.step[1]:g}",
                "--step-duration",
                f"{exp.step_duration:g}s",
                "--max-steps",
                str(exp.max_steps),
                "--refine",
                str(exp.refine),
                "--max-connections",
                str(exp.max_connections),
                "--processes",
                str(sc.client_processes),
                "--proxy-dir",
                proxy_dir,
                "--role",
                f"backends={serve_pid}",
                "--cacert",
                f"{proxy_dir}/tls/cert.pem",
                "--out",
                str(out),
                "--json",
            ],
        ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out))


def wrk(url: str, connections: int) -> float:
    out = subprocess.run(
        pinned(0, ["wrk", "-t1", f"-c{connections}", "-d10s", url]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else 0.0


def knee(sweep: dict[str, Any]) -> str:
    if sweep.get("tipping_point") is None:
        return "none: " + sweep["reason"][:70]
    return f"{sweep['last_good']:,.0f}-{sweep['first_bad']:,.0f}/s"


def spread(values: list[float]) -> str:
    mid = median(values)
    return ", ".join(f"{(v - mid) / mid * 100:+.0f} %" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", dest="json_out", default=None, help="write every figure here")
    parser.add_argument(
        "--keep",
        default=None,
        help="keep the bench reports in this directory (else a temporary one)",
    )
    args = parser.parse_args()
    need("wrk", "haproxy", "taskset")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(args.keep or tmpdir)
        tmp.mkdir(parents=True, exist_ok=True)
        for run in range(args.runs):
            row: dict[str, Any] = {"bench": bench(tmp, run)}
            procs, proxy_dir = topology(tmp)
            try:
                row["standalone"] = {
                    n: standalone(n, proxy_dir, procs[1].pid, tmp / f"standalone-{run}-{i}")
                    for i, n in enumerate(NAMES)
                }
                sc = parse_scenario(scenario_text())
                row["wrk"] = {
                    "http": wrk(f"http://{HOST}:{sc.http[1]}/ping", 128),
                    "https": wrk(f"https://{HOST}:{sc.https[1]}/ping", 128),
                }
            finally:
                for proc in procs:
                    stop(proc)
            rows.append(row)
            for n in NAMES:
                print(
                    f"run {run + 1}: {n:18s} bench {knee(row['bench'][n]):22s} "
                    f"standalone {knee(row['standalone'][n])}",
                    flush=True,
                )
            print(
                f"run {run + 1}: wrk -c128: HTTP {row['wrk']['http']:,.0f}/s, "
                f"TLS {row['wrk']['https']:,.0f}/s",
                flush=True,
            )
        summary(rows)
        creep(rows)
        second_second(tmp, len(rows))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))


def summary(rows: list[dict[str, Any]]) -> None:
    """The knees, their medians and spreads, the ratios, and wrk's ceiling."""
    print(f"\nmachine: {machine()}")
    print(
        "| sweep | where | knees (last good - first bad) | median last good | "
        "each run from the median |"
    )
    print("|---|---|---|---|---|")
    medians: dict[tuple[str, str], float] = {}
    for n in NAMES:
        for where in ("bench", "standalone"):
            sweeps = [r[where][n] for r in rows]
            good = [float(s["last_good"]) for s in sweeps if s.get("tipping_point") is not None]
            medians[(n, where)] = median(good) if good else 0.0
            print(
                f"| {n} | {where} | {'; '.join(knee(s) for s in sweeps)} | "
                f"{medians[(n, where)]:,.0f}/s | {spread(good) if good else '-'} |"
            )
    for n in NAMES:
        ratio = (
            medians[(n, "bench")] / medians[(n, "standalone")] if medians[(n, "standalone")] else 0
        )
        print(f"{n}: bench / standalone = {ratio:.2f}")
    for key, label in (("http", "HTTP"), ("https", "TLS")):
        ceiling = median([r["wrk"][key] for r in rows])
        name = NAMES[0] if key == "http" else NAMES[1]
        print(
            f"{label}: wrk -c128 median {ceiling:,.0f}/s; the bench's knee (median last good) "
            f"at {medians[(name, 'bench')] / ceiling:.2f}x of it"
        )


def creep(rows: list[dict[str, Any]]) -> None:
    """Each sweep's rate whose judged p99 moved most over its runs (three or more, over
    the series): near the knee, the p99 at one rate hovers around the limit."""
    print("\njudged p99 of a rate run 3 times or more (the widest of each sweep):")
    for n in NAMES:
        for where in ("bench", "standalone"):
            seen: dict[float, list[float]] = {}
            for r in rows:
                for step in r[where][n]["steps"]:
                    if not step["disturbed"]:
                        seen.setdefault(step["offered"], []).append(step["p99_sustained_ms"])
            runs = {v: p for v, p in seen.items() if len(p) >= 3}
            if not runs:
                continue
            rate = max(runs, key=lambda v: max(runs[v]) / max(0.01, min(runs[v])))
            p99 = sorted(runs[rate])
            print(
                f"  {n}, {where}: at {rate:,.0f}/s {p99[0]:.2f} to {p99[-1]:.2f} ms in "
                f"{len(p99)} runs ({', '.join(f'{x:.2f}' for x in p99)})"
            )


def second_second(tmp: Path, runs: int) -> None:
    """Of the steps judged past the knee (every sweep kept in ``tmp``), those that were
    so by their second second alone: past with only the first second left out, within
    the knee without the first two."""
    import tippingpoint.sweep as sweep_module
    from tippingpoint.knee import KneeRule
    from tippingpoint.report.merge import read_records

    rule = KneeRule()
    bad = by_second = 0
    dirs = [d for d in tmp.glob("bench-*/*-sweep") if d.is_dir()]
    dirs += [d for d in tmp.glob("standalone-*") if d.is_dir()]
    for d in dirs:
        files = sorted(d.glob("step-*.jsonl"))
        judged = []
        for keep_from in (1, 2):
            sweep_module.START_UP_S = keep_from
            p99 = []
            for f in files:
                with f.open() as stream:
                    p99.append(sweep_module._sustained(list(read_records([(f.name, stream)])))[0])
            judged.append(p99)
        sweep_module.START_UP_S = 2
        if len(files) < 2:
            continue
        base = min(judged[1][:2])
        limit = max(base * rule.factor, base + rule.floor_ms)
        for one, two in zip(*judged, strict=True):
            if two > limit:
                bad += 1
            elif one > limit:
                bad += 1
                by_second += 1
    print(
        f"\nsteps past the knee by their judged p99 without the first second, in {runs} "
        f"run(s): {bad}; by their second second alone: {by_second}"
    )


if __name__ == "__main__":
    main()
