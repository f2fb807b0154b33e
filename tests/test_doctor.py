"""`tippingpoint doctor` on a fake /proc/sys, and its connection arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_tp
from tippingpoint.doctor import apply_fixes, diagnose
from tippingpoint.plan import loopback_sources, plan_connections


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
    assert plan.source_addresses == 119  # each pair planned 30 % full: 8,469 ports
    assert plan.proxy_instances == 0 and plan.backend_ports == 0
    assert plan.feasible
    ten_ports = plan_connections(1_000_000, 20_000, (1024, 65535), 10, 24 * 2**30)
    assert ten_ports.source_addresses == 6
    tight = plan_connections(3_000_000, 20_000, (1024, 65535), 1, 24 * 2**30)
    assert not tight.feasible and "GiB" in tight.problems[0]
    fits = int(tight.problems[0].split("at most about ")[1].split()[0].replace(",", ""))
    assert plan_connections(fits, 20_000, (1024, 65535), 1, 24 * 2**30).feasible
    assert not plan_connections(fits * 101 // 100, 20_000, (1024, 65535), 1, 24 * 2**30).feasible


def test_plan_through_haproxy_counts_both_legs_and_instances() -> None:
    direct = plan_connections(500_000, 20_000, (1024, 65535), 1)
    proxied = plan_connections(500_000, 20_000, (1024, 65535), 1, proxied=True, backend_ports=10)
    # 9,900 connections per instance (two descriptors each), filled to 85 %: 8,415
    assert proxied.proxy_instances == 60
    assert proxied.backend_ports == 26 and proxied.source_addresses == 26
    assert proxied.feasible and "and 26 to keep connect() fast" in proxied.warnings[0]
    crowded = plan_connections(500_000, 20_000, (1024, 65535), 1, proxied=True, backend_ports=7)
    assert not crowded.feasible and "need 8 backend port(s)" in crowded.problems[0]
    assert proxied.memory_bytes > direct.memory_bytes + 500_000 * 9_000
    tls = plan_connections(100_000, 20_000, (1024, 65535), 1, proxied=True, scheme="https")
    assert tls.memory_bytes > 100_000 * 50_000


def test_plan_refuses_more_descriptors_than_the_system_has() -> None:
    plan = plan_connections(600_000, 20_000, (1024, 65535), 10, file_max=1_000_000)
    assert not plan.feasible
    assert "1,200,000 descriptors" in plan.problems[0] and "fs.file-max=1300000" in plan.problems[0]
    proxied = plan_connections(300_000, 20_000, (1024, 65535), 1, proxied=True, file_max=1_000_000)
    assert "1,200,000 descriptors" in proxied.problems[0]  # 2 legs, both ends of each
    idle = plan_connections(
        300_000, 20_000, (1024, 65535), 1, proxied=True, idle=True, file_max=1_000_000
    )
    assert idle.feasible


def test_plan_refuses_too_few_source_addresses() -> None:
    plan = plan_connections(100_000, 20_000, (32768, 60999), 1, source_addresses=1)
    assert not plan.feasible
    assert "need 4 source address(es)" in plan.problems[0]
    assert "--laddr 127.0.0.2-127.0.0.13" in plan.problems[0]
    crowded = plan_connections(100_000, 20_000, (32768, 60999), 1, source_addresses=4)
    assert crowded.feasible and "and 12 to keep connect() fast" in crowded.warnings[0]
    assert not plan_connections(100_000, 20_000, (32768, 60999), 1, source_addresses=12).warnings


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


def test_loopback_sources() -> None:
    assert loopback_sources(3) == ("127.0.0.2", "127.0.0.3", "127.0.0.4")
    assert loopback_sources(300)[-1] == "127.0.1.45"  # past 127.0.0.255
    with pytest.raises(ValueError):
        loopback_sources(0)


def test_mqtt_timeouts_that_cut_idle_sessions() -> None:
    from tippingpoint.doctor import mqtt_timeouts
    from tippingpoint.proxy.config import Frontend, MQTTRouting, ProxyConfig, render

    usual = (
        "defaults\n    mode tcp\n    timeout client 30s\n    timeout server 30s\n"
        "frontend mqtt\n    bind :1883\n"
        "    tcp-request content reject unless { req.payload(0,0),mqtt_is_valid }\n"
        "    default_backend b\nbackend b\n    server m1 127.0.0.1:1884\n"
        "frontend web\n    bind :80\n    timeout client 5s\n"
    )
    check = mqtt_timeouts(60, usual)
    assert not check.ok
    assert "timeout client 30 s" in check.value
    assert "--mqtt-timeout 91s" in check.advice
    tunnel = usual.replace(
        "    default_backend b\n", "    timeout tunnel 1h\n    default_backend b\n"
    )
    assert mqtt_timeouts(60, tunnel).ok
    ours = render(
        ProxyConfig(servers={"mqtt": (("127.0.0.1", 1884),)},
                    frontends=(Frontend("mqtt", ("127.0.0.1", 1883)),),
                    mqtt=MQTTRouting(timeout_s=60))
    )  # fmt: skip
    assert not mqtt_timeouts(60, ours).ok  # 60 s < 1.5 x 60 s
    assert mqtt_timeouts(30, ours).ok
    assert mqtt_timeouts(60, None).ok  # tippingpoint proxy's 2 h default


def test_tunnel_timeouts_that_cut_idle_websockets() -> None:
    from tippingpoint.doctor import ws_timeouts
    from tippingpoint.proxy.config import Frontend, ProxyConfig, render

    usual = (
        "defaults\n    mode http\n    timeout client 30s\n    timeout server 30s\n"
        "frontend web\n    bind :80\n    default_backend b\n"
        "backend b\n    server s1 127.0.0.1:8282\n"
    )
    check = ws_timeouts(30, usual)
    assert not check.ok and "backend b: 30 s" in check.value
    assert "timeout tunnel 46s" in check.advice
    assert ws_timeouts(30, usual.replace("backend b\n", "backend b\n    timeout tunnel 1h\n")).ok
    ours = render(
        ProxyConfig(
            servers={"http": (("127.0.0.1", 8282),)},
            frontends=(Frontend("http", ("127.0.0.1", 8080)),),
        )
    )
    assert ws_timeouts(3600, ours).ok  # 2 h tunnel
    assert not ws_timeouts(5000, ours).ok
    assert ws_timeouts(30, None).ok


def test_doctor_checks_a_websocket_ping_interval(tmp_path) -> None:
    config = tmp_path / "h.cfg"
    config.write_text(
        "defaults\n    timeout client 10s\n    timeout server 10s\n"
        "backend b\n    server s1 127.0.0.1:8282\n"
    )
    result = run_tp(
        "doctor", "--connections", "100", "--ws-ping-every", "30s", "--haproxy-config",
        str(config),
    )  # fmt: skip
    out = result.stdout.decode()
    assert "FIX  timeouts that cut idle WebSockets" in out, out
