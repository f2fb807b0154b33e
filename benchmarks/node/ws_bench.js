// The `ws` package driven as benchmarks/ws_clients.py drives the Python client.
//   node ws_bench.js closed|rate URL CONNECTIONS SECONDS [RATE]
// Prints the number of pongs received as the last line.
const WebSocket = require("ws");

const [mode, url, connections, seconds, rate] = process.argv.slice(2);
const n = Number(connections);
let done = 0;
let end = 0;

function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

(async () => {
  const clients = [];
  for (let i = 0; i < n; i++) clients.push(await open());
  end = Date.now() + Number(seconds) * 1000;
  if (mode === "closed") {
    for (const ws of clients) {
      ws.on("message", () => {
        done += 1;
        if (Date.now() < end) ws.send("ping");
      });
      ws.send("ping");
    }
    await new Promise((r) => setTimeout(r, Number(seconds) * 1000 + 300));
  } else {
    for (const ws of clients) ws.on("message", () => { done += 1; });
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
          clients[sent % n].send("ping");
          sent += 1;
        }
      }, 1);
    });
    await new Promise((r) => setTimeout(r, 300));
  }
  clients.forEach((ws) => ws.terminate());
  console.log(done);
  process.exit(0);
})();
