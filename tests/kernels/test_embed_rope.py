"""The embedding + rope-table lookup kernel against torch's two gathers."""

from __future__ import annotations

import pytest
import torch

from ferrum.layers.rotary import RotaryEmbedding
from tests.kernels.conftest import DEVICE, DTYPES


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [96, 2500])  # one partial slice; several, the last partial
def test_embed_and_rope_equal_the_two_gathers(dtype, hidden):
    from ferrum.kernels.embed_rope import embed_and_rope

    gen = torch.Generator().manual_seed(hidden)
    weight = torch.randn(1000, hidden, generator=gen).to(DEVICE, dtype)
    table = RotaryEmbedding(64, 4096, 10_000.0, None).to(DEVICE).table(dtype)
    ids = torch.randint(0, 1000, (7,), generator=gen).to(DEVICE)
    positions = torch.tensor([0, 1, 4095, 17, 17, 300, 2], device=DEVICE)
    x, rope = embed_and_rope(ids, positions, weight, table)
    assert torch.equal(x, weight[ids])
    assert torch.equal(rope, table[positions])
