"""The fused q/k-norm + rope + K/V-store kernel against the torch path of
`Attention.forward_qkv` (separate norm, rotary and store)."""

from __future__ import annotations

import pytest
import torch

from ferrum.layers.attention import store_kv
from ferrum.layers.norm import RMSNorm
from ferrum.layers.rotary import RotaryEmbedding, apply_rotary_torch
from tests.kernels.conftest import DEVICE, DTYPES, tolerance

HEADS, KV_HEADS, DIM, BLOCKS, BLOCK_SIZE = 6, 2, 32, 5, 4


def random_qk_norms(dim: int, dtype, gen) -> tuple[RMSNorm, RMSNorm]:
    """q and k RMSNorms with random weights in [0.5, 1.5)."""
    norms = (RMSNorm(dim, 1e-6).to(DEVICE, dtype), RMSNorm(dim, 1e-6).to(DEVICE, dtype))
    with torch.no_grad():
        for n in norms:
            n.weight.copy_(torch.rand(dim, generator=gen) + 0.5)
    return norms


def _reference(qkv, cos, sin, norms, cache, slots):
    q, k, v = qkv.split([HEADS, KV_HEADS, KV_HEADS], dim=1)
    if norms is not None:
        q, k = norms[0].forward_torch(q), norms[1].forward_torch(k)
    q, k = apply_rotary_torch(q, cos, sin), apply_rotary_torch(k, cos, sin)
    keep = slots >= 0
    store_kv(k[keep], v[keep], cache, slots[keep])
    return q


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qk_norm", [False, True])
def test_fused_kernel_matches_norm_rotary_and_store(dtype, qk_norm):
    from ferrum.kernels.qk_rope_store import qk_rope_store

    gen = torch.Generator().manual_seed(7 + qk_norm)
    tokens = 7
    rope = RotaryEmbedding(DIM, 256, 10_000.0, None).to(DEVICE)
    positions = torch.randint(0, 256, (tokens,), generator=gen).to(DEVICE)
    cos, sin = rope(positions, dtype)
    # a wider row than q|k|v: the kernel must follow the token stride of a strided view
    wide = torch.randn(tokens, HEADS + 2 * KV_HEADS + 1, DIM, generator=gen) * 2
    qkv = wide.to(DEVICE, dtype)[:, : HEADS + 2 * KV_HEADS]
    norms = random_qk_norms(DIM, dtype, gen) if qk_norm else None
    # slots in shuffled order, one token without a slot (a graph batch's padding row)
    slots = torch.randperm(BLOCKS * BLOCK_SIZE, generator=gen)[:tokens]
    slots[3] = -1
    slots = slots.to(DEVICE)
    shape = (2, BLOCKS, BLOCK_SIZE, KV_HEADS, DIM)
    ref_cache = torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)
    cache = ref_cache.clone()
    ref_q = _reference(qkv, cos, sin, norms, ref_cache, slots)
    q = qk_rope_store(
        qkv, cos, sin, norms[0].weight if norms else None, norms[1].weight if norms else None,
        1e-6, HEADS, cache, slots,
    )  # fmt: skip
    assert q.shape == (tokens, HEADS, DIM) and q.is_contiguous()
    torch.testing.assert_close(q, ref_q, **tolerance(dtype))
    # written slots equal, the rest untouched (still NaN in both)
    torch.testing.assert_close(cache, ref_cache, equal_nan=True, **tolerance(dtype))
    written = torch.zeros(BLOCKS * BLOCK_SIZE, dtype=torch.bool)
    written[slots[slots >= 0].cpu()] = True
    flat = cache.view(2, -1, KV_HEADS, DIM).cpu()
    assert not flat[:, written].isnan().any()
    assert flat[:, ~written].isnan().all()
