"""out = x @ W.T (+ bias) for a decode batch of up to 64 rows on the tensor cores.

A decode step of 17-64 sequences is still a stream of the weights: 64 rows are a quarter of what
an H100 needs per weight byte to be compute-bound, so a projection takes as long as its weight
takes to read. cuBLAS reads them at 2.2-2.7 TB/s there (Llama-3.1-8B's shapes at 64 rows,
`python -m ferrum.bench.gpu_gemm64`): its kernels for these shapes leave part of the chip idle
(a 4096 x 4096 product is 32 output tiles of 128 for 132 multiprocessors) or end in a partial
wave. Here each program owns BLOCK_N output columns for all rows and streams a slice of K of
their weight rows; with SPLIT_K > 1 the K range is cut into parts, so a narrow product still
gives every multiprocessor a program. Each part writes its float32 partial sums to a workspace
and takes a ticket from a per-tile counter; the last part to arrive adds the partials in split
order (so the result does not depend on which finished first), writes the output and resets the
counter for the next call. One kernel, no zero-fill or second pass (either would add a launch).

For the logits of a decode batch the output may be float32 (rounded through the input dtype
first, as `F.linear(...).float()` gives it), and with `argmax_word` each program also folds
each row's largest logit of its tile into that row's argmax word (`ferrum.kernels.logits`):
the greedy tokens come out of the product, with no pass over the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait, prefetch_l2
from ferrum.kernels.logits import pack_argmax
from ferrum.kernels.paged_decode import device_sms

MAX_ROWS = 64
MAX_TILES = 8192  # output tiles a split product may have (the ticket counters per device)
# with PDL, each program pulls up to this many bytes of its first weight columns into L2 while
# the kernel ahead finishes (the weights do not depend on it); 0: none. H100, same call,
# Llama-3.1-8B 64-concurrent: 4,995 -> 5,013 tok/s
PREFETCH_BYTES = 32 * 2**10


@dataclass(frozen=True)
class TileConfig:
    """Launch shape of one product (the numerics depend only on block_k and split_k)."""

    block_n: int = 128
    block_k: int = 128
    split_k: int = 1
    num_stages: int = 4
    num_warps: int = 4


# one compile for every row count and split (triton would specialize a count of 1 or a multiple
# of 16: a compile mid-serving, and seconds more at start-up, where the graphs of every batch
# size are captured)
@triton.jit(do_not_specialize=["M", "split_k"])
def _tile_gemm_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    part_ptr,  # (split_k, BLOCK_M, N) float32 partial sums (SPLIT only)
    ticket_ptr,  # (tiles,) int32 counters, zero between calls (SPLIT only)
    word_ptr,  # (M,) int64 argmax words (ARGMAX only)
    M,
    N,
    K,
    stride_xm,
    stride_wn,
    stride_om,
    split_k,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    ARGMAX: tl.constexpr,  # fold each row's largest output into its argmax word (no SPLIT)
    EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    PREFETCH_K: tl.constexpr,  # with USE_PDL: weight columns pulled into L2 before the wait
    LINE: tl.constexpr,  # weight elements per 128-byte line
    USE_PDL: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    rm = tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    mmask = rm < M
    nmask = rn < N
    per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), split_k) * BLOCK_K
    k_start = pid_k * per_split
    k_end = tl.minimum(k_start + per_split, K)
    # rows past N read row N - 1 (in bounds, never stored): the weight loads need no mask
    w_rows = tl.minimum(rn, N - 1).to(tl.int64) * stride_wn
    x_ptrs = x_ptr + rm[:, None] * stride_xm + (k_start + rk)[None, :]
    w_ptrs = w_ptr + w_rows[None, :] + (k_start + rk)[:, None]
    if USE_PDL:  # launched before the kernel ahead of it is done
        if PREFETCH_K > 0:  # the weights do not depend on it: the first columns into L2
            lines = tl.minimum(k_start + tl.arange(0, PREFETCH_K // LINE) * LINE, K - 1)
            prefetch_l2(w_ptr + w_rows[:, None] + lines[None, :])
        gdc_wait()  # then wait for its writes
        gdc_launch_dependents()
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(k_start, k_end, BLOCK_K):
        if EVEN_K:
            a = tl.load(x_ptrs, mask=mmask[:, None], other=0.0)
            w = tl.load(w_ptrs)
        else:
            kmask = (k0 + rk) < K
            a = tl.load(x_ptrs, mask=mmask[:, None] & kmask[None, :], other=0.0)
            w = tl.load(w_ptrs, mask=kmask[:, None], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    out_mask = mmask[:, None] & nmask[None, :]
    if SPLIT:
        tile = rm[:, None] * N + rn[None, :]
        tl.store(part_ptr + pid_k * BLOCK_M * N + tile, acc, mask=out_mask)
        tl.debug_barrier()  # every thread's partial is written before the ticket (a release)
        ticket = tl.atomic_add(ticket_ptr + pid_n, 1, sem="acq_rel")
        if ticket == split_k - 1:  # the last part: the others' partials are visible
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for s in range(0, split_k):  # in split order: the same sum whoever is last
                acc += tl.load(part_ptr + s * BLOCK_M * N + tile, mask=out_mask, other=0.0,
                               cache_modifier=".cg")  # fmt: skip
            tl.store(ticket_ptr + pid_n, 0)
            _write(acc, x_ptr, b_ptr, out_ptr, word_ptr, rm, rn, mmask, nmask, stride_om,
                   pid_n, HAS_BIAS, ARGMAX, BLOCK_N)  # fmt: skip
    else:
        _write(acc, x_ptr, b_ptr, out_ptr, word_ptr, rm, rn, mmask, nmask, stride_om, pid_n,
               HAS_BIAS, ARGMAX, BLOCK_N)  # fmt: skip


@triton.jit
def _write(acc, x_ptr, b_ptr, out_ptr, word_ptr, rm, rn, mmask, nmask, stride_om, pid_n,
           HAS_BIAS: tl.constexpr, ARGMAX: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
    """A finished tile: + bias, stored, and (ARGMAX) its rows' maxima folded into their words."""
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=nmask, other=0.0).to(tl.float32)[None, :]
    # through the input dtype first: a float32 output holds what the 16-bit product gives
    out = acc.to(x_ptr.dtype.element_ty).to(out_ptr.dtype.element_ty)
    out_mask = mmask[:, None] & nmask[None, :]
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], out, mask=out_mask)
    if ARGMAX:
        masked = tl.where(nmask[None, :], out.to(tl.float32), float("-inf"))
        index = pid_n * BLOCK_N + tl.argmax(masked, 1, tie_break_left=True)
        word = pack_argmax(tl.max(masked, 1), index)
        tl.atomic_max(word_ptr + rm, word, mask=mmask, sem="relaxed")


