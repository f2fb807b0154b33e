// MQTT.js driven as benchmarks/mqtt_clients.py drives the Python clients.
//   node mqtt_bench.js closed|rate PORT SESSIONS SECONDS [RATE]
// Prints the number of messages completed as the last line.
const mqtt = require("mqtt");

const [mode, port, sessions, seconds, rate] = process.argv.slice(2);
const n = Number(sessions);
const payload = Buffer.alloc(64);
let done = 0;
let end = 0;

function connect(i) {
  return new Promise((resolve) => {
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
      clientId: `mqttjs-${i}`,
      keepalive: 60,
      reconnectPeriod: 0,
    });
    client.once("connect", () => resolve(client));
  });
}

function closedLoop(client, topic) {
  client.publish(topic, payload, { qos: 1 }, () => {
    done += 1;
    if (Date.now() < end) closedLoop(client, topic);
  });
}

(async () => {
  const clients = [];
  for (let i = 0; i < n; i++) clients.push(await connect(i));
  end = Date.now() + Number(seconds) * 1000;
  if (mode === "closed") {
    clients.forEach((c, i) => closedLoop(c, `bench/${i}`));
    await new Promise((r) => setTimeout(r, Number(seconds) * 1000 + 500));
  } else {
    const start = process.hrtime.bigint();
    let sent = 0;
    await new Promise((resolve) => {
      const tick = setInterval(() => {
        const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
        if (elapsed >= Number(seconds)) {
          clearInterval(tick);
          resolve();
          return;
        }
        const due = Math.floor(elapsed * Number(rate));
        while (sent < due) {
          clients[sent % n].publish(`bench/${sent % n}`, payload, { qos: 0 });
          sent += 1;
        }
      }, 1);
    });
    done = sent;
    await new Promise((r) => setTimeout(r, 300));
  }
  clients.forEach((c) => c.end(true));
  console.log(done);
  process.exit(0);
})();
