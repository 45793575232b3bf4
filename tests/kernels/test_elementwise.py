"""The fused norm, rotary and SiLU-and-mul kernels against the torch paths of the layers
(which on CUDA dispatch to these kernels, so the references are their `*_torch` paths)."""

from __future__ import annotations

import pytest
import torch

from ferrum.layers.activation import SiluAndMul
from ferrum.layers.norm import RMSNorm
from ferrum.layers.rotary import RotaryEmbedding, apply_rotary_torch
from tests.kernels.conftest import DEVICE, DTYPES, tolerance


def poison(t: torch.Tensor) -> torch.Tensor:
    return t.fill_(float("nan"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [64, 96])
def test_rms_norm_with_and_without_residual(dtype, dim):
    from ferrum.kernels.norm import rms_norm

    gen = torch.Generator().manual_seed(dim)
    norm = RMSNorm(dim, eps=1e-5).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(dim, generator=gen) * 0.5 + 1)
    x = (torch.randn(7, dim, generator=gen) * 3).to(DEVICE, dtype)
    res = torch.randn(7, dim, generator=gen).to(DEVICE, dtype)
    ref = norm.forward_torch(x)
    torch.testing.assert_close(rms_norm(x, norm.weight, norm.eps), ref, **tolerance(dtype))
    ref_out, ref_res = norm.forward_torch(x, res)
    out, new_res = rms_norm(x, norm.weight, norm.eps, res)
    torch.testing.assert_close(new_res, ref_res, atol=0, rtol=0)  # one rounded add: exact
    torch.testing.assert_close(out, ref_out, **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_over_heads_of_a_strided_view(dtype):
    """The Qwen3 q/k norm: rows are heads inside a fused qkv row."""
    from ferrum.kernels.norm import rms_norm

    gen = torch.Generator().manual_seed(1)
    heads, kv, dim = 4, 2, 32
    qkv = torch.randn(5, heads + 2 * kv, dim, generator=gen).to(DEVICE, dtype)
    norm = RMSNorm(dim, eps=1e-6).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(dim, generator=gen) + 0.5)
    view = qkv[:, heads : heads + kv]  # (T, Hkv, D), not contiguous
    torch.testing.assert_close(
        rms_norm(view, norm.weight, norm.eps), norm.forward_torch(view), **tolerance(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "scaling",
    [
        None,
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ],
)
def test_rotary_matches_apply_rotary(dtype, scaling):
    from ferrum.kernels.rotary import rotary

    gen = torch.Generator().manual_seed(2)
    dim, heads, kv = 32, 6, 2
    rope = RotaryEmbedding(dim, 512, 10_000.0, scaling).to(DEVICE)
    positions = torch.randint(0, 512, (9,), generator=gen).to(DEVICE)
    cos, sin = rope(positions, dtype)
    qkv = torch.randn(9, heads + 2 * kv, dim, generator=gen).to(DEVICE, dtype)
    x = qkv[:, : heads + kv]  # q and k of a fused qkv row: a strided view
    out = rotary(x, cos, sin)
    assert out.is_contiguous() and out.shape == x.shape
    torch.testing.assert_close(out, apply_rotary_torch(x, cos, sin), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("inter", [48, 1500])
def test_silu_and_mul(dtype, inter):
    from ferrum.kernels.activation import silu_and_mul

    gen = torch.Generator().manual_seed(inter)
    x = (torch.randn(3, 2 * inter, generator=gen) * 4).to(DEVICE, dtype)
    torch.testing.assert_close(silu_and_mul(x), SiluAndMul().forward_torch(x), **tolerance(dtype))
