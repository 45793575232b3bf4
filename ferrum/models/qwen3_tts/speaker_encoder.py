"""The speaker encoder of the Qwen3-TTS Base models: an ECAPA-TDNN x-vector network over a 24 kHz
log-mel spectrogram, whose output is placed in the talker's prompt as the voice to clone.

ECAPA-TDNN (Desplanques et al., 2020): a TDNN layer, SE-Res2Net blocks whose outputs are
concatenated (multi-layer feature aggregation), attentive statistics pooling (a weighted mean and
standard deviation over time) and a final 1x1 convolution. Every convolution pads "same" by
reflection, as the reference does. Weight names are the checkpoint's `speaker_encoder.*`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferrum.models.qwen3_tts.config import SpeakerEncoderConfig

N_FFT = 1024  # samples per STFT window at 24 kHz (43 ms)
HOP_LENGTH = 256  # samples between mel frames (10.7 ms)
N_MELS = 128
MEL_FMAX = 12_000.0  # Hz: the filterbank spans 0 Hz to Nyquist
LOG_FLOOR = 1e-5  # magnitude below which the log is clamped
MAGNITUDE_EPS = 1e-9  # added under the square root of the power, as the reference does
POOLING_EPS = 1e-12  # floor of the pooled variance

# The Slaney mel scale (librosa's default): linear below 1 kHz, logarithmic above.
_MIN_LOG_HZ, _MIN_LOG_MEL, _LOGSTEP = 1000.0, 15.0, np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    linear = 3.0 * hz / 200.0
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-10) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = 200.0 * mel / 3.0
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, linear)


@lru_cache(maxsize=4)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmax: float) -> Tensor:
    """Slaney-normalised triangular filters (n_mels, n_fft // 2 + 1), as librosa.filters.mel."""
    fft_freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    mel_edges = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(fmax)), n_mels + 2)
    hz_edges = _mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, bins)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    filters = np.maximum(0.0, np.minimum(lower, upper))
    filters *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]  # equal area per filter
    return torch.from_numpy(filters.astype(np.float32))


def speaker_mel(audio: Tensor, sample_rate: int) -> Tensor:
    """(samples,) float audio at `sample_rate` (24 kHz) -> log-mel (frames, N_MELS) float32."""
    pad = (N_FFT - HOP_LENGTH) // 2
    audio = F.pad(audio.float()[None, None], (pad, pad), mode="reflect")[0]  # (1, samples + 2p)
    window = torch.hann_window(N_FFT, device=audio.device)
    spec = torch.stft(
        audio, N_FFT, HOP_LENGTH, window=window, center=False, return_complex=True
    )  # (1, bins, frames)
    magnitude = torch.sqrt(torch.view_as_real(spec).pow(2).sum(-1) + MAGNITUDE_EPS)
    filters = mel_filterbank(sample_rate, N_FFT, N_MELS, MEL_FMAX).to(audio.device)
    mel = filters @ magnitude  # (1, n_mels, frames)
    return torch.log(torch.clamp(mel, min=LOG_FLOOR))[0].T


def _conv(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Conv1d:
    return nn.Conv1d(
        in_ch, out_ch, kernel, dilation=dilation, padding="same", padding_mode="reflect"
    )


class TimeDelayNetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = _conv(in_ch, out_ch, kernel, dilation)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(x))


class Res2NetBlock(nn.Module):
    """Channels split into `scale` groups; each group after the first is convolved together
    with the previous group's output (a hierarchy of growing receptive fields)."""

    def __init__(self, channels: int, scale: int, kernel: int, dilation: int) -> None:
        super().__init__()
        width = channels // scale
        self.scale = scale
        self.blocks = nn.ModuleList(
            TimeDelayNetBlock(width, width, kernel, dilation) for _ in range(scale - 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        parts = torch.chunk(x, self.scale, dim=1)
        outputs = [parts[0]]
        for i, part in enumerate(parts[1:]):
            outputs.append(self.blocks[i](part if i == 0 else part + outputs[-1]))
        return torch.cat(outputs, dim=1)


class SqueezeExcitationBlock(nn.Module):
    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels, se_channels, 1)
        self.conv2 = _conv(se_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(x.mean(dim=2, keepdim=True)))))
        return x * gate


class SqueezeExcitationRes2NetBlock(nn.Module):
    def __init__(
        self, in_ch: int, out_ch: int, scale: int, se_channels: int, kernel: int, dilation: int
    ) -> None:
        super().__init__()
        self.tdnn1 = TimeDelayNetBlock(in_ch, out_ch, 1, 1)
        self.res2net_block = Res2NetBlock(out_ch, scale, kernel, dilation)
        self.tdnn2 = TimeDelayNetBlock(out_ch, out_ch, 1, 1)
        self.se_block = SqueezeExcitationBlock(out_ch, se_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x))))
        return y + x


def _mean_std(x: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean and standard deviation over time: x (B, C, T), weights (B, C|1, T)."""
    mean = (weights * x).sum(dim=2)
    var = (weights * (x - mean[..., None]).pow(2)).sum(dim=2)
    return mean, torch.sqrt(var.clamp(min=POOLING_EPS))


class AttentiveStatisticsPooling(nn.Module):
    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.tdnn = TimeDelayNetBlock(channels * 3, attention_channels, 1, 1)
        self.conv = _conv(attention_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, 2C, 1): attention-weighted mean and std of each channel."""
        frames = x.shape[-1]
        uniform = torch.full_like(x[:, :1], 1.0 / frames)
        mean, std = _mean_std(x, uniform)
        context = torch.cat(
            (x, mean[..., None].expand_as(x), std[..., None].expand_as(x)), dim=1
        )  # (B, 3C, T): each frame sees the utterance's global statistics
        attention = torch.softmax(self.conv(torch.tanh(self.tdnn(context))), dim=2)
        mean, std = _mean_std(x, attention)
        return torch.cat((mean, std), dim=1)[..., None]


class SpeakerEncoder(nn.Module):
    def __init__(self, config: SpeakerEncoderConfig) -> None:
        super().__init__()
        ch, kernels, dilations = config.enc_channels, config.enc_kernel_sizes, config.enc_dilations
        self.blocks = nn.ModuleList(
            [TimeDelayNetBlock(config.mel_dim, ch[0], kernels[0], dilations[0])]
        )
        for i in range(1, len(ch) - 1):
            self.blocks.append(
                SqueezeExcitationRes2NetBlock(
                    ch[i - 1],
                    ch[i],
                    config.enc_res2net_scale,
                    config.enc_se_channels,
                    kernels[i],
                    dilations[i],
                )
            )
        self.mfa = TimeDelayNetBlock(ch[-1], ch[-1], kernels[-1], dilations[-1])
        self.asp = AttentiveStatisticsPooling(ch[-1], config.enc_attention_channels)
        self.fc = _conv(ch[-1] * 2, config.enc_dim, 1)

    def forward(self, mel: Tensor) -> Tensor:
        """mel (B, frames, mel_dim) -> speaker embeddings (B, enc_dim)."""
        x = mel.transpose(1, 2)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        x = self.mfa(torch.cat(outputs[1:], dim=1))  # multi-layer feature aggregation
        return self.fc(self.asp(x))[..., 0]
