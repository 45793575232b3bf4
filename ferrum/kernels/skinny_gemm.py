"""out = f(x) @ W.T (+ bias) for a few rows of x (decode steps of up to BLOCK_M sequences), with
the operation before the matmul done inside it.

A decode step of a small model is a chain of microsecond-scale kernels; its linear layers are
matrix-vector products that read each weight once, and cuBLAS spends about as long starting them as
streaming their bytes. Here each program owns BLOCK_N output columns, streams its rows of W in
BLOCK_K slices and multiplies them with x padded to BLOCK_M rows on the tensor cores (a single row:
plain products and sums, so BLOCK_N can be as narrow as 8 and small N still fills the chip); and
the prologue that would be a kernel of its own is folded in, recomputed by every program on the
small x slice it needs:

- "none": x as it is;
- "rmsnorm": RMSNorm of x (after adding `residual`, when given: program 0 also writes the new
  residual stream), as the decoder block's norms before the qkv and gate-up projections;
- "silu_mul": x is [gate | up] and the input is silu(gate) * up, the MLP's activation before
  the down projection.

Rounding follows the separate kernels (norm.py, activation.py): in a low-precision dtype the
prologue's output is rounded to that dtype before the matmul, as the torch path stores it.

Launched with PDL (decode steps on Hopper), a one-row program loads its first `preload` K slices
of W into registers before it waits for the kernel ahead (W does not depend on that kernel), and
lets the kernel after it launch at once. So the o projection streams a half of its weight while
decode attention, which leaves memory idle, still runs (the split combine between them lets it
launch early too; those loads also delay attention's own), and every projection's first loads
fill the tail of the one ahead. The
registers bound it: 4 slices of 8 x 512 take 64 registers a thread; 8 slices spill.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait, prefetch_l2

PROLOGUES = {"none": 0, "rmsnorm": 1, "silu_mul": 2}
MAX_ROWS = 16  # BLOCK_M: tl.dot needs 16 rows, so 2..16 rows are padded to it (1 row is not)
PROGRAMS = 128  # about one program per multiprocessor of an H100 (132)


# PDL prefetch: one per 128-byte line of bf16 (float32 weights: every other line), over the
# PREFETCH_K columns of W after the preloaded ones (what the resident programs prefetch together
# fits L2)
LINE = tl.constexpr(64)
PREFETCH_K = 2048
PREFETCH_MAX_BYTES = 16 * 2**20
# `preload` of the decoder's one-row projections, and whether a one-row GEMV lets the kernel
# after it launch before its own wait (so that kernel's preload overlaps this one's tail). H100,
# Llama-3.1-8B decode-1, builds interleaved in one process: none 180.4-180.6 tok/s; o projection
# 4 slices 183.4-183.6; and the others 2: 185.9-186.0, 4: 185.9-187.2, 4 with the early launch
# 186.3-187.6; 8: 176.4 (registers spill). Qwen3-0.6B: 1,005-1,063 -> 1,100-1,140.
ATTENTION_PRELOAD = 4
CHAIN_PRELOAD = 4
# the o projection's K loop pipelined 4 deep, not 3 (H100, Llama-3.1-8B decode-1 graph replay
# at 256 tokens of context, same process: 5,252 -> 5,234-5,237 us; its time after attention
# grows 0.5 us a layer but decode attention, which its preload slows, shrinks 0.9 us)
ATTENTION_STAGES = 4
EARLY_TRIGGER = True
NORM_UNROLL = 8
ROW_STAGES = 3  # a one-row GEMV's K loop pipelining, unless the caller asks for another


@triton.jit
def prologue_input(x_ptr, res_ptr, res_out_ptr, nw_ptr, m, mmask, k, pid, stride_xm, K, rstd,
              PROLOGUE: tl.constexpr, HAS_RESIDUAL: tl.constexpr, ROUND: tl.constexpr,
              dt: tl.constexpr):  # fmt: skip
    """The matmul's input at columns `k` (a (1, BLOCK_K) slice, or (S, BLOCK_K) slices of one
    row): the prologue applied to x there, in dt (rmsnorm with a residual: program 0 also stores
    the new residual stream). The logits kernel reads its folded final norm through it too."""
    kmask = k < K
    mask = mmask & kmask
    if PROLOGUE == 2:
        gate = tl.load(x_ptr + m * stride_xm + k, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(x_ptr + m * stride_xm + K + k, mask=mask, other=0.0).to(tl.float32)
        act = gate / (1.0 + tl.exp(-gate))
        if ROUND:  # silu(gate) is a tensor of dt before the product
            act = act.to(dt).to(tl.float32)
        a = (act * up).to(dt)
    else:
        xs = tl.load(x_ptr + m * stride_xm + k, mask=mask, other=0.0).to(tl.float32)
        if PROLOGUE == 1:
            if HAS_RESIDUAL:
                xs = xs + tl.load(res_ptr + m * K + k, mask=mask, other=0.0).to(tl.float32)
                xs = xs.to(dt).to(tl.float32)
                if pid == 0:
                    tl.store(res_out_ptr + m * K + k, xs.to(dt), mask=mask)
            y = xs * rstd
            if ROUND:
                y = y.to(dt).to(tl.float32)
            y = y * tl.load(nw_ptr + k, mask=kmask, other=0.0).to(tl.float32)
            a = y.to(dt)
        else:
            a = xs.to(dt)
    return a


@triton.jit
def _preloaded_products(x_ptr, res_ptr, res_out_ptr, nw_ptr, m, mmask, k_pre, w_pre, pid,
                        stride_xm, K, rstd, PROLOGUE: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                        ROUND: tl.constexpr, dt: tl.constexpr):  # fmt: skip
    """One row: the products of the preloaded slices `w_pre` (BLOCK_N, P, BLOCK_K) with the
    inputs at their columns `k_pre` (P, BLOCK_K), summed over the slices: (BLOCK_N, BLOCK_K)."""
    a_pre = prologue_input(x_ptr, res_ptr, res_out_ptr, nw_ptr, m, mmask, k_pre, pid, stride_xm, K,
                      rstd, PROLOGUE, HAS_RESIDUAL, ROUND, dt)  # fmt: skip
    return tl.sum(a_pre.to(tl.float32)[None, :, :] * w_pre.to(tl.float32), 1)


@triton.jit
def _skinny_gemm_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    out_ptr,
    res_ptr,
    res_out_ptr,
    nw_ptr,
    M,
    N,
    K,  # columns of W: the prologue's output width (half of x's for silu_mul)
    stride_xm,
    stride_wn,
    stride_om,
    eps,
    PROLOGUE: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ROUND: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    USE_PDL: tl.constexpr,
    PREFETCH: tl.constexpr,  # with USE_PDL: columns of W prefetched into L2 before the wait
    ROTATE: tl.constexpr,  # start the K loop at slice pid mod K/BLOCK_K (and wrap around)
    LOOP_STAGES: tl.constexpr,  # software pipelining of the K loop (1: none)
    PRELOAD: tl.constexpr,  # one row: K slices of W loaded before the wait (0 or a power of 2)
    EARLY_TRIGGER: tl.constexpr,  # with USE_PDL: let the next kernel launch before the wait
    NORM_UNROLL: tl.constexpr,  # rmsnorm: the mean-square pass over x, unrolled this much
    PRELOAD_LAST: tl.constexpr,  # the preloaded slices multiplied after the loop
):
    pid = tl.program_id(0)
    dt = out_ptr.dtype.element_ty
    m = tl.arange(0, BLOCK_M)[:, None]
    mmask = m < M
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = n < N
    kk = tl.arange(0, BLOCK_K)[None, :]
    slices = tl.cdiv(K, BLOCK_K)
    first = pid % slices if ROTATE else 0
    if USE_PDL:  # launched before the kernel ahead of it is done
        if EARLY_TRIGGER:
            gdc_launch_dependents()
        if PREFETCH > 0:
            # W does not depend on that kernel: pull the PREFETCH columns of this program's rows
            # that follow the preloaded ones into L2 while it finishes (one prefetch per
            # 128-byte line)
            lines = tl.arange(0, BLOCK_K // LINE)[None, :] * LINE
            rows = w_ptr + tl.where(nmask, n, 0)[:, None] * stride_wn
            pre = PRELOAD * BLOCK_K
            for k0 in range(pre, tl.minimum(K, pre + PREFETCH), BLOCK_K):  # in the loop's order
                k1 = ((first + k0 // BLOCK_K) % slices) * BLOCK_K
                prefetch_l2(rows + tl.minimum(k1 + lines, K - 1))
    # PRELOAD: this program's first slices of W (one row), in the loop's order, loaded into
    # registers before the wait: a kernel ahead that leaves memory idle (decode attention)
    # hides them
    if PRELOAD > 0:
        k_pre = ((first + tl.arange(0, PRELOAD)[:, None]) % slices) * BLOCK_K + kk  # (P, BK)
        w_pre = tl.load(
            w_ptr + n[:, None, None] * stride_wn + k_pre[None, :, :],
            mask=nmask[:, None, None] & (k_pre < K)[None, :, :],
            other=0.0,
        )  # (BLOCK_N, PRELOAD, BLOCK_K)
    if USE_PDL:
        # then wait for its writes before touching x
        gdc_wait()
        if not EARLY_TRIGGER:
            gdc_launch_dependents()

    rstd = tl.zeros([BLOCK_M], tl.float32)  # rmsnorm's, computed next
    if PROLOGUE == 1:  # the rows' mean squares first: one pass over x (+ residual)
        sq = tl.zeros([BLOCK_M, BLOCK_K], tl.float32)
        # unrolled: the slices' loads go out together, not one L2 round trip after another
        # (H100, Llama-3.1-8B decode-1, same process: 187.5 / 186.4 -> 188.7 / 187.6 tok/s;
        # pipelined instead, 2 or 3 stages: 179.6 / 185.4)
        for k0 in tl.range(0, K, BLOCK_K, loop_unroll_factor=NORM_UNROLL):
            k = k0 + kk
            mask = mmask & (k < K)
            xs = tl.load(x_ptr + m * stride_xm + k, mask=mask, other=0.0).to(tl.float32)
            if HAS_RESIDUAL:
                xs = xs + tl.load(res_ptr + m * K + k, mask=mask, other=0.0).to(tl.float32)
                xs = xs.to(dt).to(tl.float32)  # the residual stream is stored in dt
            sq += xs * xs
        rstd = 1.0 / tl.sqrt(tl.sum(sq, 1) / K + eps)  # (BLOCK_M,)

    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    # one row: elementwise products summed over K only once, after the loop (a reduction across
    # the threads every slice would stall the stream of W)
    acc_row = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    if PRELOAD > 0 and not PRELOAD_LAST:  # the slices loaded before the wait
        acc_row += _preloaded_products(
            x_ptr, res_ptr, res_out_ptr, nw_ptr, m, mmask, k_pre, w_pre, pid, stride_xm, K,
            rstd[:, None], PROLOGUE, HAS_RESIDUAL, ROUND, dt,
        )  # fmt: skip
    # ROTATE: programs that run together read different slices (all starting at slice 0, their
    # loads pile onto the same memory channels); LOOP_STAGES > 1: the next slices' loads are in
    # flight (async copies) while one is multiplied
    for i in tl.range(PRELOAD, slices, num_stages=LOOP_STAGES):
        k = ((first + i) % slices) * BLOCK_K + kk
        a = prologue_input(x_ptr, res_ptr, res_out_ptr, nw_ptr, m, mmask, k, pid, stride_xm, K,
                      rstd[:, None], PROLOGUE, HAS_RESIDUAL, ROUND, dt)  # fmt: skip
        w = tl.load(
            w_ptr + n[:, None] * stride_wn + k, mask=nmask[:, None] & (k < K), other=0.0
        )  # (BLOCK_N, BLOCK_K)
        if BLOCK_M == 1:  # one row: products (no 16-row padding, any BLOCK_N)
            acc_row += a.to(tl.float32) * w.to(tl.float32)
        else:
            acc += tl.dot(a, tl.trans(w.to(dt)), input_precision=DOT_PRECISION)
    if PRELOAD > 0 and PRELOAD_LAST:
        acc_row += _preloaded_products(
            x_ptr, res_ptr, res_out_ptr, nw_ptr, m, mmask, k_pre, w_pre, pid, stride_xm, K,
            rstd[:, None], PROLOGUE, HAS_RESIDUAL, ROUND, dt,
        )  # fmt: skip
    if BLOCK_M == 1:
        acc = tl.sum(acc_row, 1)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + n, mask=nmask, other=0.0).to(tl.float32)[None, :]
    tl.store(out_ptr + m * stride_om + n[None, :], acc.to(dt), mask=mmask & nmask[None, :])


def one_row_block_n(prologue: str, n: int) -> int:
    """Output columns a program of a one-row GEMV owns by default: 8, so that small N still
    fills the chip; 16 for a wide silu_mul (a large model's down projection), whose programs
    read the long intermediate rows: 8 wide, its grid outgrows what is resident at once (3
    programs of 8 warps an SM) and the programs left over stream alone at the end, 16 wide it
    is one wave (H100, Llama-3.1-8B decode-1 graph replay, same process: 5,288-5,291 ->
    5,251-5,252 us)."""
    return 16 if prologue == "silu_mul" and n >= 2 * 16 * PROGRAMS else 8


def skinny_linear(
    x: torch.Tensor,  # (M, K), or (M, 2K) for silu_mul; M <= MAX_ROWS
    weight: torch.Tensor,  # (N, K)
    bias: torch.Tensor | None = None,
    prologue: str = "none",
    norm_weight: torch.Tensor | None = None,  # (K,) for rmsnorm
    eps: float = 1e-6,
    residual: torch.Tensor | None = None,  # (M, K) for rmsnorm: added to x first
    # defaults: one row, 8 columns by 512 inputs a slice, 4 warps (8 for silu_mul): within 1%
    # of the best shape for each projection of Qwen3-0.6B and Llama-3.1-8B on an H100
    # (ferrum.bench.gpu_skinny), its K loop pipelined 3 deep and rotated (H100, decode-1,
    # builds interleaved in one process: Qwen3-0.6B 1,026 -> 1,031-1,033 tok/s, Llama-3.1-8B
    # 179.8 -> 180.5-180.6; either alone is slower); more rows, the widest BLOCK_N of 16/32/64
    # that still gives every SM a program, 4 stages
    block_n: int | None = None,
    block_k: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
    rotate: bool | None = None,
    # launched with PDL: prefetch W into L2 while the kernel ahead finishes (the PREFETCH_K
    # columns after the preloaded ones); default: for weights of at most PREFETCH_MAX_BYTES
    # (larger ones stream as fast without, and the prefetches compete; on top of the o
    # projection's preload, Llama-3.1-8B decode-1 187.6 -> 184.6)
    prefetch: bool | None = None,
    # one row: this many K slices of W (rounded down to a power of two, at most the slices
    # there are) are loaded into registers before the PDL wait, the rest streamed after it
    preload: int = 0,
    # multiply the preloaded slices after the loop rather than before it, so that the loop's
    # loads start as soon as the wait is over; they stay in registers through the loop, though.
    # Default: where the loop is shorter than the preload (H100, decode-1: Qwen3-0.6B's down
    # projection, 6 slices, 1,081-1,123 -> 1,149-1,188 tok/s; Llama-3.1-8B's, 28 slices,
    # 187.5-188.7 -> 185.0-185.8; its 8-slice ones too, all together 180.7-181.1)
    preload_last: bool | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """f(x) @ weight.T + bias; with rmsnorm and a residual, (out, x + residual)."""
    rows, width = x.shape
    if rows > MAX_ROWS:
        raise ValueError(f"skinny_linear takes at most {MAX_ROWS} rows, got {rows}")
    kind = PROLOGUES[prologue]
    k = width // 2 if kind == 2 else width
    n = weight.shape[0]
    if weight.shape[1] != k or weight.stride(1) != 1:
        raise ValueError(f"weight {tuple(weight.shape)} does not take {k} inputs contiguously")
    if x.stride(1) != 1:
        x = x.contiguous()
    block_m = 1 if rows == 1 else MAX_ROWS
    narrowest = 8 if block_m == 1 else 16  # tl.dot needs 16 columns too
    if block_n is None:
        block_n = (
            one_row_block_n(prologue, n)
            if block_m == 1
            else next((b for b in (64, 32, 16) if n >= b * PROGRAMS), 16)
        )
    if block_k is None:
        block_k = 512 if block_m == 1 else 128
    if num_warps is None:
        num_warps = 8 if block_m == 1 and kind == 2 else 4
    if num_stages is None:
        num_stages = ROW_STAGES if block_m == 1 else 4
    if rotate is None:
        rotate = block_m == 1
    block_n = max(block_n, narrowest)
    if prefetch is None:
        prefetch = weight.numel() * weight.element_size() <= PREFETCH_MAX_BYTES
    slices = triton.cdiv(k, block_k)
    preload = min(max(preload, 0), slices) if block_m == 1 else 0
    if preload > 0:  # a power of two (a tl.arange), each slice loaded once
        preload = 1 << (preload.bit_length() - 1)
    if preload_last is None:
        preload_last = preload > 0 and slices < 2 * preload
    if preload == slices:
        # no K loop left to pipeline; a deeper pipeline only reserves shared memory (H100,
        # Qwen3-0.6B's o projection at 4 stages: 1.66-1.70 -> 1.79 us a layer)
        num_stages = min(num_stages, ROW_STAGES)
    out = torch.empty(rows, n, dtype=x.dtype, device=x.device)
    res_out = out
    if residual is not None:
        residual = residual.contiguous()
        res_out = torch.empty(rows, k, dtype=x.dtype, device=x.device)
    if rows:
        _skinny_gemm_kernel[(triton.cdiv(n, block_n),)](
            x, weight, bias if bias is not None else weight, out,
            residual if residual is not None else x, res_out,
            norm_weight if norm_weight is not None else weight,
            rows, n, k, x.stride(0), weight.stride(0), out.stride(0), eps,
            PROLOGUE=kind, HAS_RESIDUAL=residual is not None, HAS_BIAS=bias is not None,
            ROUND=x.dtype != torch.float32, BLOCK_M=block_m, BLOCK_N=block_n,
            BLOCK_K=block_k, DOT_PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
            PREFETCH=PREFETCH_K if prefetch else 0, ROTATE=rotate, LOOP_STAGES=num_stages,
            PRELOAD=preload, EARLY_TRIGGER=EARLY_TRIGGER, NORM_UNROLL=NORM_UNROLL,
            PRELOAD_LAST=bool(preload_last and preload), num_warps=num_warps,
            num_stages=num_stages, **launch.options(),
        )  # fmt: skip
    return out if residual is None else (out, res_out)
