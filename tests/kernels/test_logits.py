"""The one-row logits kernel and its argmax against F.linear(...).float() and torch.argmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.conftest import DEVICE, DTYPES, tolerance


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vocab,hidden", [(1003, 96), (4096, 640)])
def test_logits_and_greedy_match_linear_and_argmax(dtype, vocab, hidden):
    from ferrum.kernels.logits import logits_and_greedy

    gen = torch.Generator().manual_seed(vocab + hidden)
    x = torch.randn(1, hidden, generator=gen).to(DEVICE, dtype)
    w = (torch.randn(vocab, hidden, generator=gen) * hidden**-0.5).to(DEVICE, dtype)
    logits = torch.full((1, vocab), float("nan"), device=DEVICE)
    token = torch.full((1,), -1, dtype=torch.int64, device=DEVICE)
    logits_and_greedy(x, w, logits, token)
    ref = F.linear(x, w).float()
    torch.testing.assert_close(logits, ref, **tolerance(dtype))
    assert token.item() == logits.argmax(-1).item()
    assert token.item() == ref.argmax(-1).item()  # random logits: no near-tie at the top


def test_greedy_takes_the_first_of_tied_maxima():
    """Rows 5, 700 and the last give the same largest logit, in different programs' slices."""
    from ferrum.kernels.logits import logits_and_greedy

    gen = torch.Generator().manual_seed(1)
    vocab, hidden = 1001, 64
    x = torch.rand(1, hidden, generator=gen).to(DEVICE) + 0.5
    w = torch.rand(vocab, hidden, generator=gen).to(DEVICE) * 0.1
    for row in (700, 5, vocab - 1):
        w[row] = 1.0
    logits = torch.empty(1, vocab, device=DEVICE)
    token = torch.empty(1, dtype=torch.int64, device=DEVICE)
    logits_and_greedy(x, w, logits, token)
    assert token.item() == 5 == logits.argmax(-1).item()