_tickets: dict[torch.device, torch.Tensor] = {}


def _ticket_counters(device: torch.device) -> torch.Tensor:
    # one zeroed array per device, shared by every split product: each leaves it zeroed, and a
    # launch that follows one (PDL or not) touches it only after that one has completed
    counters = _tickets.get(device)
    if counters is None:
        counters = _tickets[device] = torch.zeros(MAX_TILES, dtype=torch.int32, device=device)
    return counters


def default_config(rows: int, n: int, k: int, num_sms: int) -> TileConfig:
    """A launch shape from the product's size: the widest column tile (128, 64, 32) that still
    gives 0.7 programs per multiprocessor; where even 32 leaves half the chip idle, K cut into
    up to 4 parts of at least 4 slices each; 256-wide K slices for long rows and for 32-wide
    tiles of 4096-long ones. On an H100 at 64 rows this is within 1 us of the best shape swept
    for every Llama-3.1-8B and Qwen3-0.6B projection (qkv of Llama 0.3 us slower, on a par with
    cuBLAS), and cuts Llama's step by ~3 us a layer and 27 us of logits against cuBLAS
    (gpu_gemm64)."""
    del rows  # the shape does not depend on it up to MAX_ROWS
    block_n = next((b for b in (128, 64) if triton.cdiv(n, b) >= 0.7 * num_sms), 32)
    # narrow tiles of long rows take 256-wide slices too (Llama's o: 14.3 us against 16.9)
    block_k = 256 if k >= 8192 or (block_n == 32 and k >= 4096) else 128
    tiles = triton.cdiv(n, block_n)
    split = 1
    if 2 * tiles <= num_sms:
        split = max(1, min(num_sms // tiles, 4, triton.cdiv(k, block_k) // 4))
    return TileConfig(block_n=block_n, block_k=block_k, split_k=split)


def tile_linear(
    x: torch.Tensor,  # (M, K), M <= MAX_ROWS
    weight: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None = None,
    config: TileConfig | None = None,
    out: torch.Tensor | None = None,  # (M, N), x's dtype or float32; default: a new x-dtype one
    argmax_word: torch.Tensor | None = None,  # (M,) `logits.argmax_word`: rows' maxima folded in
) -> torch.Tensor:
    """x @ weight.T + bias, (M, N) in x's dtype (or into `out`)."""
    rows, k = x.shape
    n = weight.shape[0]
    if rows > MAX_ROWS:
        raise ValueError(f"tile_linear takes at most {MAX_ROWS} rows, got {rows}")
    if weight.shape[1] != k or weight.stride(1) != 1:
        raise ValueError(f"weight {tuple(weight.shape)} does not take {k} inputs contiguously")
    if out is None:
        out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    elif out.shape != (rows, n) or out.stride(1) != 1 or out.dtype not in (x.dtype, torch.float32):
        raise ValueError(f"out {tuple(out.shape)} {out.dtype} cannot hold a ({rows}, {n}) product")
    if argmax_word is not None and (argmax_word.shape != (rows,) or n > 2**31 - 1):
        raise ValueError(f"argmax words {tuple(argmax_word.shape)} for {rows} rows of {n}")
    if x.stride(1) != 1:
        x = x.contiguous()
    if config is None:
        config = default_config(rows, n, k, device_sms(x.device))
    if rows == 0:
        return out
    block_m = MAX_ROWS  # for any row count: one compile per shape (the tensor cores idle anyway)
    tiles = triton.cdiv(n, config.block_n)
    split = max(1, min(config.split_k, triton.cdiv(k, config.block_k)))
    if argmax_word is not None:
        split = 1  # the maxima are folded where the output is written
    parts = tickets = out  # placeholders: unused without a split
    if split > 1:
        if tiles > MAX_TILES:
            raise ValueError(f"a split product has at most {MAX_TILES} tiles, got {tiles}")
        parts = torch.empty(split, block_m, n, dtype=torch.float32, device=x.device)
        tickets = _ticket_counters(x.device)
    word = argmax_word if argmax_word is not None else tickets
    line = 128 // weight.element_size()
    prefetch = PREFETCH_BYTES // (config.block_n * weight.element_size())
    prefetch = min(prefetch, triton.cdiv(triton.cdiv(k, config.block_k), split) * config.block_k)
    prefetch = 1 << (prefetch.bit_length() - 1) if prefetch >= line else 0  # a power of two
    _tile_gemm_kernel[(tiles, split)](
        x, weight, bias if bias is not None else weight, out, parts, tickets, word,
        rows, n, k, x.stride(0), weight.stride(0), out.stride(0), split,
        HAS_BIAS=bias is not None, SPLIT=split > 1, ARGMAX=argmax_word is not None,
        EVEN_K=k % config.block_k == 0,
        BLOCK_M=block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32", PREFETCH_K=prefetch,
        LINE=line,
        num_warps=config.num_warps, num_stages=config.num_stages, **launch.options(),
    )  # fmt: skip
    return out
