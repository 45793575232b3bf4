"""Split residual vector quantization of the speech codec, in both directions.

A frame's codes are one "semantic" code (the first quantizer, its own RVQ) plus the "acoustic"
codes (a second RVQ over the same input). Each codebook is stored as a running sum of the vectors
assigned to an entry and that entry's usage count; the centroid is their quotient.
Decoding sums each RVQ's centroids and projects them up with a 1x1 conv; the two RVQs' outputs
add. Encoding (Mimi's) projects the input down once per RVQ and peels off the nearest centroid,
quantizer after quantizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

USAGE_EPS = 1e-5  # floor on a codebook entry's usage count


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.cluster_usage = nn.Parameter(torch.ones(size))
        self.embedding_sum = nn.Parameter(torch.zeros(size, dim))

    def centroids(self) -> Tensor:  # (N, D)
        return self.embedding_sum / self.cluster_usage.clamp(min=USAGE_EPS)[:, None]

    def lookup(self, codes: Tensor) -> Tensor:  # (B, T) -> (B, T, D)
        return F.embedding(codes, self.centroids())

    def nearest(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, T) indices
        flat = x.reshape(-1, x.shape[-1]).float()
        dists = torch.cdist(flat[None], self.centroids().float()[None], p=2)[0]  # (B*T, N)
        return dists.argmin(dim=-1).view(x.shape[:-1])


# ----- decoder side (names as in the checkpoint's `decoder.quantizer.*`) -----


class DecoderVQ(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self._codebook = Codebook(size, dim)


class DecoderVQStack(nn.Module):
    def __init__(self, count: int, size: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderVQ(size, dim) for _ in range(count))


class ResidualDequantizer(nn.Module):
    def __init__(self, count: int, size: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.vq = DecoderVQStack(count, size, dim)
        self.output_proj = nn.Conv1d(dim, out_dim, 1, bias=False)

    def forward(self, codes: Tensor) -> Tensor:  # (B, K, T) -> (B, out_dim, T)
        total = sum(
            layer._codebook.lookup(codes[:, i]) for i, layer in enumerate(self.vq.layers)
        )  # (B, T, D)
        return self.output_proj(total.transpose(1, 2))


class SplitDequantizer(nn.Module):
    """Codes (B, Q, T) -> the dequantized frames (B, codebook_dim, T)."""

    def __init__(self, num_quantizers: int, num_semantic: int, size: int, dim: int) -> None:
        super().__init__()
        self.num_semantic = num_semantic
        inner = dim // 2  # each RVQ works at half the frame width
        self.rvq_first = ResidualDequantizer(num_semantic, size, inner, dim)
        self.rvq_rest = ResidualDequantizer(num_quantizers - num_semantic, size, inner, dim)

    def forward(self, codes: Tensor) -> Tensor:
        out = self.rvq_first(codes[:, : self.num_semantic])
        if codes.shape[1] > self.num_semantic:
            out = out + self.rvq_rest(codes[:, self.num_semantic :])
        return out


# ----- encoder side (Mimi's; names as in `encoder.quantizer.*`) -----


class EncoderVQ(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.codebook = Codebook(size, dim)


class ResidualQuantizer(nn.Module):
    def __init__(self, count: int, size: int, dim: int, in_dim: int) -> None:
        super().__init__()
        self.input_proj = nn.Conv1d(in_dim, dim, 1, bias=False)
        self.layers = nn.ModuleList(EncoderVQ(size, dim) for _ in range(count))

    def forward(self, x: Tensor) -> Tensor:  # (B, in_dim, T) -> (B, K, T)
        residual = self.input_proj(x).transpose(1, 2)  # (B, T, D)
        codes = []
        for layer in self.layers:
            index = layer.codebook.nearest(residual)  # (B, T)
            residual = residual - layer.codebook.lookup(index)
            codes.append(index)
        return torch.stack(codes, dim=1)


class SplitQuantizer(nn.Module):
    """Frames (B, hidden, T) -> codes (B, num_semantic + num_acoustic, T)."""

    def __init__(
        self, num_semantic: int, num_acoustic: int, size: int, dim: int, in_dim: int
    ) -> None:
        super().__init__()
        self.semantic_residual_vector_quantizer = ResidualQuantizer(num_semantic, size, dim, in_dim)
        self.acoustic_residual_vector_quantizer = ResidualQuantizer(num_acoustic, size, dim, in_dim)

    def forward(self, x: Tensor) -> Tensor:
        codes = [self.semantic_residual_vector_quantizer(x)]
        if len(self.acoustic_residual_vector_quantizer.layers) > 0:
            codes.append(self.acoustic_residual_vector_quantizer(x))
        return torch.cat(codes, dim=1)
