"""Log-mel features against transformers' WhisperFeatureExtractor; resampling against a tone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ferrum.audio.io import SAMPLE_RATE, load_audio, resample
from ferrum.audio.mel import N_FRAMES, log_mel_spectrogram, pad_or_trim


@pytest.mark.parametrize("n_mels", [80, 128])
def test_log_mel_matches_transformers(jfk_path, n_mels: int) -> None:
    from transformers import WhisperFeatureExtractor

    audio = load_audio(jfk_path)
    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    expected = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features[0]
    ours = log_mel_spectrogram(pad_or_trim(torch.from_numpy(audio)), n_mels)
    assert ours.shape == (n_mels, N_FRAMES)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_resample_keeps_a_tone_and_length() -> None:
    rate, seconds, freq = 44100, 1.0, 440.0
    t = torch.arange(int(rate * seconds)) / rate
    tone = torch.sin(2 * math.pi * freq * t)
    out = resample(tone, rate, SAMPLE_RATE)
    assert out.shape[-1] == SAMPLE_RATE
    expected = torch.sin(2 * math.pi * freq * torch.arange(SAMPLE_RATE) / SAMPLE_RATE)
    middle = slice(200, SAMPLE_RATE - 200)  # edges see the zero padding
    assert float((out[middle] - expected[middle]).abs().max()) < 1e-2
    spectrum = np.abs(np.fft.rfft(out.numpy()))
    assert abs(int(spectrum.argmax()) - freq) <= 1  # 1 Hz bins over one second
