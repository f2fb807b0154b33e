"""Helpers shared by the benchmark scripts: pinned processes, waiting, medians."""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tippingpoint.procs import stop_process

ROOT = Path(__file__).resolve().parent.parent

# SIGTERM runs the scripts' cleanup (finally blocks stop every process they started).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
HOST = "127.0.0.1"


def tippingpoint(src: Path | None = None) -> list[str]:
    """The command that runs tippingpoint; with ``src``, the one in that ``src/`` directory
    (another checkout: a before/after comparison within one run)."""
    if src is None:
        return [sys.executable, "-m", "tippingpoint"]
    return ["env", f"PYTHONPATH={src}", sys.executable, "-m", "tippingpoint"]


def baseline_src(root: str) -> Path:
    """The ``src/`` of the checkout at ``root`` (e.g. made by `git worktree add`)."""
    src = Path(root).resolve() / "src"
    if not (src / "tippingpoint" / "__main__.py").is_file():
        sys.exit(f"--baseline {root}: no src/tippingpoint there; give a checkout's root")
    return src


def pinned(cpu: int | str, cmd: Sequence[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd]


def need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: run scripts/setup-bench first")


def wait_port(port: int, host: str = HOST, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


def start(cmd: Sequence[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop one process we started, by its PID."""
    stop_process(proc, timeout)


def start_cluster(
    workers: int, *, cpu: int | None = None, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``tippingpoint cluster local --workers N`` (on ``cpu``), in a session of its own;
    returns it and the scheduler's address (its first line)."""
    cmd = [*tippingpoint(), "cluster", "local", "--workers", str(workers)]
    proc = subprocess.Popen(
        pinned(cpu, cmd) if cpu is not None else cmd,
        stdout=subprocess.PIPE,
        stderr=open(log, "wb") if log else subprocess.DEVNULL,  # noqa: SIM115
        start_new_session=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


def stop_cluster(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Stop a cluster from :func:`start_cluster`: SIGTERM, then SIGKILL to its session."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cpu ({cpu}), {mem:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")
