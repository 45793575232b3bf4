"""Causal attention for prompt chunks over the paged cache (variable-length sequences).

Design: a program owns (sequence, tile of BLOCK_M query rows, query head). The sequence's new
queries are the last q_len of its ctx tokens (their K/V were just stored), so query j sits at
position ctx - q_len + j and sees keys 0..that position: earlier chunks and prefix-cache hits
are read back from the cache through the block table exactly like the new tokens. Keys are
walked in tiles of BLOCK_N with an online softmax in float32 (flash-attention style); the tile
loop stops at the last key the tile's last query can see. One launch covers every prefill
sequence of the step (`seq_ids`); tiles past a sequence's query count exit at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ferrum.kernels.paged_decode import LOG2E


@dataclass
class PrefillConfig:
    """Launch shape of the prefill kernel (the numerics do not depend on it)."""

    block_m: int = 64  # query rows per program
    block_n: int = 64  # keys per tile
    num_warps: int = 4
    num_stages: int = 2


# Hopper (228 KiB of shared memory a multiprocessor): 128 x 128 tiles, 8 warps, 2 stages, the
# best of gpu_prefill's shapes on an H100: Llama-3.1-8B heads, 8 x 1024-token prompts 0.318 ms
# a layer (0.352 at 64 x 64), one 8192-token prompt 1.66 ms (2.16)
HOPPER = PrefillConfig(128, 128, 8, 2)
# what every launch uses (None: HOPPER for 16-bit tensors on compute capability 9.x and later,
# else the PrefillConfig defaults, whose tiles fit smaller chips' shared memory and float32)
CONFIG: PrefillConfig | None = None


def launch_config(q: torch.Tensor) -> PrefillConfig:
    if CONFIG is not None:
        return CONFIG
    hopper = q.is_cuda and torch.cuda.get_device_capability(q.device)[0] >= 9
    if hopper and q.element_size() <= 2:  # float32 tiles of 128 x 128 need 256 KiB
        return HOPPER
    return PrefillConfig()


@triton.jit
def _tile(q, m, l_sum, acc, n, kv_end, qpos, table, k_cache, v_cache, d, dmask, hkv, block_size,
          stride_cb, stride_cs, stride_ch, scale_log2, BLOCK_N: tl.constexpr,
          DOT_PRECISION: tl.constexpr, MASKED: tl.constexpr):  # fmt: skip
    """One key tile of the online softmax; MASKED: the tile may hold keys some queries may not
    see (the causal diagonal, the context's end), else every query sees every key."""
    pos = n + tl.arange(0, BLOCK_N)
    pmask = pos < kv_end
    blk = tl.load(table + pos // block_size, mask=pmask, other=0).to(tl.int64)
    off = blk * stride_cb + (pos % block_size) * stride_cs + hkv * stride_ch
    kv_mask = pmask[:, None] & dmask[None, :]
    k = tl.load(k_cache + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
    scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2
    if MASKED:
        visible = pmask[None, :] & (pos[None, :] <= qpos[:, None])
        scores = tl.where(visible, scores, float("-inf"))  # (BLOCK_M, BLOCK_N)
    m_new = tl.maximum(m, tl.max(scores, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that see nothing yet
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(scores - m_safe[:, None])
    l_sum = l_sum * alpha + tl.sum(p, 1)
    v = tl.load(v_cache + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l_sum, acc


# the table width and the tile count change every step: one compile for all
@triton.jit(do_not_specialize=["stride_tab", "num_tiles"])
def _prefill_kernel(
    q_ptr,
    k_cache,
    v_cache,
    out_ptr,
    cu_q,
    ctx_lens,
    tables,
    seq_ids,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_cb,
    stride_cs,
    stride_ch,
    stride_tab,
    block_size,
    scale_log2,
    num_tiles,
    G: tl.constexpr,
    D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    i = tl.program_id(0)
    # the last query tiles (the most keys) first: the long programs start in the first wave
    tile = num_tiles - 1 - tl.program_id(1)
    h = tl.program_id(2)
    s = tl.load(seq_ids + i).to(tl.int64)
    q_start = tl.load(cu_q + s).to(tl.int64)
    q_len = (tl.load(cu_q + s + 1) - tl.load(cu_q + s)).to(tl.int32)
    if tile * BLOCK_M < q_len:
        ctx = tl.load(ctx_lens + s).to(tl.int32)
        first = ctx - q_len  # position of the first new query
        qi = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        qmask = qi < q_len
        qpos = first + qi
        d = tl.arange(0, BLOCK_D)
        dmask = d < D
        hkv = h // G
        q = tl.load(
            q_ptr + (q_start + qi)[:, None] * stride_qt + h * stride_qh + d[None, :],
            mask=qmask[:, None] & dmask[None, :],
            other=0.0,
        )
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_sum = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        kv_end = tl.minimum(ctx, first + (tile + 1) * BLOCK_M)
        # keys before the tile's first query are seen by all its queries: no mask there
        open_end = (tl.minimum(first + tile * BLOCK_M, kv_end) // BLOCK_N) * BLOCK_N
        table = tables + s * stride_tab
        for n in range(0, open_end, BLOCK_N):
            m, l_sum, acc = _tile(q, m, l_sum, acc, n, kv_end, qpos, table, k_cache, v_cache, d,
                                  dmask, hkv, block_size, stride_cb, stride_cs, stride_ch,
                                  scale_log2, BLOCK_N, DOT_PRECISION, False)  # fmt: skip
        for n in range(open_end, kv_end, BLOCK_N):
            m, l_sum, acc = _tile(q, m, l_sum, acc, n, kv_end, qpos, table, k_cache, v_cache, d,
                                  dmask, hkv, block_size, stride_cb, stride_cs, stride_ch,
                                  scale_log2, BLOCK_N, DOT_PRECISION, True)  # fmt: skip
        o = acc / tl.where(l_sum > 0, l_sum, 1.0)[:, None]
        tl.store(
            out_ptr + (q_start + qi)[:, None] * stride_ot + h * stride_oh + d[None, :],
            o.to(out_ptr.dtype.element_ty),
            mask=qmask[:, None] & dmask[None, :],
        )


def paged_prefill_attention(
    q: torch.Tensor,  # (T, H, D)
    kv_cache: torch.Tensor,  # (2, num_blocks, block_size, Hkv, D), new K/V already stored
    out: torch.Tensor,  # (T, H, D): the listed sequences' rows are written
    cu_seqlens_q: torch.Tensor,  # (S+1,)
    context_lens: torch.Tensor,  # (S,)
    block_tables: torch.Tensor,  # (S, max_blocks) int32
    scale: float,
    seq_ids: torch.Tensor,  # (N,) the sequences to compute
    max_query_len: int,  # longest query count among them (sizes the grid)
) -> None:
    """Causal attention of each listed sequence's new queries over its whole paged context."""
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = kv_cache.shape[3]
    if seq_ids.shape[0] == 0 or max_query_len == 0:
        return
    if q.stride(2) != 1:
        q = q.contiguous()
    k_cache, v_cache = kv_cache[0], kv_cache[1]
    cfg = launch_config(q)
    tiles = triton.cdiv(max_query_len, cfg.block_m)
    _prefill_kernel[(seq_ids.shape[0], tiles, num_heads)](
        q, k_cache, v_cache, out, cu_seqlens_q, context_lens, block_tables, seq_ids,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        kv_cache.shape[2], scale * LOG2E, tiles,
        G=num_heads // num_kv_heads, D=head_dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        BLOCK_D=triton.next_power_of_2(head_dim),
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
