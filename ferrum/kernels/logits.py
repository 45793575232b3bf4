"""The logits of one row and their argmax, for a decode step of a single sequence.

After the last layer of a one-sequence decode step come the lm_head (a matrix-vector product
over the whole vocabulary), a copy of its output to float32, and the greedy token (an argmax
over ~150k values, a single-block reduction for torch): three launches and a slow reduction for
one token. Here the product writes the float32 logits itself (rounded through the model dtype,
as `F.linear(...).float()` gives them) and each program also writes the largest of its BLOCK_N
logits with its index; a second, one-program kernel picks the first index of the largest of
those partial maxima, which is `torch.argmax` of the row. The model's final RMSNorm (with the
residual add before it) can be folded into the product too: every program recomputes it on the
one row, with the rounding of the norm kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait

BLOCK_N = 8  # vocabulary rows per program (the skinny GEMV's measured best width)
BLOCK_K = 512
ARGMAX_BLOCK = 1024
NO_INDEX = 2**31 - 1


@triton.jit
def _logits_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    part_v,
    part_i,
    res_ptr,
    nw_ptr,
    N,
    K,
    stride_wn,
    eps,
    NORM: tl.constexpr,  # x is the last layer's output: add `res`, RMSNorm with `nw` first
    ROUND: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # launched before the kernel ahead of it is done: wait for its writes
        gdc_wait()
        gdc_launch_dependents()
    pid = tl.program_id(0)
    dt = x_ptr.dtype.element_ty
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    kk = tl.arange(0, BLOCK_K)[None, :]
    rows = w_ptr + n[:, None].to(tl.int64) * stride_wn
    if NORM:  # the row's mean square first (each program: x is a few KiB in L2)
        sq = tl.zeros([1, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + kk
            xs = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
            xs = (xs + tl.load(res_ptr + k, mask=k < K, other=0.0).to(tl.float32)).to(dt)
            xs = xs.to(tl.float32)  # the residual stream is stored in the model dtype
            sq += xs * xs
        rstd = 1.0 / tl.sqrt(tl.sum(sq, 1) / K + eps)  # (1,)
    # products summed over K once, after the loop (as skinny_gemm's one-row path)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + kk
        kmask = k < K
        x = tl.load(x_ptr + k, mask=kmask, other=0.0).to(tl.float32)
        if NORM:  # what norm.py's kernel stores, rounding included
            x = (x + tl.load(res_ptr + k, mask=kmask, other=0.0).to(tl.float32)).to(dt)
            y = x.to(tl.float32) * rstd[:, None]
            if ROUND:
                y = y.to(dt).to(tl.float32)
            y = y * tl.load(nw_ptr + k, mask=kmask, other=0.0).to(tl.float32)
            x = y.to(dt).to(tl.float32)
        w = tl.load(rows + k, mask=nmask[:, None] & kmask, other=0.0)
        acc += x * w.to(tl.float32)
    logits = tl.sum(acc, 1).to(dt).to(tl.float32)
    tl.store(out_ptr + n, logits, mask=nmask)
    masked = tl.where(nmask, logits, float("-inf"))
    tl.store(part_v + pid, tl.max(masked, 0))
    tl.store(part_i + pid, pid * BLOCK_N + tl.argmax(masked, 0, tie_break_left=True))


@triton.jit
def _argmax_kernel(part_v, part_i, num, token_ptr, BLOCK: tl.constexpr, NONE: tl.constexpr,
                   USE_PDL: tl.constexpr):  # fmt: skip
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
    offs = tl.arange(0, BLOCK)
    best_v = tl.full([BLOCK], float("-inf"), tl.float32)
    best_i = tl.full([BLOCK], NONE, tl.int32)
    for start in range(0, num, BLOCK):
        o = start + offs
        mask = o < num
        v = tl.load(part_v + o, mask=mask, other=float("-inf"))
        i = tl.load(part_i + o, mask=mask, other=NONE)
        better = v > best_v  # a lane meets its partials in index order: ties keep the first
        best_v = tl.where(better, v, best_v)
        best_i = tl.where(better, i, best_i)
    top = tl.max(best_v, 0)
    token = tl.min(tl.where(best_v == top, best_i, NONE), 0)
    tl.store(token_ptr, tl.where(token == NONE, 0, token).to(tl.int64))  # all -inf: index 0


def logits_and_greedy(
    x: torch.Tensor,  # (1, K) the final hidden state (with `norm`: the last layer's output)
    weight: torch.Tensor,  # (V, K) the lm_head
    logits: torch.Tensor,  # (1, V) float32, written
    token: torch.Tensor,  # (1,) int64, written: the first index of the largest logit
    norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,  # (residual, weight, eps)
) -> None:
    """The logits and their argmax; with `norm`, of RMSNorm(x + residual) (the model's final
    norm, folded in: one kernel fewer)."""
    vocab, k = weight.shape
    if x.shape != (1, k) or weight.stride(1) != 1 or logits.shape != (1, vocab):
        raise ValueError(f"logits_and_greedy takes one row: x {tuple(x.shape)}, w {(vocab, k)}")
    x = x.contiguous()
    residual, norm_weight, eps = norm if norm is not None else (x, x, 0.0)
    programs = triton.cdiv(vocab, BLOCK_N)
    part_v = torch.empty(programs, dtype=torch.float32, device=x.device)
    part_i = torch.empty(programs, dtype=torch.int32, device=x.device)
    _logits_kernel[(programs,)](
        x, weight, logits, part_v, part_i, residual.contiguous(), norm_weight, vocab, k,
        weight.stride(0), eps, NORM=norm is not None, ROUND=x.dtype != torch.float32,
        BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4, **launch.options(),
    )  # fmt: skip
    _argmax_kernel[(1,)](
        part_v, part_i, programs, token, BLOCK=ARGMAX_BLOCK, NONE=NO_INDEX, num_warps=4,
        **launch.options(),
    )  # fmt: skip
