"""RabbitMQ with its Web MQTT plugin: a packaged broker (Debian's rabbitmq-server) that
takes MQTT over WebSocket (path /ws), for tests that need a real broker on that side.

Debian 12's mosquitto 2.0.11 refuses a `protocol websockets` listener ("Unable to start
any listening sockets"): it is built without libwebsockets.

Everything it opens is on 127.0.0.1: its own epmd (started here, in the foreground,
and stopped by its PID), the Erlang distribution port, AMQP, MQTT and Web MQTT.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import HOST, free_ports

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


@dataclass
class Rabbit:
    proc: subprocess.Popen[bytes]
    epmd: subprocess.Popen[bytes]
    ws_port: int
    mqtt_port: int
    log: Path


def _wait(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                text = log.read_text()[-3000:]
                raise AssertionError(f"rabbitmq-server exited:\n{text}") from None
            time.sleep(0.2)
    raise AssertionError(f"rabbitmq-server did not open {port}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rabbit]:
    assert os.path.exists(SERVER), "rabbitmq-server is missing: run scripts/setup-debian"
    home = tmp_path_factory.mktemp("rabbitmq")
    epmd_port, amqp, mqtt, ws, dist = free_ports(5)
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp}\n"
        f"mqtt.listeners.tcp.default = 127.0.0.1:{mqtt}\n"
        f"web_mqtt.tcp.ip = 127.0.0.1\nweb_mqtt.tcp.port = {ws}\n"
        "mqtt.allow_anonymous = true\nloopback_users = none\n"
    )
    (home / "enabled_plugins").write_text("[rabbitmq_web_mqtt].\n")
    env = {
        **os.environ,
        "HOME": str(home),
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"tp{ws}@localhost",
        "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
        "RABBITMQ_LOG_BASE": str(home / "log"),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    log = home / "server.log"
    epmd = subprocess.Popen(
        ["epmd", "-address", HOST, "-port", str(epmd_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [SERVER], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait(ws, proc, log)
        yield Rabbit(proc, epmd, ws, mqtt, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        epmd.terminate()
        epmd.wait(10)
