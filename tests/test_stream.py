"""The result stream's record types: streams written before they existed decode to the
same report, and encoding a decoded line gives back its bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_tp
from tippingpoint.stream import (
    Header,
    HoldHeader,
    HoldRecord,
    Interval,
    StreamError,
    VegetaResult,
    decode,
    encode,
)

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["attack-v1.jsonl", "closed-v1.jsonl", "hold-v1.jsonl"])
def test_old_streams_round_trip_byte_for_byte(name: str) -> None:
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    assert lines
    for line in lines:
        record = decode(line)
        assert isinstance(record, Header | Interval | HoldRecord)
        assert encode(record) == line


def test_old_streams_types() -> None:
    attack = [decode(line) for line in (DATA / "attack-v1.jsonl").read_bytes().splitlines()]
    header = attack[0]
    assert isinstance(header, Header) and header.processes == 2 and header.rate == 300
    intervals = [r for r in attack if isinstance(r, Interval)]
    assert {r.process for r in intervals} == {0, 1}
    assert sum(r.done for r in intervals) == 900
    assert sum(r.histogram("latency").total for r in intervals) == 900
    assert all(r.cpu_us is not None and r.codes == {200: r.done} for r in intervals)
    hold = [decode(line) for line in (DATA / "hold-v1.jsonl").read_bytes().splitlines()]
    assert all(isinstance(r, HoldRecord) for r in hold)
    final = hold[-1]
    assert isinstance(final, HoldRecord) and final.final and not final.interrupted


@pytest.mark.parametrize("name", ["attack-v1", "closed-v1"])
def test_old_streams_report_as_they_did(name: str) -> None:
    result = run_tp("report", "--type", "json", str(DATA / f"{name}.jsonl"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads((DATA / f"{name}.report.json").read_text())


def test_a_hold_header_round_trips_and_report_sends_holds_elsewhere(tmp_path: Path) -> None:
    header = HoldHeader(
        start=1764500000.25,
        target="http://127.0.0.1:8282/",
        connections=60_000,
        connect_rate=20_000.0,
        duration=9.0,
        request_every=None,
        processes=6,
        tool="tippingpoint 0",
        cluster=[
            {"worker": "tcp://127.0.0.1:1", "host": "a", "shards": [0, 1], "clock_offset_ms": 0.5}
        ],
    )
    line = encode(header)
    assert decode(line) == header and encode(decode(line)) == line
    assert json.loads(line)["type"] == "hold-start"
    hold = tmp_path / "hold.jsonl"
    hold.write_bytes(line + (DATA / "hold-v1.jsonl").read_bytes())
    result = run_tp("report", str(hold))
    assert result.returncode != 0 and b"a hold's records" in result.stderr


def test_older_fields_missing_and_vegeta_results() -> None:
    # A record from before cpu_us and in_flight were written.
    old = decode(b'{"type":"interval","process":0,"t":0,"dur":1,"sent":1,"done":1,"hist":{}}')
    assert isinstance(old, Interval) and old.cpu_us is None and old.in_flight == 0
    assert b'"cpu_us"' not in encode(old)
    vegeta = decode(
        '{"attack":"","seq":0,"code":200,"timestamp":"2026-01-01T00:00:00Z",'
        '"latency":1500000,"bytes_out":0,"bytes_in":4,"error":""}'
    )
    assert isinstance(vegeta, VegetaResult) and vegeta.latency_ns == 1_500_000


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"type":"interval",', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"type":"sample"}', "unknown record type 'sample'"),
        (b'{"type":"interval","process":0}', "a interval record with a bad field"),
    ],
)
def test_bad_lines(line: bytes, message: str) -> None:
    with pytest.raises(StreamError, match=message):
        decode(line)
