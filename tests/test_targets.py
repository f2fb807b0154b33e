"""Targets: Vegeta's http and json formats, and the bytes sent."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tippingpoint.targets import Target, TargetError, encode_request, parse_targets


def test_url_parts_and_encoding() -> None:
    t = Target("GET", "http://127.0.0.1:8282/ping?x=1")
    assert (t.origin.host, t.origin.port, t.origin.tls, t.path) == (
        "127.0.0.1",
        8282,
        False,
        "/ping?x=1",
    )
    raw = encode_request(t)
    assert raw.startswith(
        b"GET /ping?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8282\r\nUser-Agent: tippingpoint/"
    )
    assert raw.endswith(b"\r\n\r\n") and b"Connection" not in raw
    assert b"Connection: close\r\n" in encode_request(t, keep_alive=False)
    https = Target("GET", "https://localhost/")
    assert https.origin.port == 443 and https.origin.tls and https.host_header == "localhost"


def test_headers_and_body() -> None:
    t = Target("POST", "http://127.0.0.1/x", (("sleep", "1000"), ("times", "2")), b'{"a":1}')
    raw = encode_request(t)
    assert b'\r\nsleep: 1000\r\ntimes: 2\r\nContent-Length: 7\r\n\r\n{"a":1}' in raw
    assert b"Content-Length: 0" in encode_request(Target("POST", "http://127.0.0.1/"))


def test_http_targets_format(tmp_path: Path) -> None:
    (tmp_path / "body.json").write_bytes(b"BODY")
    text = """
# comment
GET http://127.0.0.1:8282/a
X-Account-ID: 8675309

POST http://127.0.0.1:8282/b
Authorization: Token DEADBEEF
@body.json

DELETE http://127.0.0.1:8283/c
"""
    targets = parse_targets(text, "http", headers=(("sleep", "5"),), base=tmp_path)
    assert [t.method for t in targets] == ["GET", "POST", "DELETE"]
    assert targets[0].headers == (("sleep", "5"), ("X-Account-ID", "8675309"))
    assert targets[1].body == b"BODY"
    assert targets[2].origin.port == 8283


def test_json_targets_format() -> None:
    line = json.dumps(
        {
            "method": "POST",
            "url": "http://127.0.0.1:8282/x",
            "header": {"Content-Type": ["application/json"], "X": ["1", "2"]},
            "body": base64.b64encode(b"{}").decode(),
        }
    )
    [t] = parse_targets(line + "\n", "json")
    assert t.headers == (("Content-Type", "application/json"), ("X", "1"), ("X", "2"))
    assert t.body == b"{}"


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("GET ftp://x/", "http", "^targets:1: bad URL"),
        ("GET", "http", "^targets:1: expected 'METHOD URL'"),
        ("GET http://127.0.0.1/\nbad header", "http", "^targets:2: bad header"),
        ("\n\nGET http://127.0.0.1/\n@/nonexistent/file", "http", "^targets:4: cannot read body"),
        ("", "http", "no targets"),
        ("{bad json", "json", "^targets:1: bad JSON target"),
        ('\n{"method": "GET"}', "json", "^targets:2: a JSON target needs 'url'"),
        ("x", "yaml", "unknown targets format"),
        ("GET http://127.0.0.1:99999/", "http", "bad port"),
    ],
)
def test_bad_targets(text: str, fmt: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_targets(text, fmt)
