"""`ferrum transcribe` through Typer's test runner, on the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferrum.commands import _register, app

_register()
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _needs_model(tiny_en_ct2_dir: Path) -> None:
    """The CLI tests run the embedded default model."""


def invoke(*args: str):
    return runner.invoke(app, ["transcribe", *args, "--device", "cpu"])


def test_txt_to_stdout(jfk_path: Path) -> None:
    result = invoke(str(jfk_path))
    assert result.exit_code == 0, result.output
    assert "ask not what your country" in result.stdout.lower()


@pytest.mark.parametrize("fmt, marker", [("srt", "00:00:00,000 --> "), ("vtt", "WEBVTT")])
def test_subtitles(jfk_path: Path, fmt: str, marker: str) -> None:
    result = invoke(str(jfk_path), "-f", fmt)
    assert result.exit_code == 0, result.output
    assert marker in result.stdout


def test_json_to_file_with_alias_argument(jfk_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = invoke("whisper-tiny.en", str(jfk_path), "-f", "verbose_json", "-o", str(out))
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    assert body["language"] == "en" and body["segments"]
    assert "ask not what your country" in body["text"].lower()
    plain = invoke(str(jfk_path), "-f", "json")
    assert json.loads(plain.stdout)["text"] == body["text"]


def test_bad_file_exits_1_with_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_text("not audio")
    result = invoke(str(bad))
    assert result.exit_code == 1
    assert "error:" in result.output and "bad.mp3" in result.output
    assert "Traceback" not in result.output
