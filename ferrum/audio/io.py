"""Turn any audio (or video) file into 16 kHz mono float32 samples.

WAV and FLAC are read directly with soundfile; everything else goes through the system's
`ffmpeg` (a subprocess, so no codec libraries are linked into Python). Resampling is a windowed
sinc filter in torch, the same design as torchaudio's default (Hann window, 6 zero crossings).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ferrum.errors import AudioDecodeError

SAMPLE_RATE = 16000  # Hz: what Whisper hears
SOUNDFILE_SUFFIXES = (".wav", ".flac")  # read in-process; the rest goes through ffmpeg
LOWPASS_ZERO_CROSSINGS = 6  # sinc lobes on each side of the resampling filter
LOWPASS_ROLLOFF = 0.99  # cutoff as a fraction of the lower Nyquist frequency
FFMPEG_INSTALL_HINT = (
    "install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg)"
)


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode `path` to mono float32 samples in [-1, 1] at `sample_rate`; AudioDecodeError when
    the file is missing, empty, or not audio."""
    path = Path(path)
    if not path.is_file():
        raise AudioDecodeError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioDecodeError(f"{path}: the file is empty")
    if path.suffix.lower() in SOUNDFILE_SUFFIXES:
        decoded = _read_soundfile(path)
        if decoded is not None:
            samples, rate = decoded
            return resample(torch.from_numpy(samples), rate, sample_rate).numpy()
    return _read_ffmpeg(path, sample_rate)


def _read_soundfile(path: Path) -> tuple[np.ndarray, int] | None:
    """(mono samples, rate), or None to let ffmpeg try (a WAV codec libsndfile lacks)."""
    try:
        import soundfile
    except ImportError:
        return None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError):
        return None
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{path}: the file holds no audio samples")
    return np.ascontiguousarray(data.mean(axis=1)), int(rate)


def _read_ffmpeg(path: Path, sample_rate: int) -> np.ndarray:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioDecodeError(
            f"{path}: decoding {path.suffix or 'this'} files needs ffmpeg, which is not on PATH; "
            f"{FFMPEG_INSTALL_HINT}, or convert the file to WAV/FLAC"
        )
    command = [ffmpeg, "-nostdin", "-threads", "0", "-i", str(path), "-vn"]
    command += ["-f", "s16le", "-ac", "1", "-ar", str(sample_rate), "-"]
    proc = subprocess.run(command, capture_output=True, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"ffmpeg exited with status {proc.returncode}"
        raise AudioDecodeError(f"{path}: not a decodable audio or video file ({reason})")
    if len(proc.stdout) < 2:
        raise AudioDecodeError(f"{path}: the file holds no audio stream")
    pcm = np.frombuffer(proc.stdout, dtype="<i2", count=len(proc.stdout) // 2)
    return pcm.astype(np.float32) / 32768.0


def _sinc_kernels(orig: int, new: int) -> tuple[Tensor, int]:
    """The `new` polyphase filters (new, 1, taps) for a rate change orig → new (both reduced),
    and the left padding they need."""
    base = min(orig, new) * LOWPASS_ROLLOFF
    width = math.ceil(LOWPASS_ZERO_CROSSINGS * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx  # (new, 1, taps)
    t = (t * base).clamp(-LOWPASS_ZERO_CROSSINGS, LOWPASS_ZERO_CROSSINGS)
    window = torch.cos(t * math.pi / LOWPASS_ZERO_CROSSINGS / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (base / orig)).float(), width


def resample(audio: Tensor, orig_rate: int, new_rate: int) -> Tensor:
    """Band-limited resampling of (…, samples) audio from `orig_rate` to `new_rate`."""
    if orig_rate == new_rate:
        return audio.float()
    g = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // g, new_rate // g
    kernels, width = _sinc_kernels(orig, new)
    shape = audio.shape
    x = audio.reshape(-1, 1, shape[-1]).float()  # (B, 1, N)
    x = F.pad(x, (width, width + orig))
    y = F.conv1d(x, kernels, stride=orig)  # (B, new, N / orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # interleave the phases: (B, N * new / orig)
    target = math.ceil(new * shape[-1] / orig)
    return y[:, :target].reshape(*shape[:-1], -1)
