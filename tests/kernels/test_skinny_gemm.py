"""The skinny GEMM (a few rows, prologue fused) against the torch layers it replaces:
RMSNorm (+ residual) then Linear, SiLU-and-mul then Linear, and a plain Linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ferrum.layers.activation import SiluAndMul
from ferrum.layers.norm import RMSNorm
from tests.kernels.conftest import DEVICE, DTYPES, tolerance

# (rows, K, N): a decode step of 1..16 sequences; widths that are not multiples of the blocks
SHAPES = [(1, 256, 96), (3, 200, 64), (16, 96, 40)]


def _weights(n: int, k: int, dtype, gen, bias: bool):
    w = (torch.randn(n, k, generator=gen) / k**0.5).to(DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(DEVICE, dtype) if bias else None
    return w, b


def _close(got, ref, dtype):
    # the matmul sums in another order than the reference's; a few bf16/fp16 ulps of the output
    tol = tolerance(dtype)
    torch.testing.assert_close(got.float(), ref.float(), atol=4 * tol["atol"], rtol=4 * tol["rtol"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [False, True])
def test_plain(dtype, shape, bias):
    from ferrum.kernels.skinny_gemm import skinny_linear

    rows, k, n = shape
    gen = torch.Generator().manual_seed(rows * k + n)
    x = torch.randn(rows, k, generator=gen).to(DEVICE, dtype)
    w, b = _weights(n, k, dtype, gen, bias)
    ref = F.linear(x, w, b)
    _close(skinny_linear(x, w, b, block_n=32, block_k=64), ref, dtype)
    _close(skinny_linear(x, w, b, block_n=8, block_k=128), ref, dtype)  # 16 when rows > 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_rmsnorm_prologue(dtype, shape, with_residual):
    from ferrum.kernels.skinny_gemm import skinny_linear

    rows, k, n = shape
    gen = torch.Generator().manual_seed(7 + rows)
    x = (torch.randn(rows, k, generator=gen) * 3).to(DEVICE, dtype)
    res = torch.randn(rows, k, generator=gen).to(DEVICE, dtype) if with_residual else None
    norm = RMSNorm(k, 1e-5).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(k, generator=gen) + 0.5)
    w, _ = _weights(n, k, dtype, gen, False)
    if with_residual:
        normed, ref_res = norm.forward_torch(x, res)
        out, new_res = skinny_linear(
            x, w, prologue="rmsnorm", norm_weight=norm.weight, eps=norm.eps, residual=res,
            block_n=16, block_k=64,
        )  # fmt: skip
        torch.testing.assert_close(new_res, ref_res, atol=0, rtol=0)  # one rounded add: exact
    else:
        normed = norm.forward_torch(x)
        out = skinny_linear(x, w, prologue="rmsnorm", norm_weight=norm.weight, eps=norm.eps)
    _close(out, F.linear(normed, w), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_silu_mul_prologue(dtype, shape):
    from ferrum.kernels.skinny_gemm import skinny_linear

    rows, k, n = shape
    gen = torch.Generator().manual_seed(11 + k)
    gate_up = (torch.randn(rows, 2 * k, generator=gen) * 3).to(DEVICE, dtype)
    w, b = _weights(n, k, dtype, gen, True)
    ref = F.linear(SiluAndMul().forward_torch(gate_up), w, b)
    _close(skinny_linear(gate_up, w, b, prologue="silu_mul", block_k=64), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("prologue", ["none", "rmsnorm", "silu_mul"])
def test_one_row_rotated_pipelined(dtype, prologue):
    """One row with each program's K loop started at its own slice (wrapping around), plain or
    software-pipelined, its first slices of W loaded ahead or not: the same product, the
    residual stream written whole, the same bits on every call."""
    from ferrum.kernels.skinny_gemm import skinny_linear

    k, n = 448, 40  # 7 slices of 64: program p starts at slice p mod 7
    gen = torch.Generator().manual_seed(23)
    width = 2 * k if prologue == "silu_mul" else k
    x = (torch.randn(1, width, generator=gen) * 2).to(DEVICE, dtype)
    res = torch.randn(1, k, generator=gen).to(DEVICE, dtype)
    w, b = _weights(n, k, dtype, gen, True)
    norm = RMSNorm(k, 1e-5).to(DEVICE, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(k, generator=gen) + 0.5)
    extra = {}
    if prologue == "rmsnorm":
        normed, ref_res = norm.forward_torch(x, res)
        ref = F.linear(normed, w, b)
        extra = {"norm_weight": norm.weight, "eps": norm.eps, "residual": res}
    elif prologue == "silu_mul":
        ref = F.linear(SiluAndMul().forward_torch(x), w, b)
    else:
        ref = F.linear(x, w, b)
    # preload: the first slices loaded ahead (7 of 64 asked for: 4 of the 7 slices)
    # (multiplied before the loop or after it)
    cases = [(False, 1, 0, None), (True, 1, 0, None), (False, 3, 0, None), (True, 3, 0, None)]
    cases += [(True, 3, 1, False), (True, 3, 2, True), (False, 3, 4, False), (True, 3, 7, None)]
    cases += [(True, 3, 4, True), (True, 1, 64, False)]
    for rotate, stages, preload, last in cases:

        def call(rotate=rotate, stages=stages, preload=preload, last=last):
            out = skinny_linear(
                x, w, b, prologue, block_n=8, block_k=64, num_stages=stages, rotate=rotate,
                preload=preload, preload_last=last, **extra,
            )  # fmt: skip
            if prologue == "rmsnorm":
                out, new_res = out
                torch.testing.assert_close(new_res, ref_res, atol=0, rtol=0)
            return out

        got = call()
        _close(got, ref, dtype)
        assert torch.equal(got, call())


def test_one_row_width():
    """A large model's down projection (silu_mul over a wide N) gets 16-wide programs, so its
    grid is one wave of resident programs; everything else, and small models' down, 8."""
    from ferrum.kernels.skinny_gemm import one_row_block_n

    assert one_row_block_n("silu_mul", 4096) == 16  # Llama-3.1-8B
    assert one_row_block_n("silu_mul", 1024) == 8  # Qwen3-0.6B
    assert one_row_block_n("rmsnorm", 6144) == one_row_block_n("none", 4096) == 8


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_row_silu_mul_wide(dtype):
    """The default shape of a wide one-row down projection (16 columns a program, 8 warps, its
    first slices preloaded) computes the same product."""
    from ferrum.kernels.skinny_gemm import skinny_linear

    k, n = 192, 4096  # 3 slices of 64, 256 programs
    gen = torch.Generator().manual_seed(5)
    gate_up = (torch.randn(1, 2 * k, generator=gen) * 3).to(DEVICE, dtype)
    w, b = _weights(n, k, dtype, gen, True)
    ref = F.linear(SiluAndMul().forward_torch(gate_up), w, b)
    got = skinny_linear(gate_up, w, b, prologue="silu_mul", block_k=64, preload=2)
    _close(got, ref, dtype)
    assert torch.equal(got, skinny_linear(gate_up, w, b, "silu_mul", block_n=16, block_k=64,
                                          preload=2))  # fmt: skip


@pytest.mark.parametrize("k", [64, 128, 200])
def test_preload_more_than_there_is(k):
    """A preload of more slices than K has (1, 2, and 4 with a ragged last one) reads each slice
    once: the result equals the plain loop's."""
    from ferrum.kernels.skinny_gemm import skinny_linear

    gen = torch.Generator().manual_seed(k)
    x = torch.randn(1, k, generator=gen).to(DEVICE)
    w, _ = _weights(24, k, torch.float32, gen, False)
    ref = F.linear(x, w)
    for preload in (1, 2, 3, 8):
        for last in (False, True):
            got = skinny_linear(x, w, block_k=64, preload=preload, preload_last=last)
            _close(got, ref, torch.float32)


def test_bad_shapes_are_refused():
    from ferrum.kernels.skinny_gemm import skinny_linear

    w = torch.zeros(8, 32, device=DEVICE)
    with pytest.raises(ValueError, match="at most"):
        skinny_linear(torch.zeros(17, 32, device=DEVICE), w)
    with pytest.raises(ValueError, match="inputs"):
        skinny_linear(torch.zeros(2, 30, device=DEVICE), w)
