"""TorchPagedAttention (the reference the GPU kernels are checked against) equals plain causal
attention computed densely in float64, for every batch shape the scheduler makes."""

from __future__ import annotations

import random

import pytest
import torch

from ferrum.layers.attention import TorchPagedAttention, build_metadata

HEADS, KV_HEADS, HEAD_DIM = 6, 2, 8
BLOCK_SIZE, NUM_BLOCKS = 4, 40
SCALE = HEAD_DIM**-0.5


def dense_attention(q, k, v, first_pos: int) -> torch.Tensor:
    """q (n, H, D) at positions first_pos.. over keys k, v (L, Hkv, D) at 0..L-1."""
    group = HEADS // KV_HEADS
    k = k.double().repeat_interleave(group, dim=1)  # (L, H, D)
    v = v.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * SCALE
    qpos = torch.arange(first_pos, first_pos + q.shape[0])[:, None]
    scores = scores.masked_fill(torch.arange(k.shape[0])[None, :] > qpos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)


# each step: (seq id, number of new tokens) pairs
SCHEDULES = {
    "prefill-one": [[(0, 9)]],
    "decode-one": [[(0, 6)], [(0, 1)], [(0, 1)]],
    "chunked-prefill": [[(0, 5)], [(0, 7)], [(0, 4)]],
    "batched-decode": [[(0, 8), (1, 3), (2, 13)], [(0, 1), (1, 1), (2, 1)], [(2, 1), (0, 1)]],
    "mixed": [[(0, 5), (1, 2)], [(1, 1), (0, 6), (2, 9)], [(2, 1), (1, 4), (0, 1)]],
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_matches_dense_attention(schedule):
    gen = torch.Generator().manual_seed(0)
    # never-written slots hold NaN (the engine allocates the cache uninitialized): a slot read
    # outside a context, even masked, would poison the output
    cache = torch.full((2, NUM_BLOCKS, BLOCK_SIZE, KV_HEADS, HEAD_DIM), float("nan"))
    free = list(range(NUM_BLOCKS))
    random.Random(1).shuffle(free)
    tables: dict[int, list[int]] = {}
    keys: dict[int, list[torch.Tensor]] = {}
    values: dict[int, list[torch.Tensor]] = {}
    backend = TorchPagedAttention()
    for step in SCHEDULES[schedule]:
        query_lens, context_lens, block_tables, qs, ks, vs = [], [], [], [], [], []
        for seq, n in step:
            past = sum(len(x) for x in keys.get(seq, []))
            table = tables.setdefault(seq, [])
            while len(table) * BLOCK_SIZE < past + n:
                table.append(free.pop())
            qs.append(torch.randn(n, HEADS, HEAD_DIM, generator=gen))
            ks.append(torch.randn(n, KV_HEADS, HEAD_DIM, generator=gen))
            vs.append(torch.randn(n, KV_HEADS, HEAD_DIM, generator=gen))
            keys.setdefault(seq, []).append(ks[-1])
            values.setdefault(seq, []).append(vs[-1])
            query_lens.append(n)
            context_lens.append(past + n)
            block_tables.append(list(table))
        meta = build_metadata(
            query_lens, context_lens, block_tables, BLOCK_SIZE, torch.device("cpu")
        )
        out = backend.forward(torch.cat(qs), torch.cat(ks), torch.cat(vs), cache, meta, SCALE)
        assert out.shape == (sum(query_lens), HEADS, HEAD_DIM)
        for (seq, n), q, rows in zip(step, qs, out.split(query_lens), strict=True):
            k, v = torch.cat(keys[seq]), torch.cat(values[seq])
            ref = dense_attention(q, k, v, first_pos=k.shape[0] - n)
            torch.testing.assert_close(rows.double(), ref, atol=1e-5, rtol=1e-5)
