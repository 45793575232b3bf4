"""VITS, the text-to-speech model of Piper voices, for inference.

Piper's `SynthesizerTrn` at inference is four networks run in order:
  enc_p  text encoder: phoneme ids -> hidden states and a prior (mean, log-scale) per phoneme
  dp     stochastic duration predictor: hidden states + noise -> log duration per phoneme
  flow   residual coupling flow, run backwards: prior sample, each phoneme repeated for its
         duration in frames -> latent frames
  dec    HiFi-GAN generator: latent frames -> waveform (hop = product of the upsample rates)

Module and parameter names follow Piper's PyTorch code, so an exported voice's tensors load by
name. Only what inference runs is built: no posterior encoder, no training-only duration flows.
One utterance at a time (batch 1, no padding), which is how Piper voices speak: sentence by
sentence. Batch 1 lets every mask of the training code go, since all of them would be ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.1  # HiFi-GAN's leaky ReLU slope inside the generator
LAYER_NORM_EPS = 1e-5
SPLINE_MIN_BIN = 1e-3  # rational-quadratic spline: smallest bin width/height, and derivative
SPLINE_TAIL_BOUND = 5.0  # the spline is the identity outside [-5, 5]


@dataclass(frozen=True)
class VitsConfig:
    """Hyperparameters of a VITS voice (defaults: Piper's "medium" quality)."""

    n_vocab: int = 256  # phoneme ids
    hidden_channels: int = 192
    inter_channels: int = 192  # latent channels between the flow and the decoder
    filter_channels: int = 768  # text encoder feed-forward width
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3  # text encoder feed-forward kernel
    window_size: int = 4  # relative attention reaches this many phonemes either side
    dp_filter_channels: int = 192
    dp_kernel_size: int = 3
    dp_n_flows: int = 4
    dp_num_bins: int = 10
    flow_n_flows: int = 4
    flow_kernel_size: int = 5
    flow_n_layers: int = 4
    flow_dilation_rate: int = 1
    resblock: str = "2"  # "1": two convs per dilation; "2": one
    resblock_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 2), (2, 6), (3, 12))
    upsample_rates: tuple[int, ...] = (8, 8, 4)
    upsample_initial_channel: int = 256
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8)
    n_speakers: int = 1
    gin_channels: int = 0  # speaker embedding width (0: single speaker)

    @property
    def hop_length(self) -> int:
        """Waveform samples per latent frame."""
        return math.prod(self.upsample_rates)


def _lrelu(x: torch.Tensor, slope: float = LRELU_SLOPE) -> torch.Tensor:
    return F.leaky_relu(x, slope)


class Conv1d(nn.Conv1d):
    """A Conv1d that runs as a channels-last 2-D convolution (kernel 1 x k).

    PyTorch's own 1-D convolution on CPU makes its input contiguous (C, T) and has oneDNN reorder
    it for every call; as a (1, C, 1, T) channels-last 2-D convolution the same data is read in
    place: the HiFi-GAN decoder ran 1.7x faster (idle Xeon, 2 threads). Outputs are (B, C, T)
    tensors laid out time-major (strides (C*T, 1, C)); elementwise ops keep that layout, so the next
    convolution reads it without a copy. Parameters keep nn.Conv1d's names and shapes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        y = F.conv2d(
            _channels_last(x),
            self.weight.unsqueeze(2),
            self.bias,
            (1, self.stride[0]),
            (0, self.padding[0]),  # type: ignore[index]
            (1, self.dilation[0]),
            self.groups,
        )
        return y.squeeze(2)


class ConvTranspose1d(nn.ConvTranspose1d):
    """A ConvTranspose1d run as a channels-last 2-D transposed convolution (see Conv1d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = F.conv_transpose2d(
            _channels_last(x),
            self.weight.unsqueeze(2),
            self.bias,
            (1, self.stride[0]),
            (0, self.padding[0]),  # type: ignore[index]
            (0, self.output_padding[0]),
            self.groups,
            (1, self.dilation[0]),
        )
        return y.squeeze(2)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C, 1, T) channels-last; free when x is already time-major."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _cat_channels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torch.cat along channels that keeps the time-major layout."""
    return torch.cat([a.transpose(1, 2), b.transpose(1, 2)], dim=2).transpose(1, 2)


class LayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, T) tensors, with VITS's gamma/beta names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        y = F.layer_norm(x.transpose(1, -1), x.shape[1:2], self.gamma, self.beta, LAYER_NORM_EPS)
        return y.transpose(1, -1)


class RelativeAttention(nn.Module):
    """Multi-head self-attention with learned relative-position keys and values (window ±w)."""

    def __init__(self, channels: int, n_heads: int, window_size: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.k_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = Conv1d(channels, channels, 1)
        self.conv_k = Conv1d(channels, channels, 1)
        self.conv_v = Conv1d(channels, channels, 1)
        self.conv_o = Conv1d(channels, channels, 1)
        span = 2 * window_size + 1
        self.emb_rel_k = nn.Parameter(torch.zeros(1, span, self.k_channels))
        self.emb_rel_v = nn.Parameter(torch.zeros(1, span, self.k_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, C, T)
        _, c, t = x.shape
        q = self._heads(self.conv_q(x)) / math.sqrt(self.k_channels)  # (H, T, D)
        k = self._heads(self.conv_k(x))
        v = self._heads(self.conv_v(x))
        rel_k = self._relative_embeddings(self.emb_rel_k, t)  # (1, 2T-1, D)
        scores = q @ k.transpose(1, 2)  # (H, T, T)
        scores = scores + _relative_to_absolute(q @ rel_k.transpose(1, 2))
        p = scores.softmax(dim=-1)
        rel_v = self._relative_embeddings(self.emb_rel_v, t)
        out = p @ v + _absolute_to_relative(p) @ rel_v  # (H, T, D)
        return self.conv_o(out.transpose(0, 1).reshape(t, c).T[None])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, T) -> (H, T, D)."""
        return x[0].T.reshape(x.shape[2], self.n_heads, self.k_channels).transpose(0, 1)

    def _relative_embeddings(self, emb: torch.Tensor, length: int) -> torch.Tensor:
        """The embeddings of offsets -(T-1)..T-1, zero beyond the window."""
        pad = max(length - (self.window_size + 1), 0)
        start = max((self.window_size + 1) - length, 0)
        if pad > 0:
            emb = F.pad(emb, (0, 0, pad, pad))
        return emb[:, start : start + 2 * length - 1]


def _relative_to_absolute(x: torch.Tensor) -> torch.Tensor:
    """(H, T, 2T-1) logits indexed by offset -> (H, T, T) indexed by key position."""
    h, t, _ = x.shape
    x = F.pad(x, (0, 1)).reshape(h, 2 * t * t)
    x = F.pad(x, (0, t - 1)).view(h, t + 1, 2 * t - 1)
    return x[:, :t, t - 1 :]


def _absolute_to_relative(x: torch.Tensor) -> torch.Tensor:
    """(H, T, T) weights indexed by key position -> (H, T, 2T-1) indexed by offset."""
    h, t, _ = x.shape
    x = F.pad(x, (0, t - 1)).reshape(h, t * (2 * t - 1))
    x = F.pad(x, (t, 0)).view(h, t, 2 * t)
    return x[:, :, 1:]


class FeedForward(nn.Module):
    """Two 'same'-padded convolutions with a ReLU between them."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv_1 = Conv1d(channels, filter_channels, kernel_size, padding=kernel_size // 2)
        self.conv_2 = Conv1d(filter_channels, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_2(torch.relu(self.conv_1(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        h = cfg.hidden_channels
        self.attn_layers = nn.ModuleList(
            RelativeAttention(h, cfg.n_heads, cfg.window_size) for _ in range(cfg.n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(LayerNorm(h) for _ in range(cfg.n_layers))
        self.ffn_layers = nn.ModuleList(
            FeedForward(h, cfg.filter_channels, cfg.kernel_size) for _ in range(cfg.n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(LayerNorm(h) for _ in range(cfg.n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, H, T)
        for attn, norm1, ffn, norm2 in zip(
            self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2
        ):
            x = norm1(x + attn(x))
            x = norm2(x + ffn(x))
        return x


class TextEncoder(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.hidden_channels = cfg.hidden_channels
        self.emb = nn.Embedding(cfg.n_vocab, cfg.hidden_channels)
        self.encoder = TransformerEncoder(cfg)
        self.proj = Conv1d(cfg.hidden_channels, 2 * cfg.inter_channels, 1)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.emb(ids[None]) * math.sqrt(self.hidden_channels)  # (1, T, H)
        x = self.encoder(x.transpose(1, 2))  # (1, H, T)
        m, logs = self.proj(x).chunk(2, dim=1)  # (1, I, T) each
        return x, m, logs


class DDSConv(nn.Module):
    """Dilated depth-separable convolutions (dilation kernel_size**i), each with a residual."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int) -> None:
        super().__init__()
        self.convs_sep = nn.ModuleList()
        self.convs_1x1 = nn.ModuleList()
        for i in range(n_layers):
            dilation = kernel_size**i
            padding = (kernel_size * dilation - dilation) // 2
            self.convs_sep.append(
                Conv1d(
                    channels,
                    channels,
                    kernel_size,
                    groups=channels,
                    dilation=dilation,
                    padding=padding,
                )
            )
            self.convs_1x1.append(Conv1d(channels, channels, 1))
        self.norms_1 = nn.ModuleList(LayerNorm(channels) for _ in range(n_layers))
        self.norms_2 = nn.ModuleList(LayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        if g is not None:
            x = x + g
        for sep, norm1, conv, norm2 in zip(
            self.convs_sep, self.norms_1, self.convs_1x1, self.norms_2
        ):
            y = F.gelu(norm1(sep(x)))
            x = x + F.gelu(norm2(conv(y)))
        return x


class ElementwiseAffine(nn.Module):
    """x -> x * exp(logs) + m per channel; stored as its inverse scale, which is all inference
    uses (and what an ONNX export keeps)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(channels, 1))
        self.inverse_scale = nn.Parameter(torch.ones(channels, 1))  # exp(-logs)

    def reverse(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return (x - self.m) * self.inverse_scale


class Flip(nn.Module):
    def reverse(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        return torch.flip(x, [1])


class ConvFlow(nn.Module):
    """Neural spline flow: one half of the channels predicts a rational-quadratic spline that
    transforms the other half."""

    def __init__(self, cfg: VitsConfig, n_layers: int = 3) -> None:
        super().__init__()
        self.num_bins = cfg.dp_num_bins
        self.filter_channels = cfg.dp_filter_channels
        self.pre = Conv1d(1, cfg.dp_filter_channels, 1)
        self.convs = DDSConv(cfg.dp_filter_channels, cfg.dp_kernel_size, n_layers)
        self.proj = Conv1d(cfg.dp_filter_channels, 3 * cfg.dp_num_bins - 1, 1)

    def reverse(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x0, x1 = x.chunk(2, dim=1)  # (1, 1, T) each
        h = self.proj(self.convs(self.pre(x0), g))  # (1, 3K-1, T)
        h = h.permute(0, 2, 1)  # (1, T, 3K-1)
        scale = math.sqrt(self.filter_channels)
        widths = h[..., : self.num_bins] / scale
        heights = h[..., self.num_bins : 2 * self.num_bins] / scale
        derivatives = h[..., 2 * self.num_bins :]
        x1 = inverse_rq_spline(x1[:, 0], widths, heights, derivatives)[:, None]
        return _cat_channels(x0, x1)


def inverse_rq_spline(
    y: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    bound: float = SPLINE_TAIL_BOUND,
    min_bin: float = SPLINE_MIN_BIN,
) -> torch.Tensor:
    """Invert a monotonic rational-quadratic spline on [-bound, bound], identity outside
    (Durkan et al. 2019). y: (...,); widths, heights: (..., K) unnormalized; derivatives:
    (..., K-1) unnormalized at the inner knots."""
    num_bins = widths.shape[-1]
    edge = math.log(math.exp(1 - min_bin) - 1)  # softplus(edge) + min_bin == 1: linear tails
    derivatives = F.pad(derivatives, (1, 1), value=edge)
    derivatives = min_bin + F.softplus(derivatives)  # (..., K+1)
    cumwidths, widths = _knots(widths, num_bins, bound, min_bin)
    cumheights, heights = _knots(heights, num_bins, bound, min_bin)

    inside = (y >= -bound) & (y <= bound)
    yc = y.clamp(-bound, bound)
    edges = cumheights.clone()
    edges[..., -1] += 1e-6  # so that y == bound lands in the last bin
    idx = ((yc[..., None] >= edges).sum(dim=-1) - 1).clamp(0, num_bins - 1)[..., None]

    def pick(t: torch.Tensor) -> torch.Tensor:
        return t.gather(-1, idx)[..., 0]

    x0, w, y0, h = pick(cumwidths), pick(widths), pick(cumheights), pick(heights)
    delta = h / w
    d0 = pick(derivatives[..., :-1])
    d1 = pick(derivatives[..., 1:])
    dy = yc - y0
    a = dy * (d0 + d1 - 2 * delta) + h * (delta - d0)
    b = h * d0 - dy * (d0 + d1 - 2 * delta)
    c = -delta * dy
    root = (2 * c) / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))
    return torch.where(inside, root * w + x0, y)


def _knots(
    unnormalized: torch.Tensor, num_bins: int, bound: float, min_bin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bin sizes (softmax, floored at min_bin) -> (knots (..., K+1), bin sizes (..., K))."""
    sizes = min_bin + (1 - min_bin * num_bins) * unnormalized.softmax(dim=-1)
    cum = F.pad(sizes.cumsum(dim=-1), (1, 0))
    cum = 2 * bound * cum - bound
    cum[..., 0] = -bound
    cum[..., -1] = bound
    return cum, cum[..., 1:] - cum[..., :-1]


class StochasticDurationPredictor(nn.Module):
    """Hidden states + noise -> log duration (in frames) per phoneme, through flows run backwards.

    `flows` keeps training's indices so tensor names match: 0 is the affine flow, odd indices
    are spline flows, even ones flips; flow 1 is never used at inference and is not built."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        fc = cfg.dp_filter_channels
        self.pre = Conv1d(cfg.hidden_channels, fc, 1)
        self.convs = DDSConv(fc, cfg.dp_kernel_size, 3)
        self.proj = Conv1d(fc, fc, 1)
        flows: list[nn.Module] = [ElementwiseAffine(2), nn.Identity()]
        for _ in range(1, cfg.dp_n_flows):
            flows += [Flip(), ConvFlow(cfg)]
        flows.append(Flip())
        self.flows = nn.ModuleList(flows)
        self.cond = Conv1d(cfg.gin_channels, fc, 1) if cfg.gin_channels else None

    def forward(self, x: torch.Tensor, noise: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        """x: (1, H, T) encoder states; noise: (1, 2, T) -> log durations (1, 1, T)."""
        x = self.pre(x)
        if self.cond is not None and g is not None:
            x = x + self.cond(g)
        x = self.proj(self.convs(x))
        z = noise
        for i in reversed(range(len(self.flows))):
            if i != 1:
                z = self.flows[i].reverse(z, x)
        return z[:, :1]


class WaveNet(nn.Module):
    """Non-causal WaveNet with gated tanh-sigmoid units and skip connections."""

    def __init__(
        self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int
    ) -> None:
        super().__init__()
        self.hidden = hidden
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                Conv1d(hidden, 2 * hidden, kernel_size, dilation=dilation, padding=padding)
            )
            out = 2 * hidden if i < n_layers - 1 else hidden
            self.res_skip_layers.append(Conv1d(hidden, out, 1))
        self.cond_layer = Conv1d(gin_channels, 2 * hidden * n_layers, 1) if gin_channels else None

    def forward(self, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        output = torch.zeros_like(x)
        cond = self.cond_layer(g) if self.cond_layer is not None and g is not None else None
        last = len(self.in_layers) - 1
        for i, (conv, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            h = conv(x)  # (1, 2H, F)
            if cond is not None:
                h = h + cond[:, 2 * self.hidden * i : 2 * self.hidden * (i + 1)]
            acts = torch.tanh(h[:, : self.hidden]) * torch.sigmoid(h[:, self.hidden :])
            rs = res_skip(acts)
            if i < last:
                x = x + rs[:, : self.hidden]
                output = output + rs[:, self.hidden :]
            else:
                output = output + rs
        return output


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling: the first half of the channels shifts the second half."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        half = cfg.inter_channels // 2
        self.pre = Conv1d(half, cfg.hidden_channels, 1)
        self.enc = WaveNet(
            cfg.hidden_channels,
            cfg.flow_kernel_size,
            cfg.flow_dilation_rate,
            cfg.flow_n_layers,
            cfg.gin_channels,
        )
        self.post = Conv1d(cfg.hidden_channels, half, 1)

    def reverse(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x0, x1 = x.chunk(2, dim=1)
        m = self.post(self.enc(self.pre(x0), g))
        return _cat_channels(x0, x1 - m)


class ResidualCouplingBlock(nn.Module):
    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        flows: list[nn.Module] = []
        for _ in range(cfg.flow_n_flows):
            flows += [ResidualCouplingLayer(cfg), Flip()]
        self.flows = nn.ModuleList(flows)

    def reverse(self, x: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        for flow in reversed(self.flows):
            x = flow.reverse(x, g)
        return x


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_same_conv(channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(_same_conv(channels, kernel_size, 1) for _ in dilations)

    def forward(self, x: torch.Tensor, x_act: torch.Tensor) -> torch.Tensor:
        """x_act is _lrelu(x), computed once for all blocks that share x."""
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(_lrelu(c1(x_act if i == 0 else _lrelu(x))))
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_same_conv(channels, kernel_size, d) for d in dilations)

    def forward(self, x: torch.Tensor, x_act: torch.Tensor) -> torch.Tensor:
        """x_act is _lrelu(x), computed once for all blocks that share x."""
        for i, conv in enumerate(self.convs):
            x = x + conv(x_act if i == 0 else _lrelu(x))
        return x


def _same_conv(channels: int, kernel_size: int, dilation: int) -> Conv1d:
    padding = (kernel_size * dilation - dilation) // 2
    return Conv1d(channels, channels, kernel_size, dilation=dilation, padding=padding)


class Generator(nn.Module):
    """HiFi-GAN: transposed convolutions upsample latent frames to samples; after each, the mean
    of multi-receptive-field residual blocks."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        ch = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = Conv1d(cfg.inter_channels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        for u, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
            self.ups.append(ConvTranspose1d(ch, ch // 2, k, u, padding=(k - u) // 2))
            ch //= 2
            for kr, dr in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(block(ch, kr, dr))
        self.conv_post = Conv1d(ch, 1, 7, padding=3, bias=False)
        self.cond = (
            Conv1d(cfg.gin_channels, cfg.upsample_initial_channel, 1) if cfg.gin_channels else None
        )

    def forward(self, z: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
        x = self.conv_pre(z)  # (1, C, F)
        if self.cond is not None and g is not None:
            x = x + self.cond(g)
        n = self.num_kernels
        for i, up in enumerate(self.ups):
            x = up(_lrelu(x))  # (1, C/2, F * u)
            x_act = _lrelu(x)
            blocks = self.resblocks[i * n : (i + 1) * n]
            xs = blocks[0](x, x_act)
            for block in blocks[1:]:
                xs += block(x, x_act)
            x = xs.mul_(1 / n)
        # The last activation uses PyTorch's default slope (0.01), as HiFi-GAN does.
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # (1, 1, S)


class Vits(nn.Module):
    """A Piper voice: phoneme ids -> waveform in [-1, 1]."""

    def __init__(self, cfg: VitsConfig) -> None:
        super().__init__()
        self.config = cfg
        self.enc_p = TextEncoder(cfg)
        self.dp = StochasticDurationPredictor(cfg)
        self.flow = ResidualCouplingBlock(cfg)
        self.dec = Generator(cfg)
        self.emb_g = nn.Embedding(cfg.n_speakers, cfg.gin_channels) if cfg.n_speakers > 1 else None

    def speaker_embedding(self, speaker_id: int | None) -> torch.Tensor | None:
        """(1, G, 1) conditioning for a multi-speaker voice (speaker 0 by default), else None."""
        if self.emb_g is None:
            return None
        sid = torch.tensor([speaker_id or 0], device=self.emb_g.weight.device)
        return self.emb_g(sid)[..., None]

    def durations(
        self,
        x: torch.Tensor,
        g: torch.Tensor | None,
        noise_w: float,
        length_scale: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """Frames per phoneme (T,) from the encoder's hidden states x (1, H, T)."""
        noise = torch.randn(1, 2, x.shape[2], generator=generator, device=x.device) * noise_w
        logw = self.dp(x, noise.to(x.dtype), g)  # (1, 1, T)
        return torch.ceil(torch.exp(logw) * length_scale)[0, 0].long()

    def forward(
        self,
        ids: torch.Tensor,
        *,
        noise_scale: float,
        length_scale: float,
        noise_w: float,
        speaker_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """ids: (T,) phoneme ids -> waveform (S,), S = hop * total frames (at least one)."""
        g = self.speaker_embedding(speaker_id)
        x, m, logs = self.enc_p(ids)
        frames = self.durations(x, g, noise_w, length_scale, generator)
        if int(frames.sum()) == 0:
            frames[-1] = 1  # as training's clamp_min(1): never an empty utterance
        m = _repeat_frames(m, frames)  # (1, I, F)
        logs = _repeat_frames(logs, frames)
        noise = torch.randn(m.shape, generator=generator, device=m.device).to(m.dtype)
        z = self.flow.reverse(m + noise * torch.exp(logs) * noise_scale, g)
        return self.dec(z, g)[0, 0]


def _repeat_frames(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(1, C, T) -> (1, C, F): phoneme t repeated frames[t] times, time-major in memory."""
    return torch.repeat_interleave(x[0].T, frames, dim=0).T[None]


def piper_onnx_name(name: str) -> str | None:
    """Where a tensor of a Piper ONNX export goes in `Vits` (None: a graph constant to skip)."""
    if name == "/dp/flows.0/Exp_output_0":  # exp(-logs) of the affine flow, folded at export
        return "dp.flows.0.inverse_scale"
    if name.split(".", 1)[0] in ("enc_p", "dp", "flow", "dec", "emb_g"):
        return name
    return None


def config_from_piper_weights(
    shapes: Mapping[str, tuple[int, ...]],
    attributes: Mapping[str, Mapping[str, Any]],
    n_speakers: int,
) -> VitsConfig:
    """Read a voice's hyperparameters off its tensor shapes and convolution attributes."""

    def count(prefix: str) -> int:
        return sum(1 for n in shapes if n.startswith(prefix) and n.endswith(".weight"))

    def attr(name: str, key: str) -> int:
        return int(attributes.get(name, {}).get(key, [1])[0])

    n_vocab, hidden = shapes["enc_p.emb.weight"]
    _, span, k_channels = shapes["enc_p.encoder.attn_layers.0.emb_rel_k"]
    filter_channels, _, kernel_size = shapes["enc_p.encoder.ffn_layers.0.conv_1.weight"]
    n_ups = count("dec.ups.")
    n_res = len({n.split(".")[2] for n in shapes if n.startswith("dec.resblocks.")}) // n_ups
    resblock = "1" if "dec.resblocks.0.convs1.0.weight" in shapes else "2"
    conv_names = ["convs1"] if resblock == "1" else ["convs"]
    res_kernels, res_dilations = [], []
    for j in range(n_res):
        prefix = f"dec.resblocks.{j}.{conv_names[0]}."
        n_convs = count(prefix)
        res_kernels.append(shapes[prefix + "0.weight"][2])
        res_dilations.append(
            tuple(attr(f"{prefix}{i}.weight", "dilations") for i in range(n_convs))
        )
    ups = [f"dec.ups.{i}.weight" for i in range(n_ups)]
    dp_flows = [k for k in shapes if k.startswith("dp.flows.") and k.endswith(".proj.weight")]
    wn = "flow.flows.0.enc.in_layers."
    return VitsConfig(
        n_vocab=n_vocab,
        hidden_channels=hidden,
        inter_channels=shapes["enc_p.proj.weight"][0] // 2,
        filter_channels=filter_channels,
        n_heads=hidden // k_channels,
        n_layers=count("enc_p.encoder.attn_layers.") // 4,
        kernel_size=kernel_size,
        window_size=(span - 1) // 2,
        dp_filter_channels=shapes["dp.pre.weight"][0],
        dp_kernel_size=shapes["dp.convs.convs_sep.0.weight"][2],
        dp_n_flows=len(dp_flows) + 1,  # the flow dropped at export is one of them
        dp_num_bins=(shapes[dp_flows[0]][0] + 1) // 3,
        flow_n_flows=len({k.split(".")[2] for k in shapes if k.startswith("flow.flows.")}),
        flow_kernel_size=shapes[wn + "0.weight"][2],
        flow_n_layers=count(wn),
        flow_dilation_rate=attr(wn + "1.weight", "dilations") if count(wn) > 1 else 1,
        resblock=resblock,
        resblock_kernel_sizes=tuple(res_kernels),
        resblock_dilation_sizes=tuple(res_dilations),
        upsample_rates=tuple(attr(u, "strides") for u in ups),
        upsample_initial_channel=shapes["dec.conv_pre.weight"][0],
        upsample_kernel_sizes=tuple(shapes[u][2] for u in ups),
        n_speakers=n_speakers,
        gin_channels=shapes["emb_g.weight"][1] if "emb_g.weight" in shapes else 0,
    )
