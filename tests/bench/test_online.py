"""`ferrum bench --url` against a real `ferrum serve` on loopback, and against a closed port."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from ferrum.commands import _register, app

START_TIMEOUT_S = 60.0
ADDRESS = re.compile(r"on (http://127\.0\.0\.1:\d+/v1)")
SMALL = ["--num-prompts", "6", "--input-len", "4:12", "--output-len", "3:9", "--warmup", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def server(tiny_llama):
    """`ferrum serve` on a free loopback port; yields its /v1 URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrum", "serve", str(tiny_llama), "--port", "0", "--device",
         "cpu", "--log-level", "warning", "--served-model-name", "tiny"],
        stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline, url = time.monotonic() + START_TIMEOUT_S, None
    for line in proc.stderr:
        match = ADDRESS.search(line)
        if match or time.monotonic() > deadline:
            url = match.group(1) if match else None
            break
    if url is None:
        proc.kill()
        pytest.fail(f"ferrum serve did not start (exit {proc.wait()})")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def bench(*args: str):
    _register()
    return CliRunner().invoke(app, ["bench", *args])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends


def test_closed_and_open_loop_against_ferrum_serve(server, tmp_path):
    out, png = tmp_path / "o.json", tmp_path / "o.png"
    result = bench(
        "--url", server, "--concurrency", "1,3", "--request-rate", "50,inf", "--repeats", "2",
        "--json", str(out), "--plot", str(png), *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    assert d["mode"] == "online" and d["server"]["model"] == "tiny"  # looked up at /v1/models
    assert d["num_errors"] == 0 and d["warmup_errors"] == 0 and d["error_rate"] == 0
    assert [(lv["mode"], lv["value"]) for lv in d["levels"]] == [
        ("concurrency", 1),
        ("concurrency", 3),
        ("request_rate", 50),
        ("request_rate", None),
    ]  # fmt: skip  (inf is written as null: JSON has no infinity)
    for level in d["levels"]:
        assert level["num_requests"] == 2 * 6 and len(level["runs"]) == 2
        s = level["summary"]
        assert s["output_tok_s"]["mean"] > 0 and s["output_tok_s"]["ci95"] >= 0
        for name in ("ttft", "tpot", "e2e"):
            p50, p90, p99 = (s[f"{name}_p{q}_ms"]["mean"] for q in (50, 90, 99))
            assert 0 < p50 <= p90 <= p99, name
        for run in level["runs"]:
            # the server's usage count: exactly the 3..9 tokens each request asked for
            assert 6 * 3 <= run["output_tokens"] <= 6 * 9
            assert run["input_tokens"] > 0
    c1 = d["levels"][0]["summary"]["mean_in_flight"]["mean"]
    assert c1 <= 1.0 + 1e-6  # one client: never two requests at once
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_jsonl_text_prompts_against_ferrum_serve(server, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "The quick brown fox"}\n{"prompt": "Paris", "output_len": 2}\n')
    out = tmp_path / "j.json"
    result = bench(
        "tiny", "--url", server, "--dataset", "jsonl", "--dataset-path", str(data),
        "--concurrency", "2", "--json", str(out), *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())["levels"][0]["runs"][0]
    assert run["num_errors"] == 0 and run["input_tokens"] > 0


def test_a_closed_port_counts_errors_and_sets_the_exit_code(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    out = tmp_path / "e.json"
    args = ["bench", "m", "--url", url, "--concurrency", "2", "--json", str(out), *SMALL]
    run = subprocess.run(
        [sys.executable, "-m", "ferrum", *args], capture_output=True, text=True, env=ENV
    )
    assert run.returncode == 1
    assert "above --max-error-rate" in run.stderr and "Traceback" not in run.stderr
    d = json.loads(out.read_text())  # the report is still written
    assert d["num_requests"] == 6 and d["num_errors"] == 6 and d["error_rate"] == 1.0
    assert "Connect" in d["levels"][0]["runs"][0]["errors"][0]

    allowed = bench(*args[1:], "--max-error-rate", "1")
    assert allowed.exit_code == 0, allowed.output
