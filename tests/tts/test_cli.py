"""`ferrum tts` end to end (with the tiny voice, so it runs in seconds)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ferrum.commands import _register, app, main

from .conftest import TINY_SAMPLE_RATE

_register()  # with every command added, `tts` is a subcommand as in the real CLI
runner = CliRunner()


def test_writes_a_wav_file(tiny_voice: Path, espeak: None, tmp_path: Path) -> None:
    import soundfile

    out = tmp_path / "speech.wav"
    result = runner.invoke(app, ["tts", "Hello there. Bye!", "-o", str(out), "-m", str(tiny_voice)])
    assert result.exit_code == 0, result.output
    samples, rate = soundfile.read(out)
    assert rate == TINY_SAMPLE_RATE and len(samples) > 0
    assert "wrote" in result.output


def test_stream_of_stdin_text_to_flac(tiny_voice: Path, espeak: None, tmp_path: Path) -> None:
    import soundfile

    out = tmp_path / "speech.flac"
    args = ["tts", "-o", str(out), "-m", str(tiny_voice), "--stream", "--seed", "1"]
    streamed = runner.invoke(app, args, input="First sentence. Second one!\n")
    assert streamed.exit_code == 0, streamed.output
    whole = tmp_path / "whole.flac"
    args = ["tts", "First sentence. Second one!", "-o", str(whole), "-m", str(tiny_voice)]
    assert runner.invoke(app, [*args, "--seed", "1"]).exit_code == 0
    np.testing.assert_array_equal(soundfile.read(out)[0], soundfile.read(whole)[0])


def test_raw_pcm_to_stdout(tiny_voice: Path, espeak: None) -> None:
    result = runner.invoke(app, ["tts", "Hi.", "-o", "-", "-m", str(tiny_voice), "--seed", "0"])
    assert result.exit_code == 0
    pcm = result.stdout_bytes
    assert len(pcm) > 0 and len(pcm) % 2 == 0 and not pcm.startswith(b"RIFF")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tts", "Hi.", "-o", "x.ogg"], "cannot tell the audio format"),
        (["tts", "Hi.", "-o", "x.wav", "--format", "opus"], "unsupported audio format"),
        (["tts", "Hi.", "-o", "x.wav", "-m", "/no/such/voice.onnx"], "unknown voice"),
        (["tts", "Hi.", "-o", "x.wav", "--speed", "0"], "speed must be"),
        (["tts", "   ", "-o", "x.wav"], "nothing to say"),
        (["tts", "Hi."], "-o FILE"),
    ],
)
def test_errors_exit_1_with_a_message(
    tiny_voice: Path,
    espeak: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if "-m" not in args:
        args = [*args, "-m", str(tiny_voice)]
    monkeypatch.setattr(sys, "argv", ["ferrum", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "x.wav").exists()
