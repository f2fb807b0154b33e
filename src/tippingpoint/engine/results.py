"""Per-request results in Vegeta's JSON format (``vegeta encode --to json``), for ``--records``.

One line per request: its intended send time as an RFC 3339 timestamp, latency from that
time in nanoseconds, status (0 for none), byte counts and error. Lines are gathered in
memory and written with one ``os.write`` per interval, so that the file costs the hot
path one small object per request and no system call.
"""

from __future__ import annotations

import json
import os
import time

from tippingpoint.targets import Target

__all__ = ["ResultWriter"]


class ResultWriter:
    __slots__ = ("_fd", "_file", "_lines", "_seq", "_start_epoch", "_start_ns")

    def __init__(self, path: str, start_ns: int, start_epoch: float) -> None:
        """Append to ``path``; ``start_ns`` (monotonic) is ``start_epoch`` (wall clock)."""
        self._file = open(path, "a")  # noqa: SIM115 - closed by close()
        self._fd = self._file.fileno()
        self._lines: list[str] = []
        self._seq = 0
        self._start_ns = start_ns
        self._start_epoch = start_epoch

    def add(
        self, target: Target, intended_ns: int, latency_ns: int, code: int, body: int, error: str
    ) -> None:
        intended = self._start_epoch + (intended_ns - self._start_ns) / 1e9
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(intended))
        frac = f"{intended % 1:.9f}"[1:]
        self._lines.append(
            json.dumps(
                {
                    "attack": "",
                    "seq": self._seq,
                    "code": code,
                    "timestamp": f"{stamp}{frac}Z",
                    "latency": latency_ns,
                    "bytes_out": len(target.body),
                    "bytes_in": body,
                    "error": error,
                    "body": None,
                    "method": target.method,
                    "url": target.url,
                    "headers": None,
                },
                separators=(",", ":"),
            )
        )
        self._seq += 1

    def flush(self) -> None:
        if self._lines:
            os.write(self._fd, ("\n".join(self._lines) + "\n").encode())
            self._lines.clear()

    def close(self) -> None:
        self.flush()
        self._file.close()
