"""The logits of one row and their argmax, for a decode step of a single sequence.

After the last layer of a one-sequence decode step come the lm_head (a matrix-vector product
over the whole vocabulary), a copy of its output to float32, and the greedy token (an argmax
over ~150k values, a single-block reduction for torch): three launches and a slow reduction for
one token. Here the product writes the float32 logits itself (rounded through the model dtype,
as `F.linear(...).float()` gives them) and each program also folds the largest of its BLOCK_N
logits into one 64-bit word with an atomic max: the value's bits made order-preserving as an
integer in the high half, the complement of its index in the low half, so the word's maximum is
the largest logit at its first index, which is `torch.argmax` of the row. A one-thread kernel
then writes that index as the token and resets the word for the next step. (Partial maxima read
back by a one-program argmax cost 11 us on an H100 for Qwen3's 19k programs, 1% of a decode
step: one SM reading what the whole chip wrote; the atomics overlap the product.)

The model's final RMSNorm (with the residual add before it) can be folded into the product
too: every program recomputes it on the one row, with the rounding of the norm kernel.

Over long rows (a large model's lm_head) a program starts its K loop at its own slice, so the
programs that run together spread over the memory channels, and loads its first slices before
the PDL wait, while the last layer finishes (as the skinny GEMV does).

The tile GEMM (`ferrum.kernels.tile_gemm`) folds its tiles' row maxima into one such word per
row the same way (`pack_argmax`), for the logits of decode batches of 17-64 sequences, and
`tokens_from_words` reads them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait
from ferrum.kernels.skinny_gemm import prologue_input

BLOCK_N = 8  # vocabulary rows per program (the skinny GEMV's measured best width)
BLOCK_K = 512
# rows of at least ROTATE_SLICES slices (Llama-3.1-8B's 4096, not Qwen3-0.6B's 1024): the K loop
# starts at slice pid mod slices, as the skinny GEMV's, and its first PRELOAD slices load
# before the PDL wait. H100, Llama-3.1-8B decode-1 graph replay, builds interleaved in one
# process: 5,258-5,263 -> 5,254 us (rotated alone 5,257; 189.6-189.8 -> 189.9-190.0 tok/s);
# Qwen3-0.6B with 2 slices, both preloaded: 846-850 -> 850-857 us, so not there
ROTATE_SLICES = 8
PRELOAD = 4
EMPTY = -(2**63)  # the argmax word before any program has folded its maximum in


def argmax_word(device: torch.device, rows: int = 1) -> torch.Tensor:
    """(rows,) int64 words for `logits_and_greedy` or the tile GEMM to fold maxima into (the
    token kernel leaves them reset)."""
    return torch.full((rows,), EMPTY, dtype=torch.int64, device=device)


@triton.jit
def pack_argmax(best, index):
    """The word of a maximum `best` (float32) at vocabulary `index`: signed 64-bit order of the
    words is the floats' order, ties broken towards the first index."""
    best = best + 0.0  # -0.0 becomes +0.0, equal as argmax sees them
    bits = best.to(tl.int32, bitcast=True)
    order = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # signed order = the floats' order
    return (order.to(tl.int64) << 32) | (0x7FFFFFFF - index).to(tl.int64)


@triton.jit
def _input(x_ptr, res_ptr, nw_ptr, k, K, rstd, NORM: tl.constexpr, ROUND: tl.constexpr,
           dt: tl.constexpr):  # fmt: skip
    """The product's input at columns `k`, float32: x, or RMSNorm(x + res) as norm.py's kernel
    stores it (the skinny GEMV's rmsnorm prologue on row 0; as program 1, which stores no
    residual stream)."""
    a = prologue_input(x_ptr, res_ptr, x_ptr, nw_ptr, 0, True, k, 1, 0, K, rstd[:, None],
                       1 if NORM else 0, True, ROUND, dt)  # fmt: skip
    return a.to(tl.float32)


