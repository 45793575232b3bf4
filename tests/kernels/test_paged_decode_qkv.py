"""The decode kernel with q/k norm, rope and the K/V store folded in (`paged_decode_qkv`)
against the two kernels it replaces (`qk_rope_store`, then `paged_decode_attention`)."""

from __future__ import annotations

import pytest
import torch

from ferrum.layers.attention import build_metadata
from ferrum.layers.rotary import RotaryEmbedding
from tests.kernels.conftest import DEVICE, DTYPES, tolerance
from tests.kernels.test_paged_attention import BLOCK_SIZE, fill_context, make_cache, tables_for
from tests.kernels.test_qk_rope_store import random_qk_norms

HEADS, KV_HEADS, DIM = 8, 2, 32
# context lengths after the step: the new token alone, the first of a fresh block, mid-block,
# a long context, and a graph padding row (context 0, no slot)
CONTEXTS = [1, BLOCK_SIZE + 1, 37, 150, 0]


def _inputs(dtype, qk_norm, seed):
    gen = torch.Generator().manual_seed(seed)
    num_blocks = sum(-(-c // BLOCK_SIZE) for c in CONTEXTS) + 2
    cache = make_cache(num_blocks, KV_HEADS, DIM, dtype)
    tables = tables_for(CONTEXTS, num_blocks, seed=seed)
    # the past tokens are in the cache; the new token's slot stays NaN until the kernel stores
    fill_context(cache, tables, [max(c - 1, 0) for c in CONTEXTS], gen)
    meta = build_metadata([1] * len(CONTEXTS), CONTEXTS, [t or [0] for t in tables],
                          BLOCK_SIZE, DEVICE)  # fmt: skip
    meta.slot_mapping[CONTEXTS.index(0)] = -1
    rope = RotaryEmbedding(DIM, 512, 10_000.0, None).to(DEVICE)
    positions = torch.tensor([max(c - 1, 0) for c in CONTEXTS], device=DEVICE)
    cos, sin = rope(positions, dtype)
    qkv = (torch.randn(len(CONTEXTS), HEADS + 2 * KV_HEADS, DIM, generator=gen) * 2).to(
        DEVICE, dtype
    )
    norms = random_qk_norms(DIM, dtype, gen) if qk_norm else None
    weights = (norms[0].weight, norms[1].weight) if norms else (None, None)
    return cache, meta, qkv, cos, sin, weights


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("splits", [1, 4])
def test_fused_decode_matches_rope_store_then_decode(dtype, qk_norm, splits):
    from ferrum.kernels.paged_decode import paged_decode_attention, paged_decode_qkv
    from ferrum.kernels.qk_rope_store import qk_rope_store

    cache, meta, qkv, cos, sin, (q_w, k_w) = _inputs(dtype, qk_norm, seed=splits + 2 * qk_norm)
    ref_cache = cache.clone()
    scale = DIM**-0.5
    q = qk_rope_store(qkv, cos, sin, q_w, k_w, 1e-6, HEADS, ref_cache, meta.slot_mapping)
    ref = torch.full_like(q, float("nan"))
    common = (meta.cu_seqlens_q, meta.context_lens, meta.block_tables, scale)
    paged_decode_attention(q, ref_cache, ref, *common, num_splits=splits)

    out = paged_decode_qkv(
        qkv, cos, sin, q_w, k_w, 1e-6, HEADS, cache, meta.slot_mapping, *common, num_splits=splits
    )
    assert not out.isnan().any()
    # the new token joins the softmax after the cached ones rather than inside their last tile,
    # so its weight is rounded to the dtype against another running max: bfloat16's 8 bits give
    # differences up to ~1% of |v| (a wrong rope or a missed token is off by O(|v|))
    close = tolerance(dtype) if dtype != torch.bfloat16 else {"atol": 6e-2, "rtol": 2e-2}
    torch.testing.assert_close(out, ref, **close)
    assert torch.equal(out[CONTEXTS.index(0)], torch.zeros_like(out[0]))  # padding row
    # the new tokens' K/V were stored where the two-kernel path stores them, nothing else
    torch.testing.assert_close(cache, ref_cache, equal_nan=True, **tolerance(dtype))
    assert torch.equal(cache.isnan(), ref_cache.isnan())
