"""Memory of one TLS client connection after its handshake, in Python's ssl over OpenSSL.

In one process: a server context (the bench's ECDSA P-256 certificate, TLS 1.3) and a
client context that verifies it; N connections are handshaken over memory BIOs, the
client's side of each is kept (its SSLObject and two MemoryBIOs, what a held connection
of `tippingpoint hold` keeps besides a few small Python objects) and the server's is
dropped. The RSS growth over N, after gc and malloc_trim, is the client's memory per
connection. Rows: the server sending 0, 1 or 2 TLSv1.3 session tickets (OpenSSL's and
HAProxy's default is 2), and after a byte of application data (read buffers released).

    python benchmarks/tls_memory.py [--connections 3000]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import ssl
import tempfile
from pathlib import Path

from common import machine
from tippingpoint.certs import make_certificate

Held = tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]


def rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def connect(client: ssl.SSLContext, server: ssl.SSLContext, data: bool) -> Held:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        try:
            c.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        s_in.write(c_out.read())
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            pass
        c_in.write(s_out.read())
        if done:
            break
    try:
        c.read(100)  # the session tickets, if any
    except ssl.SSLWantReadError:
        pass
    if data:
        s.write(b"x")
        c_in.write(s_out.read())
        c.read(100)
    return c, c_in, c_out


def per_connection(cert: Path, key: Path, tickets: int, data: bool, n: int) -> float:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    server.num_tickets = tickets
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert)
    libc = ctypes.CDLL("libc.so.6")
    warm = [connect(client, server, data) for _ in range(50)]
    del warm
    gc.collect()
    libc.malloc_trim(0)
    before = rss()
    held = [connect(client, server, data) for _ in range(n)]
    gc.collect()
    libc.malloc_trim(0)
    grown = rss() - before
    del held
    return grown / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    args = parser.parse_args()
    print(f"machine: {machine()}, {ssl.OPENSSL_VERSION}\n")
    print("| server sends | then | client memory per connection |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, _ = make_certificate(Path(tmp), "ecdsa")
        for tickets in (0, 1, 2):
            for data in (False, True):
                kib = per_connection(cert, key, tickets, data, args.connections) / 1024
                then = "a byte of data" if data else "idle"
                print(f"| {tickets} session ticket(s) | {then} | {kib:.1f} KiB |", flush=True)


if __name__ == "__main__":
    main()
