"""Python cost of the backend's hot path, without sockets: one data_received per request.

Feeds a wrk-style request to the server protocol with a transport that discards
writes, and prints microseconds per request for the plain, pipelined (3 per read)
and ab-style (4 headers, HTTP/1.0 keep-alive) cases, plus the parser alone and, when
httptools is installed, httptools' parser on the same request.

    python benchmarks/protocol_cost.py [--number 200000]
"""

from __future__ import annotations

import argparse
import timeit

from tippingpoint.server.config import ServeConfig
from tippingpoint.server.protocol import PongProtocol
from tippingpoint.server.stats import SharedStats
from tippingpoint.server.worker import Worker, new_loop
from tippingpoint.wire.http1 import RequestReader

WRK = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:8282\r\n\r\n"
AB = (
    b"GET /ping HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1:8282\r\n"
    b"User-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n"
)


class NullTransport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=200_000)
    n = parser.parse_args().number
    loop, name = new_loop("auto")
    worker = Worker(ServeConfig(), 0, SharedStats(1), loop, name, 20000)
    proto = PongProtocol(worker)
    proto.connection_made(NullTransport())  # type: ignore[arg-type]
    reader = RequestReader()

    def parse() -> None:
        reader.feed(WRK)
        reader.next_request()

    cases = {
        "parser only (wrk request)": (parse, 1),
        "data_received, wrk request": (lambda: proto.data_received(WRK), 1),
        "data_received, ab -k request": (lambda: proto.data_received(AB), 1),
        "data_received, 3 pipelined": (lambda: proto.data_received(WRK * 3), 3),
    }
    try:
        import httptools

        class Callbacks:
            def on_header(self, name: bytes, value: bytes) -> None:
                pass

            def on_message_complete(self) -> None:
                pass

        parser = httptools.HttpRequestParser(Callbacks())
        cases["httptools parser only (wrk request)"] = (lambda: parser.feed_data(WRK), 1)
    except ImportError:
        print("(httptools not installed: pip install httptools to compare its parser)")
    for label, (fn, per_call) in cases.items():
        best = min(timeit.repeat(fn, number=n, repeat=5)) / (n * per_call)
        print(f"{label:32s} {best * 1e6:6.2f} us per request")


if __name__ == "__main__":
    main()
