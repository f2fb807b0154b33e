"""`tippingpoint report` and `encode` on real result streams."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from tests.conftest import run_tp, tippingpoint_cmd


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> Path:
    """One 3-second, 2-process attack against tippingpoint serve, shared by these tests."""
    from tests.conftest import free_ports, start_server

    server = start_server(["--processes", "1"], free_ports(1), metrics=False)
    try:
        result = run_tp(
            "attack",
            server.url + "/",
            "--rate",
            "600",
            "--duration",
            "3s",
            "--processes",
            "2",
            "-H",
            "sleep: 2",
        )
        assert result.returncode == 0, result.stderr
    finally:
        server.stop()
    path = tmp_path_factory.mktemp("stream") / "run.jsonl"
    path.write_bytes(result.stdout)
    return path


def report(*args: str, input: bytes | None = None) -> str:
    result = run_tp("report", *args, input=input)
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def test_text_report_has_vegeta_rows_ab_table_and_verdict(stream: Path) -> None:
    text = report(str(stream))
    for row in (
        "Requests      [total, rate, throughput]",
        "Duration      [total, attack, wait]",
        "Latencies     [min, mean, 50, 90, 95, 99, 99.9, max]",
        "Bytes In",
        "Bytes Out",
        "Success       [ratio]                                  100.00%",
        "Status Codes  [code:count]                             200:1800",
        "Error Set:",
        "Percentage of the requests served within a certain time",
        "100%",
        "(longest request)",
        "Generator     OK",
    ):
        assert row in text, (row, text)


def test_stdin_equals_file(stream: Path) -> None:
    assert report(input=stream.read_bytes()) == report(str(stream))


def test_merging_split_streams_equals_the_whole(stream: Path, tmp_path: Path) -> None:
    lines = stream.read_text().splitlines()
    header = lines[0]
    parts = []
    for k in (0, 1):
        part = tmp_path / f"p{k}.jsonl"
        mine = [line for line in lines[1:] if json.loads(line)["process"] == k]
        part.write_text("\n".join([header.replace('"processes":2', '"processes":1'), *mine]) + "\n")
        parts.append(str(part))
    whole = json.loads(report("--type", "json", str(stream)))
    merged = json.loads(report("--type", "json", *parts))
    for key in (
        "requests",
        "status_codes",
        "bytes_in",
        "latencies",
        "service",
        "success",
        "earliest",
        "latest",
        "end",
        "duration",
        "wait",
    ):
        assert merged[key] == whole[key], key


def test_merging_two_runs_adds_them(stream: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(stream.read_bytes())
    one = json.loads(report("--type", "json", str(stream)))
    two = json.loads(report("--type", "json", str(stream), str(copy)))
    assert two["requests"] == 2 * one["requests"]
    assert two["latencies"]["99th"] == one["latencies"]["99th"]


def test_truncated_last_line_is_tolerated_and_bad_lines_are_not(
    stream: Path, tmp_path: Path
) -> None:
    data = stream.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: len(data) - 200])
    result = run_tp("report", str(cut))
    assert result.returncode == 0
    assert b"warning: " in result.stdout and b"truncated" in result.stdout
    bad = tmp_path / "bad.jsonl"
    lines = data.splitlines()
    bad.write_bytes(b"\n".join([*lines[:2], b"garbage", *lines[2:]]) + b"\n")
    result = run_tp("report", str(bad))
    assert result.returncode == 1
    assert b"bad.jsonl:3: not a tippingpoint result stream" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello\n", b"x:1: not a tippingpoint result stream"),
        (b"[1, 2]\n", b"x:1: not a tippingpoint result stream"),
        (b"42\n", b"x:1: not a tippingpoint result stream"),
        (b"", b"x: empty: no result records"),
    ],
)
def test_what_is_not_a_result_stream_is_refused_not_reported_as_ok(
    tmp_path: Path, content: bytes, message: bytes
) -> None:
    """A text file, other JSON or nothing at all used to make an all-zero report that
    called the generator OK, with exit status 0."""
    path = tmp_path / "x"
    path.write_bytes(content)
    for args, source in (([str(path)], message), ([], message.replace(b"x", b"stdin", 1))):
        result = run_tp("report", *args, input=None if args else content)
        assert result.returncode == 1, result.stderr
        err = result.stderr.strip()
        assert source in err and err.count(b"\n") == 0 and b"OK" not in result.stdout
    encoded = run_tp("encode", "--to", "csv", str(path))
    assert encoded.returncode == 1 and message in encoded.stderr


def test_vegeta_json_results_are_read(tmp_path: Path) -> None:
    lines = []
    for i in range(100):
        lines.append(
            json.dumps(
                {
                    "attack": "",
                    "seq": i,
                    "code": 200 if i < 90 else 500,
                    "timestamp": f"2024-01-01T00:00:{i // 10:02d}.{i % 10}00000000Z",
                    "latency": (i + 1) * 1_000_000,
                    "bytes_out": 10,
                    "bytes_in": 4,
                    "error": "",
                    "body": None,
                    "method": "GET",
                    "url": "http://127.0.0.1/",
                    "headers": None,
                }
            )
        )
    lines.append(
        json.dumps(
            {
                "attack": "",
                "seq": 100,
                "code": 0,
                "timestamp": "2024-01-01T00:00:09.950000000Z",
                "latency": 0,
                "bytes_out": 0,
                "bytes_in": 0,
                "error": "connection refused",
            }
        )
    )
    path = tmp_path / "vegeta.json"
    path.write_text("\n".join(lines) + "\n")
    out = json.loads(report("--type", "json", str(path)))
    assert out["requests"] == 101
    assert out["status_codes"] == {"0": 1, "200": 90, "500": 10}
    assert out["success"] == pytest.approx(90 / 101)
    assert out["latencies"]["max"] == pytest.approx(100e6, rel=0.001)
    assert out["latencies"]["50th"] == pytest.approx(50e6, rel=0.001)
    assert out["duration"] == pytest.approx(9.95e9, rel=1e-6)
    assert out["bytes_in"]["total"] == 400


def test_hist_hdrplot_and_every(stream: Path) -> None:
    hist = report("--type", "hist[0,1ms,2ms,5ms]", str(stream))
    rows = hist.splitlines()
    assert rows[0].startswith("Bucket")
    assert len(rows) == 5 and rows[-1].startswith("[5ms,\t+Inf]")
    assert sum(int(r.split("\t")[2]) for r in rows[1:]) == 1800
    plot = report("--type", "hdrplot", str(stream))
    assert "Percentile" in plot and "#[Total count = 1800]" in plot
    windows = report("--every", "1s", "--type", "json", str(stream))
    per_window = [json.loads(line)["requests"] for line in windows.splitlines()]
    assert sum(per_window) == 1800 and len(per_window) >= 3


def test_encode_hlog_is_read_by_hdrhistogram(stream: Path, tmp_path: Path) -> None:
    result = run_tp("encode", "--to", "hlog", str(stream))
    assert result.returncode == 0, result.stderr
    path = tmp_path / "run.hlog"
    path.write_bytes(result.stdout)
    reader = HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
    total = 0
    while (h := reader.get_next_interval_histogram()) is not None:
        total += h.get_total_count()
    assert total == 1800


def test_encode_csv(stream: Path) -> None:
    out = subprocess.run(
        tippingpoint_cmd("encode", "--to", "csv", str(stream)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0].startswith("source,process,t,dur,sent,done,ok")
    assert sum(int(row.split(",")[5]) for row in out[1:]) == 1800


def test_bad_report_type() -> None:
    result = run_tp("report", "--type", "pie", input=b"")
    assert result.returncode == 2 and b"unknown report type" in result.stderr
