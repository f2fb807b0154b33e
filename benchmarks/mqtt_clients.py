"""Reference MQTT clients driven the way mqtt_client_cost.py measures them.

    python benchmarks/mqtt_clients.py paho|gmqtt closed|rate PORT SESSIONS SECONDS [RATE]

closed: each session publishes at QoS 1, waits for the PUBACK, publishes again.
rate: QoS 0 messages at RATE per second in all, paced every millisecond, dealt
round-robin over the sessions. Prints the number of messages completed (acknowledged
for closed, written for rate) as the last line.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

PAYLOAD = bytes(64)


def paho_run(mode: str, port: int, sessions: int, seconds: float, rate: float) -> int:
    import paho.mqtt.client as mqtt

    done = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds
    clients = []
    for i in range(sessions):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{i}")
        topic = f"bench/{i}"

        def on_publish(c, u, mid, rc, props, topic=topic):  # type: ignore[no-untyped-def]
            with lock:
                done[0] += 1
            if mode == "closed" and time.monotonic() < end:
                c.publish(topic, PAYLOAD, 1)

        client.on_publish = on_publish
        client.connect("127.0.0.1", port, keepalive=60)
        client.loop_start()
        clients.append((client, topic))
    time.sleep(0.5)
    end = time.monotonic() + seconds
    if mode == "closed":
        for client, topic in clients:
            client.publish(topic, PAYLOAD, 1)
        time.sleep(seconds + 0.5)
    else:
        start = time.monotonic()
        sent = 0
        while time.monotonic() < end:
            due = int((time.monotonic() - start) * rate)
            while sent < due:
                client, topic = clients[sent % sessions]
                client.publish(topic, PAYLOAD, 0)
                sent += 1
            time.sleep(0.001)
        time.sleep(0.3)
    for client, _ in clients:
        client.disconnect()
        client.loop_stop()
    return done[0]


def gmqtt_run(mode: str, port: int, sessions: int, seconds: float, rate: float) -> int:
    import uvloop
    from gmqtt import Client

    done = [0]

    def counted(client: Client) -> Client:
        """gmqtt has no acknowledgement callback: count PUBACKs where it handles them."""
        handler = client._package_handler
        handle = handler._handle_puback_packet

        def on_puback(cmd: int, packet: bytes) -> None:
            handle(cmd, packet)
            done[0] += 1
            if mode == "closed" and time.monotonic() < client.end:
                client.publish(client.topic, PAYLOAD, qos=1)

        handler._handle_puback_packet = on_puback
        return client

    async def main() -> None:
        clients = []
        for i in range(sessions):
            client = counted(Client(f"gmqtt-{i}"))
            client.topic = f"bench/{i}"
            client.end = 0.0
            await client.connect("127.0.0.1", port, keepalive=60)
            clients.append(client)
        end = time.monotonic() + seconds
        if mode == "closed":
            for client in clients:
                client.end = end
                client.publish(client.topic, PAYLOAD, qos=1)
            await asyncio.sleep(seconds + 0.5)
        else:
            start = time.monotonic()
            sent = 0
            while time.monotonic() < end:
                due = int((time.monotonic() - start) * rate)
                while sent < due:
                    client = clients[sent % sessions]
                    client.publish(client.topic, PAYLOAD, qos=0)
                    sent += 1
                await asyncio.sleep(0.001)
            done[0] = sent
        for client in clients:
            await client.disconnect()

    uvloop.run(main())
    return done[0]


if __name__ == "__main__":
    which, mode, port, sessions, seconds = sys.argv[1:6]
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    run = paho_run if which == "paho" else gmqtt_run
    print(run(mode, int(port), int(sessions), float(seconds), rate))
