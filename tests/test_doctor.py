"""`tippingpoint doctor` on a fake /proc/sys, and its connection arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_tp
from tippingpoint.doctor import apply_fixes, diagnose, plan_connections


def fake_proc(tmp: Path, values: dict[str, str]) -> Path:
    for key, value in values.items():
        path = tmp / key.replace(".", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    return tmp


DEFAULTS = {
    "fs.nr_open": "1048576",
    "fs.file-max": "100000",
    "net.ipv4.ip_local_port_range": "32768\t60999",
    "net.core.somaxconn": "4096",
    "net.ipv4.tcp_max_syn_backlog": "2048",
    "net.ipv4.tcp_tw_reuse": "0",
}


def test_plan_for_a_million_connections() -> None:
    plan = plan_connections(1_000_000, 20_000, (32768, 60999), 1, 24 * 2**30)
    assert plan.client_processes == 51  # 19,936 per process
    assert plan.ports_per_pair == 28_232
    assert plan.source_addresses == 36
    assert plan.feasible
    ten_ports = plan_connections(1_000_000, 20_000, (1024, 65535), 10, 24 * 2**30)
    assert ten_ports.source_addresses == 2
    tight = plan_connections(3_000_000, 20_000, (1024, 65535), 1, 24 * 2**30)
    assert not tight.feasible and "GiB" in tight.problems[0]


def test_checks_and_fixes_on_a_fake_proc(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "sys", DEFAULTS)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 25000000 kB\nMemAvailable: 24000000 kB\n")
    checks, plan = diagnose(
        200_000,
        sleep_ms=60_000,
        client_timeout_s=30,
        proc_sys=root,
        meminfo=meminfo,
        rlimit=lambda: (1024, 20_000),
    )
    by_name = {c.name.split(" (")[0]: c for c in checks}
    assert not by_name["open files per process"].ok
    assert "ulimit -n 20000" in by_name["open files per process"].advice
    assert not by_name["system-wide open files"].ok
    assert not by_name["ephemeral ports"].ok and "1024 65535" in by_name["ephemeral ports"].advice
    assert not by_name["TIME_WAIT reuse for new outgoing connections"].ok
    assert not by_name["timeouts that cut long requests"].ok
    assert plan.client_processes == 11
    applied = apply_fixes(checks, proc_sys=root)
    assert "set net.core.somaxconn = 65535" in applied
    assert (root / "net/ipv4/ip_local_port_range").read_text() == "1024 65535\n"
    assert (root / "fs/file-max").read_text() == "410000\n"
    again, _ = diagnose(200_000, proc_sys=root, meminfo=meminfo, rlimit=lambda: (20_000, 20_000))
    assert all(c.ok for c in again if c.sysctl is not None or "ports" in c.name)


def test_apply_reports_what_it_could_not_set(tmp_path: Path) -> None:
    root = fake_proc(tmp_path / "sys", DEFAULTS)
    checks, _ = diagnose(1000, proc_sys=root, meminfo=tmp_path / "none")
    (root / "net/core/somaxconn").unlink()
    (root / "net/core").rmdir()
    lines = apply_fixes(checks, proc_sys=root)
    assert any(line.startswith("could not set net.core.somaxconn") for line in lines)


@pytest.mark.parametrize("args", [["--connections", "50000"], ["--sleep", "60000"]])
def test_doctor_cli_on_this_machine(args: list[str]) -> None:
    result = run_tp("doctor", *args)
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "open files per process" in text and "ephemeral ports" in text
    assert "memory for" in text
