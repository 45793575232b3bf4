"""`ferrum bench --task tts` with a Qwen3-TTS model (the tiny fixture model): one sentence at a
time and all at once through the batching engine, the reference reported as not installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferrum.commands import _register, app
from ferrum.errors import InvalidInputError

from .test_qwen3_tts_api import write_qwen3_models

_register()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_qwen3_models(tmp_path_factory.mktemp("qwen3-bench"))


def test_bench_a_custom_voice_model(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "tts.json"
    args = ["bench", "--task", "tts", str(models["custom_voice"]), "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--num-items", "3", "--repeats", "1", "--json", out])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = {row["label"]: row for row in report["results"] + report["baseline"]}
    assert report["model"]["kind"] == "custom_voice"
    for label in ("ferrum 1 at a time", "ferrum 3 concurrent"):
        assert rows[label]["status"] == "ok"
        assert rows[label]["audio_s_per_s"] > 0
    # the same seeded sentences: the same speech whether spoken alone or together
    alone = rows["ferrum 1 at a time"]["speech_seconds"]
    assert rows["ferrum 3 concurrent"]["speech_seconds"] == pytest.approx(alone)
    assert rows["qwen-tts"]["status"] == "not installed"


def test_a_base_model_is_refused_with_a_reason(models: dict[str, Path]) -> None:
    args = ["bench", "--task", "tts", str(models["base"]), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, InvalidInputError)  # the CLI prints it as `error: …`
    assert "cloned voice" in str(result.exception)
