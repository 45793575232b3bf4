"""Whisper's log-mel spectrogram in torch, equal to openai/whisper and transformers'
`WhisperFeatureExtractor`: a 25 ms Hann-window STFT every 10 ms, a Slaney mel filterbank,
log10, clamped to 8 (×10 dB) below the maximum, scaled to roughly [-1, 1]."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ferrum.audio.io import SAMPLE_RATE

N_FFT = 400  # samples per STFT window (25 ms)
HOP_LENGTH = 160  # samples between frames (10 ms)
CHUNK_LENGTH = 30  # seconds of audio in one model window
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480,000 samples in a window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3,000 mel frames in a window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100 mel frames a second (10 ms each)
LOG_FLOOR = 1e-10  # power below which the log is clamped
DYNAMIC_RANGE = 8.0  # log10 units kept below the maximum (80 dB)

# The Slaney mel scale: linear below 1 kHz, logarithmic above.
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = 15.0
_LOGSTEP = 27.0 / np.log(6.4)


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    mels = 3.0 * freq / 200.0
    log_region = freq >= _MIN_LOG_HZ
    mels[log_region] = _MIN_LOG_MEL + np.log(freq[log_region] / _MIN_LOG_HZ) * _LOGSTEP
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freq = 200.0 * mels / 3.0
    log_region = mels >= _MIN_LOG_MEL
    freq[log_region] = _MIN_LOG_HZ * np.exp((mels[log_region] - _MIN_LOG_MEL) / _LOGSTEP)
    return freq


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> Tensor:
    """Slaney-normalized triangular filters over the STFT bins, (n_mels, N_FFT // 2 + 1)."""
    n_bins = N_FFT // 2 + 1
    mel_edges = np.linspace(
        _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], n_mels + 2
    )
    hz_edges = _mel_to_hz(mel_edges)
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, n_bins)
    slopes = hz_edges[None, :] - fft_freqs[:, None]  # (bins, n_mels + 2)
    widths = np.diff(hz_edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))  # (bins, n_mels)
    filters *= 2.0 / (hz_edges[2 : n_mels + 2] - hz_edges[:n_mels])  # equal area per filter
    return torch.from_numpy(filters.T.astype(np.float32))


def log_mel_spectrogram(audio: Tensor, n_mels: int = 80, padding: int = 0) -> Tensor:
    """(…, samples) float audio at 16 kHz → (…, n_mels, frames) log-mel; `padding` zeros are
    appended first (a window's worth, so the last window of long audio is complete)."""
    if padding > 0:
        audio = F.pad(audio, (0, padding))
    window = torch.hann_window(N_FFT, device=audio.device)
    batch_shape = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1]).float()
    stft = torch.stft(flat, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (B, bins, frames): the last frame is dropped
    mel = mel_filters(n_mels).to(audio.device) @ power  # (B, n_mels, frames)
    log_spec = torch.clamp(mel, min=LOG_FLOOR).log10()
    peak = log_spec.amax(dim=(-2, -1), keepdim=True)
    log_spec = torch.maximum(log_spec, peak - DYNAMIC_RANGE)
    log_spec = (log_spec + 4.0) / 4.0
    return log_spec.reshape(*batch_shape, n_mels, log_spec.shape[-1])


def pad_or_trim(array: Tensor, length: int = N_SAMPLES, dim: int = -1) -> Tensor:
    """Zero-pad or cut `array` along `dim` to exactly `length`."""
    size = array.shape[dim]
    if size > length:
        return array.narrow(dim, 0, length)
    if size < length:
        pad = [0, 0] * (array.ndim - 1 - (dim % array.ndim)) + [0, length - size]
        return F.pad(array, pad)
    return array
