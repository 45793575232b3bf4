"""What the decode graphs compute besides the model: the greedy token of every row (a two-stage
argmax) must be torch.argmax's, ties included."""

from __future__ import annotations

import pytest
import torch

from ferrum.engine.cuda_graphs import graph_batch_sizes, greedy_tokens


@pytest.mark.parametrize(
    "vocab",
    [151_936, 128_256, 1000, 4097],  # 2^7 and 2^8 chunks (Qwen, Llama), 8 chunks, odd: 1
)
def test_greedy_tokens_equal_argmax_with_ties(vocab):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(5, vocab, generator=gen)
    # ties: the first index of the maximum wins, also across chunks
    logits[1, [3, vocab - 1]] = 50.0
    logits[2, :] = 0.0
    logits[3, [vocab // 2, vocab // 2 + 1, 7]] = 9.0
    logits[4, -1] = 99.0
    if torch.cuda.is_available():  # the graphs run it on the GPU
        logits = logits.cuda()
    got = greedy_tokens(logits)
    assert got.dtype == torch.int64
    assert torch.equal(got, logits.argmax(-1))
    assert got[:4].tolist() == [got[0].item(), 3, 0, 7] and got[4].item() == vocab - 1


def test_graph_batch_ladder():
    assert graph_batch_sizes(1) == [1]
    assert graph_batch_sizes(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
