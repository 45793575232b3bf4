"""The logits of one row and their argmax, for a decode step of a single sequence.

After the last layer of a one-sequence decode step come the lm_head (a matrix-vector product
over the whole vocabulary), a copy of its output to float32, and the greedy token (an argmax
over ~150k values, a single-block reduction for torch): three launches and a slow reduction for
one token. Here the product writes the float32 logits itself (rounded through the model dtype,
as `F.linear(...).float()` gives them) and each program also writes the largest of its BLOCK_N
logits with its index; a second, one-program kernel picks the first index of the largest of
those partial maxima, which is `torch.argmax` of the row.
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
    N,
    K,
    stride_wn,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # launched before the kernel ahead of it is done: wait for its writes
        gdc_wait()
        gdc_launch_dependents()
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    kk = tl.arange(0, BLOCK_K)[None, :]
    rows = w_ptr + n[:, None].to(tl.int64) * stride_wn
    # products summed over K once, after the loop (as skinny_gemm's one-row path)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + kk
        kmask = k < K
        x = tl.load(x_ptr + k, mask=kmask, other=0.0).to(tl.float32)
        w = tl.load(rows + k, mask=nmask[:, None] & kmask, other=0.0)
        acc += x * w.to(tl.float32)
    logits = tl.sum(acc, 1).to(x_ptr.dtype.element_ty).to(tl.float32)
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
    x: torch.Tensor,  # (1, K) the final hidden state
    weight: torch.Tensor,  # (V, K) the lm_head
    logits: torch.Tensor,  # (1, V) float32, written
    token: torch.Tensor,  # (1,) int64, written: the first index of the largest logit
) -> None:
    vocab, k = weight.shape
    if x.shape != (1, k) or weight.stride(1) != 1 or logits.shape != (1, vocab):
        raise ValueError(f"logits_and_greedy takes one row: x {tuple(x.shape)}, w {(vocab, k)}")
    x = x.contiguous()
    programs = triton.cdiv(vocab, BLOCK_N)
    part_v = torch.empty(programs, dtype=torch.float32, device=x.device)
    part_i = torch.empty(programs, dtype=torch.int32, device=x.device)
    _logits_kernel[(programs,)](
        x, weight, logits, part_v, part_i, vocab, k, weight.stride(0),
        BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=4, **launch.options(),
    )  # fmt: skip
    _argmax_kernel[(1,)](
        part_v, part_i, programs, token, BLOCK=ARGMAX_BLOCK, NONE=NO_INDEX, num_warps=4,
        **launch.options(),
    )  # fmt: skip
