"""Paged decode attention: one new query token per sequence against its cached context.

Design: a program owns (sequence, KV head, split). It loads the query rows of every query head
that shares the KV head (grouped-query attention: the KV tile is read once for the whole group,
padded to 16 rows so the scores are one `tl.dot`), walks its split of the context in tiles of
BLOCK_N tokens, looking each token's block up in the sequence's block table, and keeps an
online softmax (running max `m`, sum `l_sum`, weighted values `acc`) in float32 with base-2
exponents. The context is cut into `num_splits` equal parts (rounded to whole tiles) inside the
kernel, so the grid depends only on the batch size and can be captured in a CUDA graph; short
contexts leave the last splits empty, and those programs return at once (the combine works out
the same chunks and reads only the filled splits, a few at a time: on an H100, a 128-token
context cut 32 ways then costs what it does cut 4 ways). With more than one split, each writes its
normalized partial output and log-sum-exp, and a second kernel combines the splits (combining
in the decode kernel, the last split to finish taking a ticket from an atomic counter, measured
1.8 us a layer slower on an H100: every program then pays a release fence and a barrier).

`paged_decode_qkv` folds in the step before attention too (FUSED): the program reads its query
heads straight from the fused qkv projection and applies the optional per-head RMSNorm (Qwen3)
and rope in registers, and the new token's K too (before its loop, so it is ready without a
wait); the program whose split holds that token (the last context position) stores its K and V
into the cache and adds it to its softmax from registers rather than reading it back. One kernel
per layer instead of two (on an H100, Qwen3-0.6B decode-1: 5.9 us against 4.1 + 2.4), with the
same rounding as `qk_rope_store`.

Launched with PDL, a program first pulls the first PREFETCH_TILES tiles of its context into L2
and only then waits for the kernel ahead's writes: the tail of that kernel overlaps the first
reads of this one. (The step's metadata was written by its first kernels, complete before any
later one launches, and the cached context by earlier steps.) The fused kernel also loads its
first tile of cached context, every token but the new one, into registers before the wait. The
split combine lets the kernel after it (the o projection) launch before its own wait, so that
kernel's weight loads overlap attention.

A sequence with context length 0 (a padding row of a graph batch) gets a zero output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait, prefetch_l2
from ferrum.kernels.rotary import token_tables

LOG2E = 1.4426950408889634  # scores are scaled by log2(e) so the softmax can use exp2
MAX_SPLITS = 32  # most parts one sequence's context is cut into
MIN_GROUP_ROWS = 16  # tl.dot needs at least 16 rows: the query group is padded to this
DEFAULT_SMS = 16  # multiprocessor count assumed off CUDA (interpreter runs)


@triton.jit
def _norm_rope(x, xp, rstd, w, wp, sign, c, s, dt: tl.constexpr, QK_NORM: tl.constexpr,
               ROUND: tl.constexpr):  # fmt: skip
    """RMSNorm (optional) and rope of whole heads: `xp` is `x` at the rotary partner index
    (d + D/2) mod D, `sign` -1 on the first half; rounds where the torch layers round."""
    if QK_NORM:
        x, xp = x * rstd, xp * rstd
        if ROUND:
            x, xp = x.to(dt).to(tl.float32), xp.to(dt).to(tl.float32)
        x, xp = x * w, xp * wp
        if ROUND:  # the norm's output is a tensor of the model dtype
            x, xp = x.to(dt).to(tl.float32), xp.to(dt).to(tl.float32)
    a, b = x * c, sign * xp * s
    if ROUND:
        a, b = a.to(dt).to(tl.float32), b.to(dt).to(tl.float32)
    return a + b


@triton.jit
def _attend_tile(q, k, v, pmask, m, l_sum, acc, scale_log2, DOT_PRECISION: tl.constexpr):
    """One context tile into the online softmax: (m, l_sum, acc) updated."""
    scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2
    scores = tl.where(pmask[None, :], scores, float("-inf"))  # (BLOCK_G, BLOCK_N)
    m_new = tl.maximum(m, tl.max(scores, 1))
    alpha = tl.exp2(m - m_new)
    p = tl.exp2(scores - m_new[:, None])
    l_sum = l_sum * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_sum, acc


@triton.jit
def _split_chunk(ctx, num_splits, BLOCK_N: tl.constexpr):
    """Context tokens per split: equal parts rounded up to whole tiles (the decode kernel cuts
    the context so, the combine works out from it which splits hold any)."""
    return tl.cdiv(tl.cdiv(ctx, num_splits), BLOCK_N) * BLOCK_N


@triton.jit(do_not_specialize=["stride_tab", "num_splits"])  # one compile for every batch
def _decode_kernel(
    q_ptr,  # (T, H, D) queries; FUSED: the (T, H + 2*Hkv, D) qkv projection
    k_cache,
    v_cache,
    out_ptr,
    part_o,
    part_lse,
    cu_q,
    ctx_lens,
    tables,
    seq_ids,
    cos_ptr,  # FUSED: (T, D) rope tables, q/k norm weights (D,), (T,) cache slots
    sin_ptr,
    qw_ptr,
    kw_ptr,
    slot_ptr,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_cb,
    stride_cs,
    stride_ch,
    stride_tab,
    stride_ct,
    num_heads,
    num_kv_heads,
    block_size,
    scale_log2,
    num_splits,
    eps,
    G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_SEQ_IDS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    FUSED: tl.constexpr,
    QK_NORM: tl.constexpr,
    ROUND: tl.constexpr,
    PREFETCH_TILES: tl.constexpr,  # with USE_PDL: context tiles pulled into L2 before the wait
    LINE: tl.constexpr,  # cache elements per 128-byte line
    PRELOAD_TILE: tl.constexpr,  # FUSED: the first cached tile loaded before the wait
    USE_PDL: tl.constexpr,
):
    if USE_PDL and PREFETCH_TILES == 0:
        gdc_wait()  # launched before the kernel ahead of it is done: wait for its writes
        gdc_launch_dependents()
    i = tl.program_id(0)
    hkv = tl.program_id(1)
    split = tl.program_id(2)
    if HAS_SEQ_IDS:  # noqa: SIM108 (a constexpr branch)
        s = tl.load(seq_ids + i).to(tl.int64)
    else:
        s = i.to(tl.int64)
    row = tl.load(cu_q + s + 1).to(tl.int64) - 1  # the sequence's one (last) query row
    ctx = tl.load(ctx_lens + s).to(tl.int32)
    chunk = _split_chunk(ctx, num_splits, BLOCK_N)
    start = split * chunk
    end = tl.minimum(start + chunk, ctx)
    if (start >= ctx) & (num_splits > 1):
        return  # an empty split (a short context): the combine reads only the splits before it
    if USE_PDL and PREFETCH_TILES > 0:
        # The step's metadata and the cached context were written before the kernel ahead
        # started (it launches this one only after its own wait), so while it finishes, the
        # first tiles of this program's context go to L2 (a hint: nothing is read yet), then
        # the wait for its writes (the new token's K/V, the queries).
        pf_pos = start + tl.arange(0, PREFETCH_TILES * BLOCK_N)
        pf_mask = pf_pos < end
        pf_blk = tl.load(tables + s * stride_tab + pf_pos // block_size, mask=pf_mask, other=0)
        pf_off = pf_blk.to(tl.int64) * stride_cb + (pf_pos % block_size) * stride_cs
        pf_off += hkv * stride_ch
        lines = pf_off[:, None] + tl.arange(0, BLOCK_D // LINE)[None, :] * LINE
        lines = tl.where(pf_mask[:, None], lines, 0)
        prefetch_l2(k_cache + lines)
        prefetch_l2(v_cache + lines)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    gmask = g < G
    dmask = d < D
    table = tables + s * stride_tab
    if PRELOAD_TILE:  # FUSED: the cached tokens (all but the new one) are older than this step
        pos0 = start + tl.arange(0, BLOCK_N)
        pmask0 = pos0 < tl.minimum(end, ctx - 1)
        blk0 = tl.load(table + pos0 // block_size, mask=pmask0, other=0).to(tl.int64)
        off0 = blk0 * stride_cb + (pos0 % block_size) * stride_cs + hkv * stride_ch
        kv_mask0 = pmask0[:, None] & dmask[None, :]
        k0 = tl.load(k_cache + off0[:, None] + d[None, :], mask=kv_mask0, other=0.0)
        v0 = tl.load(v_cache + off0[:, None] + d[None, :], mask=kv_mask0, other=0.0)
    if USE_PDL and PREFETCH_TILES > 0:
        gdc_wait()
        gdc_launch_dependents()

    heads = hkv * G + g
    qmask = gmask[:, None] & dmask[None, :]
    q_row = q_ptr + row * stride_qt
    q = tl.load(q_row + heads[:, None] * stride_qh + d[None, :], mask=qmask, other=0.0)
    loop_end = end
    if FUSED:  # q = rope(norm(q)) here; the new token (position ctx - 1) is added from registers
        dt = q_ptr.dtype.element_ty
        dp = (d + D // 2) % D  # rotary partner
        sign = tl.where(d < D // 2, -1.0, 1.0)
        c = tl.load(cos_ptr + row * stride_ct + d).to(tl.float32)
        sn = tl.load(sin_ptr + row * stride_ct + d).to(tl.float32)
        w = c  # unused without the q/k norm
        wp = c
        if QK_NORM:
            w = tl.load(qw_ptr + d).to(tl.float32)
            wp = tl.load(qw_ptr + dp).to(tl.float32)
        qf = q.to(tl.float32)
        qp = tl.load(q_row + heads[:, None] * stride_qh + dp[None, :], mask=qmask, other=0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(qf * qf, 1) / D + eps)
        q = _norm_rope(
            qf, qp.to(tl.float32), rstd[:, None], w[None, :], wp[None, :], sign[None, :],
            c[None, :], sn[None, :], dt, QK_NORM, ROUND,
        ).to(dt)  # fmt: skip
        # the new token's K and V, loaded and rotated by every program before its loop so the
        # one that holds the token (known only after the loop) has them without a wait
        k_row = q_row + (num_heads + hkv) * stride_qh
        kf = tl.load(k_row + d).to(tl.float32)
        kw = c  # unused without the q/k norm
        kwp = c
        if QK_NORM:
            kw = tl.load(kw_ptr + d).to(tl.float32)
            kwp = tl.load(kw_ptr + dp).to(tl.float32)
        rstd_k = 1.0 / tl.sqrt(tl.sum(kf * kf, 0) / D + eps)
        k_new = _norm_rope(
            kf, tl.load(k_row + dp).to(tl.float32), rstd_k, kw, kwp, sign, c, sn, dt, QK_NORM,
            ROUND,
        ).to(dt)  # fmt: skip
        v_new = tl.load(q_row + (num_heads + num_kv_heads + hkv) * stride_qh + d)
        loop_end = tl.minimum(end, ctx - 1)
    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_sum = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    first = start
    if PRELOAD_TILE:
        if start < loop_end:  # (a split of only the new token has no cached tile)
            m, l_sum, acc = _attend_tile(
                q, k0, v0, pmask0, m, l_sum, acc, scale_log2, DOT_PRECISION
            )
        first = start + BLOCK_N
    for n in range(first, loop_end, BLOCK_N):
        pos = n + tl.arange(0, BLOCK_N)
        pmask = pos < loop_end
        blk = tl.load(table + pos // block_size, mask=pmask, other=0).to(tl.int64)
        off = blk * stride_cb + (pos % block_size) * stride_cs + hkv * stride_ch
        kv_mask = pmask[:, None] & dmask[None, :]
        k = tl.load(k_cache + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_cache + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        m, l_sum, acc = _attend_tile(q, k, v, pmask, m, l_sum, acc, scale_log2, DOT_PRECISION)

    if FUSED:  # noqa: SIM102 (a constexpr branch around a runtime one)
        if (start < ctx) & (ctx <= end):  # this split holds the new token
            slot = tl.load(slot_ptr + row)
            if slot >= 0:
                dst = (slot // block_size) * stride_cb + (slot % block_size) * stride_cs
                dst += hkv * stride_ch + d
                tl.store(k_cache + dst, k_new.to(k_cache.dtype.element_ty))
                tl.store(v_cache + dst, v_new.to(v_cache.dtype.element_ty))
            # the same online-softmax step as a tile of one token
            s_new = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], 1) * scale_log2
            m_new = tl.maximum(m, s_new)
            alpha = tl.exp2(m - m_new)
            p = tl.exp2(s_new - m_new)
            l_sum = l_sum * alpha + p
            p = p.to(v_new.dtype).to(tl.float32)
            acc = acc * alpha[:, None] + p[:, None] * v_new.to(tl.float32)[None, :]
            m = m_new

    has = l_sum > 0
    o = acc / tl.where(has, l_sum, 1.0)[:, None]
    out_mask = gmask[:, None] & dmask[None, :]
    if num_splits == 1:
        tl.store(
            out_ptr + row * stride_ot + heads[:, None] * stride_oh + d[None, :],
            o.to(out_ptr.dtype.element_ty),
            mask=out_mask,
        )
    else:
        part = (i * num_heads + heads) * num_splits + split  # (BLOCK_G,)
        tl.store(part_o + part[:, None] * D + d[None, :], o, mask=out_mask)
        lse = tl.where(has, m + tl.log2(tl.where(has, l_sum, 1.0)), float("-inf"))
        tl.store(part_lse + part, lse, mask=gmask)


@triton.jit(do_not_specialize=["num_splits"])
def _reduce_kernel(
    out_ptr,
    part_o,
    part_lse,
    cu_q,
    ctx_lens,
    seq_ids,
    stride_ot,
    stride_oh,
    num_heads,
    num_splits,
    D: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    LANES: tl.constexpr,
    HAS_SEQ_IDS: tl.constexpr,
    EARLY_TRIGGER: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:  # launched before the kernel ahead of it is done: wait for its writes
        if EARLY_TRIGGER:
            # let the kernel after this one start now, while decode attention runs: its wait
            # still waits for this kernel (which waits for attention), but what it may do
            # before that wait (load weights) overlaps attention, which leaves memory idle
            gdc_launch_dependents()
            gdc_wait()
        else:
            gdc_wait()
            gdc_launch_dependents()
    i = tl.program_id(0)
    h = tl.program_id(1)
    if HAS_SEQ_IDS:  # noqa: SIM108 (a constexpr branch)
        s = tl.load(seq_ids + i).to(tl.int64)
    else:
        s = i.to(tl.int64)
    row = tl.load(cu_q + s + 1).to(tl.int64) - 1
    # the splits the decode kernel filled: its chunks hold whole tiles, the rest are empty
    ctx = tl.load(ctx_lens + s).to(tl.int32)
    used = tl.cdiv(ctx, tl.maximum(_split_chunk(ctx, num_splits, BLOCK_N), 1))
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    base = (i * num_heads + h) * num_splits
    # LANES splits at a time, merged as an online softmax: a short context fills few splits,
    # and a tile of all MAX_SPLITS would still issue (masked) loads for the empty ones
    m = tl.full([1], float("-inf"), tl.float32)
    total = tl.zeros([1], tl.float32)
    o = tl.zeros([BLOCK_D], tl.float32)
    for s0 in tl.range(0, used, LANES, num_stages=1):
        sp = s0 + tl.arange(0, LANES)
        smask = sp < used
        lse = tl.load(part_lse + base + sp, mask=smask, other=float("-inf"))
        m_new = tl.maximum(m, tl.max(lse, 0))
        alpha = tl.where(m == float("-inf"), 0.0, tl.exp2(m - m_new))
        w = tl.where(lse == float("-inf"), 0.0, tl.exp2(lse - m_new))  # empty splits weigh 0
        part = tl.load(
            part_o + (base + sp)[:, None] * D + d[None, :],
            mask=smask[:, None] & dmask[None, :],
            other=0.0,
        )
        total = total * alpha + tl.sum(w, 0)
        o = o * alpha + tl.sum(w[:, None] * part, 0)
        m = m_new
    o = o / tl.where(total > 0, total, 1.0)
    tl.store(
        out_ptr + row * stride_ot + h * stride_oh + d, o.to(out_ptr.dtype.element_ty), mask=dmask
    )


@dataclass
class DecodeConfig:
    """Launch shape of the decode kernel (the numerics do not depend on it)."""

    # measured best on an H100 over the decode-1, 64-concurrent and offline-256 shapes
    # (gpu_fastpath --tune: 0.128 ms against 0.142 for 64 sequences of 1280 tokens)
    block_n: int = 32  # context tokens per tile
    num_warps: int = 4
    num_stages: int = 4
    programs_per_sm: int = 2  # splits grow until the grid has this many programs per SM
    # with PDL: context tiles a program pulls into L2 before its wait (H100, same call,
    # Llama-3.1-8B: decode-1 176.7 -> 177.7 tok/s, 64-concurrent 4,995 -> 5,004)
    prefetch_tiles: int = 2
    # fused (decode steps of a few sequences): the first tile of cached context loaded into
    # registers before the wait too, so the kernel's first scores need no load after it (H100,
    # decode-1, same process: Qwen3-0.6B 1,130-1,137 -> 1,158-1,181 tok/s, Llama-3.1-8B
    # 188.6-188.7 -> 187.9-188.7)
    preload_tile: bool = True
    # fused: warps of a program. Its few programs (a split of one tile each, at a short
    # context) run beside the o projection's early weight loads; H100, decode-1 graph replay
    # at 256 tokens, builds interleaved in one process, two sessions: Llama-3.1-8B 5,241-5,244
    # -> 5,232-5,236 us (190.2-190.4 -> 190.4-190.6 tok/s), Qwen3-0.6B 828-830 -> 825-826 us.
    # (--tune times the unfused kernel alone, and leaves this.)
    fused_num_warps: int = 8


CONFIG = DecodeConfig()  # what every launch uses; `ferrum.bench.gpu_fastpath` can tune it
# with PDL: the split combine lets the kernel after it launch before its own wait
REDUCE_EARLY_TRIGGER = True
# the combine reads LANES splits at a time, in one warp: a 256-token context fills 8 of a
# sequence's 32 splits. H100, decode-1 graph replay at 256 tokens, builds interleaved in one
# process, Llama-3.1-8B: all 32 at once with 4 warps 5,264-5,268 us; 8 at once with 4 warps
# 5,250-5,254, 2 warps 5,250-5,253, 1 warp 5,241 (189.6 -> 190.3 tok/s; the combine 2.3 -> 1.5
# us a layer); 4 or 16 at once 5,275 / 5,262. Qwen3-0.6B: 855-859 -> 831-833 us (1,157 -> 1,184)
REDUCE_LANES = 8
REDUCE_WARPS = 1


def num_splits_for(num_seqs: int, num_kv_heads: int, num_sms: int) -> int:
    """Splits per sequence: the fewest (a power of two, at most MAX_SPLITS) that give about
    CONFIG.programs_per_sm programs per multiprocessor, so a small batch still reads the cache
    with the whole chip."""
    splits = 1
    target = CONFIG.programs_per_sm * num_sms
    while splits < MAX_SPLITS and num_seqs * num_kv_heads * splits < target:
        splits *= 2
    return splits


def device_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return DEFAULT_SMS
    return torch.cuda.get_device_properties(device).multi_processor_count


def paged_decode_attention(
    q: torch.Tensor,  # (T, H, D): row cu_seqlens_q[s+1]-1 is sequence s's query
    kv_cache: torch.Tensor,  # (2, num_blocks, block_size, Hkv, D)
    out: torch.Tensor,  # (T, H, D): the sequences' rows are written
    cu_seqlens_q: torch.Tensor,  # (S+1,)
    context_lens: torch.Tensor,  # (S,)
    block_tables: torch.Tensor,  # (S, max_blocks) int32
    scale: float,
    num_splits: int,
    seq_ids: torch.Tensor | None = None,  # (N,): the sequences to compute (default: all S)
) -> None:
    """Attention of one query token per sequence over its paged context, into `out`."""
    if q.stride(2) != 1:
        q = q.contiguous()
    _launch(q, q.shape[1], kv_cache, out, cu_seqlens_q, context_lens, block_tables, scale,
            num_splits, seq_ids, None)  # fmt: skip


def paged_decode_qkv(
    qkv: torch.Tensor,  # (S, H + 2*Hkv, D): the fused projection of one new token per sequence
    cos: torch.Tensor,  # (S, 1, D) or (S, D), in qkv's dtype
    sin: torch.Tensor,
    q_weight: torch.Tensor | None,  # (D,) q norm weight; None: no q/k norm
    k_weight: torch.Tensor | None,
    eps: float,
    num_heads: int,
    kv_cache: torch.Tensor,  # (2, num_blocks, block_size, Hkv, D)
    slots: torch.Tensor,  # (S,) int64 cache slot of each new token; negative: store nothing
    cu_seqlens_q: torch.Tensor,  # (S+1,): 0, 1, ..., S
    context_lens: torch.Tensor,  # (S,) including the new token
    block_tables: torch.Tensor,
    scale: float,
    num_splits: int,
) -> torch.Tensor:  # (S, H, D)
    """A decode step's attention from the qkv projection: q/k norm, rope, the K/V store and
    attention in one kernel (what `qk_rope_store` + `paged_decode_attention` compute)."""
    tokens, width, dim = qkv.shape
    if dim & (dim - 1) or dim < 16:
        raise ValueError(f"paged_decode_qkv needs a power-of-two head dim, got {dim}")
    if qkv.stride(2) != 1:
        qkv = qkv.contiguous()
    cos, sin = token_tables(cos, sin, tokens, dim)
    out = torch.empty((tokens, num_heads, dim), dtype=qkv.dtype, device=qkv.device)
    norm = (q_weight, k_weight, eps) if q_weight is not None and k_weight is not None else None
    _launch(qkv, num_heads, kv_cache, out, cu_seqlens_q, context_lens, block_tables, scale,
            num_splits, None, (cos, sin, norm, slots))  # fmt: skip
    return out


def _launch(q, num_heads, kv_cache, out, cu_seqlens_q, context_lens, block_tables, scale,
            num_splits, seq_ids, fused) -> None:  # fmt: skip
    head_dim = q.shape[2]
    num_kv_heads = kv_cache.shape[3]
    group = num_heads // num_kv_heads
    num = seq_ids.shape[0] if seq_ids is not None else context_lens.shape[0]
    if num == 0:
        return
    k_cache, v_cache = kv_cache[0], kv_cache[1]  # (num_blocks, block_size, Hkv, D)
    if not 1 <= num_splits <= MAX_SPLITS:
        raise ValueError(f"num_splits must be in [1, {MAX_SPLITS}], got {num_splits}")
    # float32 even when unused (one split), so the kernel compiles once for any split count
    part_o = part_lse = torch.empty(1, device=q.device, dtype=torch.float32)
    if num_splits > 1:
        part_o = torch.empty(
            num, num_heads, num_splits, head_dim, device=q.device, dtype=torch.float32
        )
        part_lse = torch.empty(num, num_heads, num_splits, device=q.device, dtype=torch.float32)
    ids = seq_ids if seq_ids is not None else cu_seqlens_q
    cos = sin = q_w = k_w = slots = part_o  # placeholders where not FUSED
    eps, qk_norm = 0.0, False
    if fused is not None:
        cos, sin, norm, slots = fused
        if norm is not None:
            q_w, k_w, eps = norm
            qk_norm = True
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    _decode_kernel[(num, num_kv_heads, num_splits)](
        q, k_cache, v_cache, out, part_o, part_lse,
        cu_seqlens_q, context_lens, block_tables, ids, cos, sin, q_w, k_w, slots,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        cos.stride(0), num_heads, num_kv_heads, kv_cache.shape[2], scale * LOG2E, num_splits,
        eps,
        G=group, D=head_dim, BLOCK_G=max(MIN_GROUP_ROWS, triton.next_power_of_2(group)),
        BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_N=CONFIG.block_n,
        HAS_SEQ_IDS=seq_ids is not None, DOT_PRECISION=precision,
        FUSED=fused is not None, QK_NORM=qk_norm, ROUND=q.dtype != torch.float32,
        # not for a subset of the batch: its seq_ids may be the kernel ahead's output
        PREFETCH_TILES=CONFIG.prefetch_tiles if seq_ids is None else 0,
        # a prefetch per 128-byte line, or per head row where a row is shorter
        LINE=min(128 // kv_cache.element_size(), triton.next_power_of_2(head_dim)),
        PRELOAD_TILE=fused is not None and CONFIG.preload_tile,
        num_warps=CONFIG.num_warps if fused is None else CONFIG.fused_num_warps,
        num_stages=CONFIG.num_stages, **launch.options(),
    )  # fmt: skip
    if num_splits > 1:
        _reduce_kernel[(num, num_heads)](
            out, part_o, part_lse, cu_seqlens_q, context_lens, ids,
            out.stride(0), out.stride(1), num_heads, num_splits,
            D=head_dim, BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_N=CONFIG.block_n,
            LANES=REDUCE_LANES, HAS_SEQ_IDS=seq_ids is not None,
            EARLY_TRIGGER=REDUCE_EARLY_TRIGGER, num_warps=REDUCE_WARPS, **launch.options(),
        )  # fmt: skip