@triton.jit
def _logits_kernel(
    x_ptr,
    w_ptr,
    out_ptr,
    word_ptr,
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
    ROTATE: tl.constexpr,
    PRELOAD: tl.constexpr,  # K slices of W loaded first, before the PDL wait (a power of 2)
    USE_PDL: tl.constexpr,
):
    pid = tl.program_id(0)
    dt = x_ptr.dtype.element_ty
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    kk = tl.arange(0, BLOCK_K)[None, :]
    rows = w_ptr + n[:, None].to(tl.int64) * stride_wn
    slices = tl.cdiv(K, BLOCK_K)
    first = pid % slices if ROTATE else 0
    if PRELOAD > 0:
        k_pre = ((first + tl.arange(0, PRELOAD)[:, None]) % slices) * BLOCK_K + kk  # (P, BK)
        w_pre = tl.load(
            rows[:, :, None] + k_pre[None, :, :],
            mask=nmask[:, None, None] & (k_pre < K)[None, :, :],
            other=0.0,
        )  # (BLOCK_N, PRELOAD, BLOCK_K)
    if USE_PDL:  # launched before the kernel ahead of it is done: wait for its writes
        gdc_wait()
        gdc_launch_dependents()
    if NORM:  # the row's mean square first (each program: x is a few KiB in L2)
        sq = tl.zeros([1, BLOCK_K], tl.float32)
        for k0 in tl.range(0, K, BLOCK_K, loop_unroll_factor=8):  # the loads go out together
            k = k0 + kk
            xs = tl.load(x_ptr + k, mask=k < K, other=0.0).to(tl.float32)
            xs = (xs + tl.load(res_ptr + k, mask=k < K, other=0.0).to(tl.float32)).to(dt)
            xs = xs.to(tl.float32)  # the residual stream is stored in the model dtype
            sq += xs * xs
        rstd = 1.0 / tl.sqrt(tl.sum(sq, 1) / K + eps)  # (1,)
    else:
        rstd = tl.zeros([1], tl.float32)
    # products summed over K once, after the loop (as skinny_gemm's one-row path)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    if PRELOAD > 0:
        x_pre = _input(x_ptr, res_ptr, nw_ptr, k_pre, K, rstd, NORM, ROUND, dt)
        acc += tl.sum(x_pre[None, :, :] * w_pre.to(tl.float32), 1)
    for i in range(PRELOAD, slices):
        k = ((first + i) % slices) * BLOCK_K + kk
        x = _input(x_ptr, res_ptr, nw_ptr, k, K, rstd, NORM, ROUND, dt)
        w = tl.load(rows + k, mask=nmask[:, None] & (k < K), other=0.0)
        acc += x * w.to(tl.float32)
    logits = tl.sum(acc, 1).to(dt).to(tl.float32)
    tl.store(out_ptr + n, logits, mask=nmask)
    masked = tl.where(nmask, logits, float("-inf"))
    index = pid * BLOCK_N + tl.argmax(masked, 0, tie_break_left=True)
    tl.atomic_max(word_ptr, pack_argmax(tl.max(masked, 0), index), sem="relaxed")


@triton.jit(do_not_specialize=["rows"])
def _token_kernel(
    word_ptr, token_ptr, rows, EMPTY: tl.constexpr, BLOCK: tl.constexpr, USE_PDL: tl.constexpr
):
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
    r = tl.arange(0, BLOCK)
    mask = r < rows
    word = tl.load(word_ptr + r, mask=mask, other=0)
    tl.store(token_ptr + r, 0x7FFFFFFF - (word & 0x7FFFFFFF), mask=mask)
    tl.store(word_ptr + r, tl.full([BLOCK], EMPTY, tl.int64), mask=mask)  # for the next step


def tokens_from_words(word: torch.Tensor, tokens: torch.Tensor) -> None:
    """tokens[i] = the index in argmax word i (int64, written), and the words reset."""
    rows = word.shape[0]
    block = 1 if rows == 1 else max(64, triton.next_power_of_2(rows))  # few compiles
    _token_kernel[(1,)](
        word, tokens, rows, EMPTY=EMPTY, BLOCK=block,
        num_warps=1 if rows <= 32 else 2, **launch.options(),
    )  # fmt: skip


def logits_and_greedy(
    x: torch.Tensor,  # (1, K) the final hidden state (with `norm`: the last layer's output)
    weight: torch.Tensor,  # (V, K) the lm_head
    logits: torch.Tensor,  # (1, V) float32, written
    token: torch.Tensor,  # (1,) int64, written: the first index of the largest logit
    norm: tuple[torch.Tensor, torch.Tensor, float] | None = None,  # (residual, weight, eps)
    word: torch.Tensor | None = None,  # `argmax_word`: kept by a caller that captures graphs
) -> None:
    """The logits and their argmax; with `norm`, of RMSNorm(x + residual) (the model's final
    norm, folded in: one kernel fewer)."""
    vocab, k = weight.shape
    if x.shape != (1, k) or weight.stride(1) != 1 or logits.shape != (1, vocab):
        raise ValueError(f"logits_and_greedy takes one row: x {tuple(x.shape)}, w {(vocab, k)}")
    if vocab > 2**31 - 1:
        raise ValueError(f"a vocabulary of {vocab} does not fit the argmax word's index")
    x = x.contiguous()
    residual, norm_weight, eps = norm if norm is not None else (x, x, 0.0)
    if word is None:
        word = argmax_word(x.device)
    rotate = triton.cdiv(k, BLOCK_K) >= ROTATE_SLICES
    preload = PRELOAD if rotate else 0  # a power of two (a tl.arange) below the slice count
    _logits_kernel[(triton.cdiv(vocab, BLOCK_N),)](
        x, weight, logits, word, residual.contiguous(), norm_weight, vocab, k,
        weight.stride(0), eps, NORM=norm is not None, ROUND=x.dtype != torch.float32,
        BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, ROTATE=rotate, PRELOAD=preload, num_warps=4,
        **launch.options(),
    )  # fmt: skip
    tokens_from_words(word, token)
