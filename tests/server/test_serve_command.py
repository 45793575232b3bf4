"""`ferrum serve` as a process: start-up line, and SIGTERM drains in-flight requests, exit 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

START_TIMEOUT_S = 60.0
ADDRESS = re.compile(r"loaded in [0-9.]+ s .* on (http://127\.0\.0\.1:\d+)/v1")


def start_server(model_dir, *flags: str) -> tuple[subprocess.Popen, str, str]:
    """Launch `ferrum serve` on a free port; returns the process, base URL and start-up line."""
    command = [sys.executable, "-m", "ferrum", "serve", str(model_dir), "--port", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [*command, "--device", "cpu", "--log-level", "warning", *flags],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    assert proc.stderr is not None
    for line in proc.stderr:
        match = ADDRESS.search(line)
        if match:
            return proc, match.group(1), line
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"ferrum serve did not start (exit {proc.wait()})")


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(tiny_llama):
    proc, url, banner = start_server(tiny_llama, "--max-num-seqs", "2", "--served-model-name", "t")
    assert "serving it as 't'" in banner
    try:
        assert httpx.get(f"{url}/health").status_code == 200
        # 6 sequences of 240 tokens through 2 slots: several seconds of work
        body = {"model": "t", "prompt": "hi", "n": 6, "max_tokens": 240, "ignore_eos": True}
        body |= {"stream": True, "stream_options": {"include_usage": True}}
        events_after_signal = []
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            lines = (line for line in r.iter_lines() if line)
            assert next(lines).startswith("data: {")
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            with pytest.raises(httpx.ConnectError):  # no longer accepting
                httpx.get(f"{url}/health")
            events_after_signal = [line.removeprefix("data: ") for line in lines]
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert events_after_signal[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events_after_signal[:-1]]
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"]]
    assert sorted(f for f in finishes if f) == ["length"] * 6
    assert chunks[-1]["usage"]["completion_tokens"] == 6 * 240
    assert len(chunks) > 6  # the request was really in flight when the signal came


def test_tensor_parallel_server_answers_like_one_process_and_stops_cleanly(tiny_llama):
    from ferrum import LLM, SamplingParams

    with LLM(str(tiny_llama), device="cpu") as llm:
        params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
        expected = llm.generate(["hello world"], params)[0].outputs[0].text
    proc, url, _ = start_server(tiny_llama, "--tensor-parallel-size", "2")
    try:
        body = {"prompt": "hello world", "max_tokens": 12, "temperature": 0, "ignore_eos": True}
        reply = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["text"] == expected
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # the worker rank stopped with it
    finally:
        if proc.poll() is None:
            proc.kill()
