"""Audio written as wav, flac, mp3 and pcm decodes back to the same rate and length."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ferrum.audio.encode import AudioWriter, encode_audio, output_format, to_pcm16
from ferrum.errors import InvalidInputError

RATE = 22050
MP3_SLACK = 1152  # samples: an mp3 frame of padding the decoder may keep


def tone(seconds: float = 0.7, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def ffmpeg_decode(data: bytes) -> tuple[np.ndarray, int]:
    """mp3 bytes -> (int16 samples, sample rate) through ffmpeg and ffprobe."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", "pipe:0"]
    pcm = subprocess.run([*command, "-f", "s16le", "-"], input=data, capture_output=True).stdout
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate", "-of", "csv=p=0", "-"],
        input=data,
        capture_output=True,
        text=False,
    ).stdout
    return np.frombuffer(pcm, "<i2"), int(probe.decode().strip())


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_wav_and_flac_files_stream_in_chunks(tmp_path: Path, fmt: str) -> None:
    import soundfile

    samples = tone()
    path = tmp_path / f"out.{fmt}"
    with AudioWriter(path, fmt, RATE) as writer:
        for chunk in np.array_split(samples, 3):
            writer.write(chunk)
    decoded, rate = soundfile.read(path, dtype="float32")
    assert rate == RATE and len(decoded) == len(samples)
    assert np.abs(decoded - samples).max() < 2 / 32767


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "pcm"])
def test_encode_audio_to_bytes(fmt: str) -> None:
    samples = tone()
    data = encode_audio(samples, RATE, fmt)
    if fmt == "pcm":
        decoded = np.frombuffer(data, "<i2")
        assert len(decoded) == len(samples)
        assert np.abs(decoded / 32767 - samples).max() < 1 / 32767
    elif fmt == "mp3":
        decoded, rate = ffmpeg_decode(data)
        assert rate == RATE
        assert abs(len(decoded) - len(samples)) <= MP3_SLACK
    else:
        import soundfile

        decoded, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        assert rate == RATE and len(decoded) == len(samples)


def test_mp3_file_streams_through_ffmpeg(tmp_path: Path) -> None:
    samples = tone(1.5)
    path = tmp_path / "out.mp3"
    with AudioWriter(path, "mp3", RATE) as writer:
        for chunk in np.array_split(samples, 4):
            writer.write(chunk)
    decoded, rate = ffmpeg_decode(path.read_bytes())
    assert rate == RATE and abs(len(decoded) - len(samples)) <= MP3_SLACK
    # Loudness survives the lossy round trip.
    assert abs(np.sqrt(np.mean((decoded / 32767.0) ** 2)) - 0.5 / np.sqrt(2)) < 0.05


def test_pcm_is_signed_16_bit_little_endian() -> None:
    assert to_pcm16(np.array([0.0, 1.0, -1.0, 2.0], np.float32)) == bytes.fromhex(
        "0000ff7f0180" + "ff7f"
    )


def test_output_format() -> None:
    assert output_format("a/b.WAV") == "wav"
    assert output_format("x.flac") == "flac"
    assert output_format("x.raw") == "pcm"
    assert output_format("-") == "pcm"
    assert output_format("x.wav", "mp3") == "mp3"
    with pytest.raises(InvalidInputError, match="--format"):
        output_format("speech.ogg")
    with pytest.raises(InvalidInputError, match="unsupported audio format"):
        output_format("x.wav", "opus")


def test_missing_ffmpeg_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InvalidInputError, match="apt-get install ffmpeg"):
        AudioWriter(tmp_path / "x.mp3", "mp3", RATE)
