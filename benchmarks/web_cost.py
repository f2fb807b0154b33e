"""What `--web` costs the bench: the knee and the generator's CPU per request with and
without the live page, one page open.

In one session, ``--runs`` times each, alternating: the default scenario's HTTP
keep-alive sweep as the bench runs it, once plain and once with ``--web`` and one page
open in headless Chromium (Playwright driving Debian's ``chromium``, under ``taskset -c``
``--viewer-cpu``: the client's CPU by default, as a browser on the bench machine would
land somewhere), or with ``--viewer stream`` its event stream read by this script (what
a browser on another machine costs the bench machine). For each run it prints the knee
(last good - first bad), the generator's CPU per request (the client's CPU share over the
achieved rate, median of the steps within the knee) and the bench process's own CPU
during the sweep (from the report). With ``--web`` it also reads back from /proc the web
server thread's CPU time, and the CPUs it may run on while the sweep runs; with a
browser, the browser's CPU. Then the medians; the noise is the spread of the plain runs
among themselves.

    taskset -c 0 python benchmarks/web_cost.py --runs 3 --viewer stream
    python benchmarks/web_cost.py --runs 2 --viewer browser
    python benchmarks/web_cost.py --page-cost --viewer-cpu 1
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import machine, median, need, tippingpoint
from tippingpoint.bench import DEFAULT_SCENARIO
from tippingpoint.web.server import THREAD_NAME

NAME = "HTTP, keep-alive"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def scenario_text() -> str:
    head, _, rest = DEFAULT_SCENARIO.partition("[[experiment]]")
    blocks = ["[[experiment]]" + b for b in rest.split("[[experiment]]")]
    return head + "".join(b for b in blocks if f'name = "{NAME}"' in b)


def web_thread(pid: int) -> dict[str, Any]:
    """The web server thread of ``pid``: its CPU seconds and the CPUs it may run on."""
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() != THREAD_NAME:
            continue
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        cpus = re.search(r"Cpus_allowed_list:\s*(\S+)", (task / "status").read_text())
        return {
            "cpu_s": (int(fields[11]) + int(fields[12])) / tick,
            "cpus": cpus.group(1) if cpus else "?",
        }
    raise RuntimeError(f"no thread {THREAD_NAME} in pid {pid}")


def pinned_chromium(tmp: Path, cpu: str) -> str:
    """Debian's chromium under ``taskset -c cpu``, as an executable Playwright starts."""
    wrapper = tmp / "chromium-pinned"
    wrapper.write_text(f'#!/bin/sh\nexec taskset -c {cpu} /usr/bin/chromium "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def browser_cpu_s() -> float:
    """CPU seconds of the Chromium processes this script started (its descendants)."""
    import psutil

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chromium" in proc.name():
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def viewer(urls: queue.Queue[str], cpu: str, tmp: Path, ready: threading.Event,
           done: threading.Event, seen: dict[str, Any]) -> None:  # fmt: skip
    """Chromium started before the bench (``ready``), then one page open on the URL that
    comes until the run ends; the browser's CPU in ``seen``: over the whole page, and
    from 10 s after it opened (its drawing, once plotly.js is parsed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=pinned_chromium(tmp, cpu), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        ready.set()
        url = urls.get(timeout=120)
        began, cpu0 = time.monotonic(), browser_cpu_s()
        page.goto(url)
        page.wait_for_timeout(10_000)
        settled, cpu1 = time.monotonic(), browser_cpu_s()
        page.wait_for_function("() => document.body.dataset.ended", timeout=900_000)
        end, cpu2 = time.monotonic(), browser_cpu_s()
        seen["browser_cpu_pct"] = round((cpu2 - cpu0) / (end - began) * 100, 1)
        seen["browser_settled_cpu_pct"] = round((cpu2 - cpu1) / max(end - settled, 1e-3) * 100, 1)
        browser.close()
    done.set()


def stream_viewer(url: str, done: threading.Event) -> None:
    """The page's event stream read to its end, as a browser elsewhere reads it: what
    a viewer costs the bench machine, without a browser's own drawing on it."""
    import urllib.request

    with urllib.request.urlopen(url + "events", timeout=900) as response:
        for line in response:
            if re.search(rb'"ended": "[^"]', line):
                break
    done.set()


def follow(pid: int, seen: dict[str, Any], stop: threading.Event) -> None:
    """The web thread's CPUs while the bench runs (it restores its affinity after)."""
    cpus: set[str] = set()
    while not stop.wait(3.0):
        try:
            cpus.add(web_thread(pid)["cpus"])
        except (OSError, RuntimeError):
            continue
    seen["web_thread_cpus_during_run"] = sorted(cpus)


def run(tmp: Path, k: int, web: bool, cpu: str, how: str) -> dict[str, Any]:
    path = tmp / "web-cost.toml"
    path.write_text(scenario_text())
    out = tmp / f"bench-{k}-{'web' if web else 'plain'}"
    cmd = [*tippingpoint(), "bench", str(path), "-o", str(out)]
    figures: dict[str, Any] = {}
    if not web:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        done, ended, ready = threading.Event(), threading.Event(), threading.Event()
        urls: queue.Queue[str] = queue.Queue()
        if how == "browser":
            args: tuple[Any, ...] = (urls, cpu, tmp, ready, done, figures)
            threading.Thread(target=viewer, args=args, daemon=True).start()
            ready.wait(60)
        proc = subprocess.Popen(
            [*cmd, "--web", "--web-linger", "20s"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        url = re.search(r"live page (\S+)", proc.stderr.readline())
        assert url, "no live page line"
        if how == "browser":
            urls.put(url.group(1))
        else:
            args = (url.group(1), done)
            threading.Thread(target=stream_viewer, args=args, daemon=True).start()
        threading.Thread(target=follow, args=(proc.pid, figures, ended), daemon=True).start()
        for line in proc.stderr:
            if "stays up" in line:
                break
        ended.set()
        done.wait(30)
        figures.update(web_thread(proc.pid))
        figures.pop("cpus")
        proc.send_signal(2)
        proc.wait(timeout=30)
    summary = json.loads((out / "summary.json").read_text())
    entry = next(e for e in summary["experiments"] if e["name"] == NAME)
    sweep = entry["sweep"]
    judged = [
        r for r in sweep["steps"]
        if not r["disturbed"] and not r["past"] and r["client_cpu_pct"] and r["achieved"]
    ]  # fmt: skip
    per_request = [r["client_cpu_pct"] / 100 * 1e6 / r["achieved"] for r in judged]
    return {
        "last_good": sweep["last_good"],
        "first_bad": sweep["first_bad"],
        "client_us_per_request": median(per_request) if per_request else float("nan"),
        "bench_cpu_pct": entry.get("bench_cpu_pct"),
        "duration_s": len(sweep["steps"]),
        **figures,
    }


def page_cost(cpu: str, tmp: Path) -> None:
    """What the page costs the browser that shows it: `serve` on CPU 1, an `attack --web`
    at 2,000/s for 70 s on CPU 0, Chromium on ``cpu``; its processes' CPU from /proc."""
    from playwright.sync_api import sync_playwright

    from common import pinned, start, stop, wait_port

    serve = start(pinned(1, [*tippingpoint(), "serve", "--ports", "18282", "--processes", "1"]))
    try:
        wait_port(18282)
        attack = [*tippingpoint(), "attack", "http://127.0.0.1:18282/", "--rate", "2000"]
        proc = subprocess.Popen(
            pinned(0, [*attack, "--duration", "70s", "-o", "/dev/null", "--web"]),
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        url = re.search(r"live page (\S+)", proc.stderr.readline())
        assert url
        with sync_playwright() as p:
            chromium = pinned_chromium(tmp, cpu)
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            t0, c0 = time.monotonic(), browser_cpu_s()
            page.goto(url.group(1))
            page.wait_for_timeout(15_000)
            t1, c1 = time.monotonic(), browser_cpu_s()
            page.wait_for_timeout(40_000)
            t2, c2 = time.monotonic(), browser_cpu_s()
            browser.close()
        print(
            f"the page's browser (CPU {cpu}): {100 * (c1 - c0) / (t1 - t0):.1f} % of a core "
            f"over its first 15 s, {100 * (c2 - c1) / (t2 - t1):.1f} % over the next 40 s"
        )
        proc.send_signal(2)
        proc.wait(timeout=30)
    finally:
        stop(serve)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--viewer-cpu", default="0")
    parser.add_argument(
        "--viewer",
        choices=("browser", "stream"),
        default="browser",
        help="browser: the page in Chromium on --viewer-cpu; stream: its event stream read "
        "to the end (a browser on another machine costs the bench only that)",
    )
    parser.add_argument(
        "--page-cost",
        action="store_true",
        help="only what the page costs its browser (Chromium on --viewer-cpu, 1 advised)",
    )
    args = parser.parse_args()
    need("haproxy", "chromium", "taskset")
    print(machine())
    if args.page_cost:
        with tempfile.TemporaryDirectory() as tmp:
            page_cost(args.viewer_cpu, Path(tmp))
        return
    results: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.runs):
            for web in (False, True) if k % 2 == 0 else (True, False):
                began = time.monotonic()
                r = run(Path(tmp), k, web, args.viewer_cpu, args.viewer)
                r["wall_s"] = round(time.monotonic() - began)
                results[web].append(r)
                print(("with --web " if web else "plain      ") + json.dumps(r), flush=True)
    for web in (False, True):
        rows = results[web]
        goods = [r["last_good"] for r in rows if r["last_good"]]
        print(
            f"{'with --web' if web else 'plain':11s} knee (last good) median "
            f"{median(goods) if goods else 0:,.0f}/s over {goods}; generator "
            f"{median([r['client_us_per_request'] for r in rows]):.2f} µs/request (over "
            f"{[round(r['client_us_per_request'], 1) for r in rows]}); bench "
            f"process {median([r['bench_cpu_pct'] or 0 for r in rows]):.1f} % of a core"
        )
    plain, web_rows = results[False], results[True]
    if web_rows:
        cpu = [r["cpu_s"] / r["wall_s"] * 100 for r in web_rows]
        browser = [r.get("browser_settled_cpu_pct", 0.0) for r in web_rows]
        print(
            f"web server thread: {median(cpu):.2f} % of a core over each run "
            f"(runs {', '.join(f'{c:.2f}' for c in cpu)}), on CPUs "
            f"{sorted({c for r in web_rows for c in r['web_thread_cpus_during_run']})} "
            f"during the runs; the page's browser, 10 s after it opened: {median(browser):.1f} % "
            "of a core"
        )
    goods = [r["last_good"] for r in plain if r["last_good"]]
    if len(goods) > 1:
        m = median(goods)
        print(f"noise (plain runs): knee {min(goods) / m:.2f}x-{max(goods) / m:.2f}x of median")


if __name__ == "__main__":
    main()
