// The article's backend ("Backend Code" section), without statsd and without the
// per-request console.log, for benchmarks/serve_throughput.py. Usage: node pingpong.js PORT
'use strict';
const http = require('http');

function randomIntInc(low, high) {
  return Math.floor(Math.random() * (high - low + 1) + low);
}

function sendResponse(res, times, maxSleep) {
  res.write('pong');
  if (times == 0) {
    res.end();
  } else {
    setTimeout(sendResponse, randomIntInc(0, maxSleep + 1), res, times - 1, maxSleep);
  }
}

const server = http.createServer((req, res) => {
  const maxSleep = parseInt(req.headers['sleep']);
  const times = req.headers['times'] || 0;
  res.writeHead(200);
  // Without a sleep header maxSleep is NaN and the timer fires after 1 ms, as in the article.
  setTimeout(sendResponse, randomIntInc(0, maxSleep + 1), res, times, maxSleep);
});
server.timeout = 3600000;
server.listen(parseInt(process.argv[2]), '127.0.0.1');
