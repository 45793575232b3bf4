"""Write mono float samples as wav, flac, mp3 or raw pcm: whole, or chunk by chunk as they come.

wav and flac go through soundfile (libsndfile); mp3 through an `ffmpeg` process fed raw pcm on
its stdin; pcm is signed 16-bit little-endian samples, no header. To a file every format streams
(each chunk is written when it arrives); to a pipe (stdout) pcm and mp3 stream, while wav and
flac are written whole at the end, because their headers hold the length (an mp3 streamed to a
pipe lacks the header that trims the encoder's delay, so decoders give ~1,300 extra samples).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from ferrum.errors import InvalidInputError

AUDIO_FORMATS = ("wav", "flac", "mp3", "pcm")
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "pcm": "audio/pcm"}
_EXTENSIONS = {".wav": "wav", ".flac": "flac", ".mp3": "mp3", ".pcm": "pcm", ".raw": "pcm"}
PCM_FULL_SCALE = 32767  # int16 value of a sample at 1.0


def output_format(path: str | None, explicit: str | None = None) -> str:
    """The format to write: `explicit` if given, else from the extension of `path` (pcm for "-",
    stdout)."""
    if explicit:
        fmt = explicit.lower().lstrip(".")
        if fmt not in AUDIO_FORMATS:
            raise InvalidInputError(
                f"unsupported audio format {explicit!r}; use one of {', '.join(AUDIO_FORMATS)}"
            )
        return fmt
    if path is None or path == "-":
        return "pcm"
    fmt = _EXTENSIONS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InvalidInputError(
            f"cannot tell the audio format of {path!r} from its extension; name the file "
            f".wav, .flac, .mp3 or .pcm, or pass --format {'|'.join(AUDIO_FORMATS)}"
        )
    return fmt


def to_pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> signed 16-bit little-endian bytes."""
    scaled = np.clip(np.asarray(samples, np.float32), -1.0, 1.0) * PCM_FULL_SCALE
    return np.round(scaled).astype("<i2").tobytes()


def encode_audio(samples: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """The bytes of a whole file of `samples` in `fmt`."""
    buffer = io.BytesIO()
    with AudioWriter(buffer, output_format(None, fmt), sample_rate) as writer:
        writer.write(samples)
    return buffer.getvalue()


class AudioWriter:
    """Writes chunks of mono float samples to a path or a binary stream in one format.

    Use as a context manager; the file is complete once it is closed."""

    def __init__(self, target: str | Path | IO[bytes], fmt: str, sample_rate: int) -> None:
        if fmt not in AUDIO_FORMATS:
            raise InvalidInputError(f"unsupported audio format {fmt!r}")
        self.fmt = fmt
        self.sample_rate = sample_rate
        self.frames = 0  # samples written so far
        self._owned: IO[bytes] | None = None
        self._sound_file: Any = None
        self._ffmpeg: subprocess.Popen[bytes] | None = None
        self._pending: list[np.ndarray] = []  # wav/flac to a stream, written at close
        is_path = isinstance(target, (str, Path))
        if fmt == "mp3" and (is_path or _fileno(target) is not None):
            self._ffmpeg = _start_ffmpeg(sample_rate, target)  # type: ignore[arg-type]
        elif fmt in ("wav", "flac") and is_path:
            self._sound_file = _soundfile().SoundFile(
                str(target), "w", sample_rate, 1, "PCM_16", format=fmt.upper()
            )
        elif is_path:
            self._owned = open(target, "wb")  # noqa: SIM115 - closed in close()
        self._target = self._owned or target

    def write(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.frames += len(samples)
        if self._ffmpeg is not None:
            self._feed_ffmpeg(to_pcm16(samples))
        elif self._sound_file is not None:
            self._sound_file.write(np.clip(samples, -1.0, 1.0))
        elif self.fmt == "pcm":
            self._target.write(to_pcm16(samples))  # type: ignore[union-attr]
            self._target.flush()  # type: ignore[union-attr]
        else:  # a whole-file format to an in-memory stream: encoded at close
            self._pending.append(samples)

    def close(self) -> None:
        if self._ffmpeg is not None:
            self._finish_ffmpeg()
        elif self._sound_file is not None:
            self._sound_file.close()
        elif self.fmt != "pcm":
            samples = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
            self._target.write(self._encode_whole(samples))  # type: ignore[union-attr]
        if self._owned is not None:
            self._owned.close()
        elif hasattr(self._target, "flush"):
            self._target.flush()  # type: ignore[union-attr]

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _encode_whole(self, samples: np.ndarray) -> bytes:
        if self.fmt == "mp3":
            # Through a file rather than a pipe: only a seekable output gets the header that
            # tells decoders to trim the encoder's delay and padding (gapless length).
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "speech.mp3"
                process = _start_ffmpeg(self.sample_rate, path)
                _, err = process.communicate(to_pcm16(samples))
                _check_ffmpeg(process.returncode, err)
                return path.read_bytes()
        buffer = io.BytesIO()
        clipped = np.clip(samples, -1.0, 1.0)
        _soundfile().write(buffer, clipped, self.sample_rate, "PCM_16", format=self.fmt.upper())
        return buffer.getvalue()

    def _feed_ffmpeg(self, data: bytes) -> None:
        assert self._ffmpeg is not None and self._ffmpeg.stdin is not None
        try:
            self._ffmpeg.stdin.write(data)
        except BrokenPipeError:
            self._finish_ffmpeg()

    def _finish_ffmpeg(self) -> None:
        process, self._ffmpeg = self._ffmpeg, None
        assert process is not None
        _, err = process.communicate()
        _check_ffmpeg(process.returncode, err)


def _check_ffmpeg(returncode: int, err: bytes) -> None:
    if returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines() or ["(no message)"]
        raise InvalidInputError(f"ffmpeg could not encode mp3: {lines[-1]}")


def _fileno(stream: object) -> int | None:
    """The OS file descriptor behind a stream, if it has one (stdout does, BytesIO not)."""
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _start_ffmpeg(
    sample_rate: int, target: str | Path | IO[bytes] | None
) -> subprocess.Popen[bytes]:
    """ffmpeg reading s16le mono on stdin, writing mp3 to a path, to a stream's file
    descriptor, or (target None) to a pipe the caller reads."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise InvalidInputError(
            "mp3 output needs ffmpeg, which is not installed: apt-get install ffmpeg "
            "(or brew install ffmpeg), or write wav, flac or pcm instead"
        )
    command = [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    command += ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"]
    stdout: Any = subprocess.PIPE
    if isinstance(target, (str, Path)):
        command += ["-f", "mp3", str(target)]
        stdout = subprocess.DEVNULL
    else:
        command += ["-f", "mp3", "pipe:1"]
        if target is not None:
            target.flush()  # what we wrote before must come first
            stdout = _fileno(target)
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=subprocess.PIPE)


def _soundfile() -> Any:
    try:
        import soundfile
    except (ImportError, OSError) as e:
        raise InvalidInputError(
            f"wav/flac output needs the soundfile package (libsndfile): pip install soundfile ({e})"
        ) from e
    return soundfile
