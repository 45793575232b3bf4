"""Encode speech chunk by chunk for a streamed HTTP response: bytes out as each sentence comes in.

pcm is the raw int16 samples. wav is one header that declares an unknown length (0xFFFFFFFF, as
streaming servers send and decoders accept: they read to the end of the stream) followed by the
samples. mp3 and flac go through one `ffmpeg` process per response, fed the samples on stdin; a
reader thread collects what it writes, so neither pipe can fill and stall the other. The whole
stream is one valid file of its format: concatenating the chunks gives it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import threading
from typing import Protocol

import numpy as np

from ferrum.audio.encode import to_pcm16
from ferrum.errors import InvalidInputError

STREAM_FORMATS = ("wav", "flac", "mp3", "pcm")
UNKNOWN_LENGTH = 0xFFFFFFFF  # RIFF and data chunk size of a wav whose length is not known yet
PCM_BITS = 16
READ_BYTES = 1 << 16  # read from ffmpeg's stdout at a time
FFMPEG_EXIT_TIMEOUT_S = 30.0


class ChunkEncoder(Protocol):
    def feed(self, samples: np.ndarray) -> bytes:
        """Encode more samples; returns the bytes ready so far (possibly none)."""
        ...

    def finish(self) -> bytes:
        """The rest of the stream, once all samples were fed."""
        ...

    def close(self) -> None:
        """Release resources (also when the stream was abandoned part way)."""
        ...


def chunk_encoder(fmt: str, sample_rate: int) -> ChunkEncoder:
    if fmt == "pcm":
        return PcmEncoder()
    if fmt == "wav":
        return WavStreamEncoder(sample_rate)
    if fmt in ("mp3", "flac"):
        return FfmpegEncoder(fmt, sample_rate)
    raise InvalidInputError(f"cannot stream {fmt!r} audio; use one of {', '.join(STREAM_FORMATS)}")


class PcmEncoder:
    def feed(self, samples: np.ndarray) -> bytes:
        return to_pcm16(samples)

    def finish(self) -> bytes:
        return b""

    def close(self) -> None:
        pass


class WavStreamEncoder(PcmEncoder):
    def __init__(self, sample_rate: int) -> None:
        self.header: bytes | None = wav_stream_header(sample_rate)

    def feed(self, samples: np.ndarray) -> bytes:
        header, self.header = self.header or b"", None
        return header + to_pcm16(samples)

    def finish(self) -> bytes:
        return self.header or b""  # an empty utterance is still a (header-only) wav


def wav_stream_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 44-byte PCM wav header with the lengths left unknown."""
    block_align = channels * PCM_BITS // 8
    return (
        b"RIFF"
        + struct.pack("<I", UNKNOWN_LENGTH)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align,
                      block_align, PCM_BITS)
        + b"data"
        + struct.pack("<I", UNKNOWN_LENGTH)
    )  # fmt: skip


class FfmpegEncoder:
    """mp3 or flac through one ffmpeg process."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise InvalidInputError(
                f"{fmt} output needs ffmpeg, which is not installed on the server; "
                "ask for wav or pcm instead"
            )
        command = [exe, "-hide_banner", "-loglevel", "error", "-nostdin"]
        command += ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"]
        command += ["-flush_packets", "1", "-f", fmt, "pipe:1"]
        self.fmt = fmt
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._out: list[bytes] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="ffmpeg-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while data := self.process.stdout.read1(READ_BYTES):  # type: ignore[attr-defined]
            with self._lock:
                self._out.append(data)

    def _take(self) -> bytes:
        with self._lock:
            data, self._out = b"".join(self._out), []
        return data

    def feed(self, samples: np.ndarray) -> bytes:
        assert self.process.stdin is not None
        self.process.stdin.write(to_pcm16(samples))
        self.process.stdin.flush()
        return self._take()

    def finish(self) -> bytes:
        assert self.process.stdin is not None and self.process.stderr is not None
        self.process.stdin.close()
        self._reader.join(FFMPEG_EXIT_TIMEOUT_S)
        returncode = self.process.wait(FFMPEG_EXIT_TIMEOUT_S)
        if returncode != 0:
            lines = self.process.stderr.read().decode("utf-8", "replace").strip().splitlines()
            raise InvalidInputError(f"ffmpeg could not encode {self.fmt}: {lines[-1:] or '?'}")
        return self._take()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(FFMPEG_EXIT_TIMEOUT_S)  # it stops at the killed process's EOF
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()
