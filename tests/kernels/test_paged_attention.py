"""store_kv, the paged decode kernel and the varlen prefill kernel against the torch reference
(TorchPagedAttention and its store_kv), on fresh random inputs with NaN-poisoned caches and
outputs, shuffled block tables and context lengths that are not multiples of the block size."""

from __future__ import annotations

import random

import pytest
import torch

from ferrum.layers.attention import TorchPagedAttention, build_metadata
from ferrum.layers.attention import store_kv as torch_store_kv
from tests.kernels.conftest import DEVICE, DTYPES, tolerance

BLOCK_SIZE = 16


def make_cache(num_blocks: int, kv_heads: int, dim: int, dtype) -> torch.Tensor:
    # never-written slots hold NaN: a read outside a context would poison the output
    return torch.full(
        (2, num_blocks, BLOCK_SIZE, kv_heads, dim), float("nan"), dtype=dtype, device=DEVICE
    )


def tables_for(context_lens: list[int], num_blocks: int, seed: int) -> list[list[int]]:
    free = list(range(num_blocks))
    random.Random(seed).shuffle(free)
    return [[free.pop() for _ in range(-(-ctx // BLOCK_SIZE))] for ctx in context_lens]


def fill_context(cache, tables, context_lens, gen):
    """Random K/V in every slot of each context (what earlier steps would have stored)."""
    kv_heads, dim = cache.shape[3], cache.shape[4]
    for table, ctx in zip(tables, context_lens):
        for pos in range(ctx):
            block, off = table[pos // BLOCK_SIZE], pos % BLOCK_SIZE
            cache[:, block, off] = torch.randn(2, kv_heads, dim, generator=gen).to(cache)


@pytest.mark.parametrize("dtype", DTYPES)
def test_store_kv_writes_slots_and_skips_negative(dtype):
    from ferrum.kernels.store_kv import store_kv

    gen = torch.Generator().manual_seed(0)
    heads, kv, dim = 4, 2, 24
    qkv = torch.randn(6, heads + 2 * kv, dim, generator=gen).to(DEVICE, dtype)
    k, v = qkv[:, heads : heads + kv], qkv[:, heads + kv :]  # strided views, as in the model
    slots = torch.tensor([5, 17, -1, 40, 3, -1], device=DEVICE)
    cache = make_cache(4, kv, dim, dtype)
    ref = cache.clone()
    store_kv(k, v, cache, slots)
    keep = slots >= 0
    torch_store_kv(k[keep], v[keep], ref, slots[keep])
    torch.testing.assert_close(cache, ref, atol=0, rtol=0, equal_nan=True)


CASES = {
    # (query heads, kv heads, head dim, context lengths, splits)
    "mha-one-seq": (4, 4, 32, [37], 1),
    "gqa2-splits": (4, 2, 32, [300, 16, 129], 4),
    "gqa4-long": (8, 2, 64, [520, 5], 8),
    "gqa4-many-splits": (8, 2, 64, [1100, 40, 300], 32),  # 18 filled: combined 8 at a time
    "gqa3-odd-dim": (6, 2, 40, [77, 200, 1], 2),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_paged_decode_matches_reference(dtype, case):
    from ferrum.kernels.paged_decode import paged_decode_attention

    heads, kv, dim, context_lens, splits = CASES[case]
    gen = torch.Generator().manual_seed(hash(case) % 1000)
    num_blocks = sum(-(-c // BLOCK_SIZE) for c in context_lens) + 3
    cache = make_cache(num_blocks, kv, dim, dtype)
    tables = tables_for(context_lens, num_blocks, seed=len(case))
    fill_context(cache, tables, context_lens, gen)
    q = torch.randn(len(context_lens), heads, dim, generator=gen).to(DEVICE, dtype)
    meta = build_metadata([1] * len(context_lens), context_lens, tables, BLOCK_SIZE, DEVICE)
    scale = dim**-0.5
    out = torch.full_like(q, float("nan"))
    paged_decode_attention(
        q,
        cache,
        out,
        meta.cu_seqlens_q,
        meta.context_lens,
        meta.block_tables,
        scale,
        num_splits=splits,
    )
    # the reference stores K/V first: give it the cache's own last entries so nothing changes
    k = torch.stack(
        [
            cache[0, t[(c - 1) // BLOCK_SIZE], (c - 1) % BLOCK_SIZE]
            for t, c in zip(tables, context_lens)
        ]
    )
    v = torch.stack(
        [
            cache[1, t[(c - 1) // BLOCK_SIZE], (c - 1) % BLOCK_SIZE]
            for t, c in zip(tables, context_lens)
        ]
    )
    ref = TorchPagedAttention().forward(
        q.float(), k.float(), v.float(), cache.float().clone(), meta, scale
    )
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), ref, **tolerance(dtype))


def test_paged_decode_subset_and_empty_context():
    """seq_ids picks rows; a context of length 0 (a graph padding row) yields zeros."""
    from ferrum.kernels.paged_decode import paged_decode_attention

    gen = torch.Generator().manual_seed(3)
    heads, kv, dim = 4, 2, 32
    context_lens = [40, 0, 90]
    cache = make_cache(12, kv, dim, torch.float32)
    tables = tables_for(context_lens, 12, seed=3)
    fill_context(cache, tables, context_lens, gen)
    q = torch.randn(3, heads, dim, generator=gen).to(DEVICE)
    meta = build_metadata([1, 1, 1], context_lens, [t or [0] for t in tables], BLOCK_SIZE, DEVICE)
    full = torch.full_like(q, float("nan"))
    paged_decode_attention(
        q,
        cache,
        full,
        meta.cu_seqlens_q,
        meta.context_lens,
        meta.block_tables,
        dim**-0.5,
        num_splits=4,
    )
    assert torch.equal(full[1], torch.zeros_like(full[1]))
    part = torch.full_like(q, float("nan"))
    ids = torch.tensor([2], dtype=torch.int32, device=DEVICE)
    paged_decode_attention(
        q,
        cache,
        part,
        meta.cu_seqlens_q,
        meta.context_lens,
        meta.block_tables,
        dim**-0.5,
        num_splits=1,
        seq_ids=ids,
    )
    assert part[:2].isnan().all()  # rows not asked for stay untouched
    torch.testing.assert_close(part[2], full[2], atol=1e-5, rtol=1e-5)


# each step: (seq id, number of new tokens); contexts grow across steps (chunked prefill,
# decodes mixed with prompt chunks)
SCHEDULES = {
    "prefill": [[(0, 150), (1, 7)]],
    "chunked-with-context": [[(0, 70)], [(0, 90), (1, 33)], [(1, 64), (0, 1)]],
    "mixed-decode-prefill": [[(0, 20), (1, 5)], [(0, 1), (1, 1), (2, 130)], [(2, 1), (0, 17)]],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
# prefill launch shapes: 64- and 128-row tiles, or the one the device and dtype get (on a GPU,
# with real head sizes: float32 must not get tiles past the shared memory)
@pytest.mark.parametrize("prefill_shape", ["default", "hopper", "chosen"])
def test_backend_matches_torch_backend(dtype, schedule, prefill_shape, monkeypatch):
    """TritonPagedAttention (store, prefill and decode kernels) step by step against
    TorchPagedAttention on its own cache copy."""
    from ferrum.kernels import paged_prefill
    from ferrum.layers.triton_attention import TritonPagedAttention

    shapes = {"default": paged_prefill.PrefillConfig(), "hopper": paged_prefill.HOPPER}
    monkeypatch.setattr(paged_prefill, "CONFIG", shapes.get(prefill_shape))

    heads, kv, dim = 6, 2, 128 if prefill_shape == "chosen" else 32
    gen = torch.Generator().manual_seed(len(schedule))
    num_blocks = 40
    cache = make_cache(num_blocks, kv, dim, dtype)
    ref_cache = cache.float().clone()
    free = list(range(num_blocks))
    random.Random(7).shuffle(free)
    tables: dict[int, list[int]] = {}
    lengths: dict[int, int] = {}
    scale = dim**-0.5
    for step in SCHEDULES[schedule]:
        query_lens, context_lens, block_tables = [], [], []
        for seq, n in step:
            past = lengths.get(seq, 0)
            table = tables.setdefault(seq, [])
            while len(table) * BLOCK_SIZE < past + n:
                table.append(free.pop())
            lengths[seq] = past + n
            query_lens.append(n)
            context_lens.append(past + n)
            block_tables.append(list(table))
        total = sum(query_lens)
        q = torch.randn(total, heads, dim, generator=gen).to(DEVICE, dtype)
        k = torch.randn(total, kv, dim, generator=gen).to(DEVICE, dtype)
        v = torch.randn(total, kv, dim, generator=gen).to(DEVICE, dtype)
        meta = build_metadata(query_lens, context_lens, block_tables, BLOCK_SIZE, DEVICE)
        ref_meta = build_metadata(query_lens, context_lens, block_tables, BLOCK_SIZE, DEVICE)
        out = TritonPagedAttention().forward(q, k, v, cache, meta, scale)
        ref = TorchPagedAttention().forward(
            q.float(), k.float(), v.float(), ref_cache, ref_meta, scale
        )
        assert not out.isnan().any()
        torch.testing.assert_close(out.float(), ref, **tolerance(dtype))
