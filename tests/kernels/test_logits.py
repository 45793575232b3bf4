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


@pytest.mark.parametrize("norm", [False, True])
def test_rotated_and_preloaded_slices_give_the_same_logits(norm, monkeypatch):
    """Rows of many K slices (here 64 wide): each program starts at its own slice and
    multiplies its first slices, loaded ahead, apart from the loop; the last slice partial."""
    from ferrum.kernels import logits as lg
    from ferrum.kernels.norm import rms_norm

    monkeypatch.setattr(lg, "BLOCK_K", 64)
    vocab, hidden = 1003, 600  # 10 slices, the last 24 wide
    assert -(-hidden // lg.BLOCK_K) >= lg.ROTATE_SLICES and lg.PRELOAD > 1  # the path tested
    gen = torch.Generator().manual_seed(11)
    dtype = torch.bfloat16
    x, res = (torch.randn(1, hidden, generator=gen).to(DEVICE, dtype) for _ in range(2))
    norm_w = (torch.rand(hidden, generator=gen) + 0.5).to(DEVICE, dtype)
    w = (torch.randn(vocab, hidden, generator=gen) * hidden**-0.5).to(DEVICE, dtype)
    ref = F.linear(rms_norm(x, norm_w, 1e-6, res)[0] if norm else x, w).float()
    logits = torch.full((1, vocab), float("nan"), device=DEVICE)
    token = torch.full((1,), -1, dtype=torch.int64, device=DEVICE)
    logits_and_greedy = lg.logits_and_greedy
    logits_and_greedy(x, w, logits, token, norm=(res, norm_w, 1e-6) if norm else None)
    torch.testing.assert_close(logits, ref, **tolerance(dtype))
    assert token.item() == ref.argmax(-1).item()


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_folded_final_norm_equals_the_norm_kernel_then_the_logits(dtype):
    """RMSNorm(x + residual) inside the product gives what the norm kernel's output gives (the
    same rounding; the mean square may be summed in another order) and the same token."""
    from ferrum.kernels.logits import logits_and_greedy
    from ferrum.kernels.norm import rms_norm

    gen = torch.Generator().manual_seed(7)
    vocab, hidden = 1003, 640  # the last K slice partial
    x, res = (torch.randn(1, hidden, generator=gen).to(DEVICE, dtype) for _ in range(2))
    norm_w = (torch.rand(hidden, generator=gen) + 0.5).to(DEVICE, dtype)
    w = (torch.randn(vocab, hidden, generator=gen) * hidden**-0.5).to(DEVICE, dtype)
    normed, _ = rms_norm(x, norm_w, 1e-6, res)
    ref_logits = torch.empty(1, vocab, device=DEVICE)
    ref_token = torch.empty(1, dtype=torch.int64, device=DEVICE)
    logits_and_greedy(normed, w, ref_logits, ref_token)
    logits = torch.full((1, vocab), float("nan"), device=DEVICE)
    token = torch.full((1,), -1, dtype=torch.int64, device=DEVICE)
    logits_and_greedy(x, w, logits, token, norm=(res, norm_w, 1e-6))
    torch.testing.assert_close(logits, ref_logits, **tolerance(dtype))
    assert token.item() == ref_token.item() == logits.argmax(-1).item()


def test_argmax_word_orders_negative_logits_and_is_left_reset():
    """All logits negative (the float order is not the bits' order there), one word reused
    by consecutive calls as graphs reuse it: each call gets its own argmax."""
    from ferrum.kernels.logits import EMPTY, argmax_word, logits_and_greedy

    gen = torch.Generator().manual_seed(2)
    vocab, hidden = 777, 32
    x = torch.ones(1, hidden, device=DEVICE)
    word = argmax_word(DEVICE)
    for best in (3, 600, 0, vocab - 1):
        w = -(torch.rand(vocab, hidden, generator=gen) + 1.0)
        w[best] = -0.5
        w = w.to(DEVICE)
        logits = torch.empty(1, vocab, device=DEVICE)
        token = torch.empty(1, dtype=torch.int64, device=DEVICE)
        logits_and_greedy(x, w, logits, token, word=word)
        assert (logits < 0).all()
        assert token.item() == best == logits.argmax(-1).item()
        assert word.item() == EMPTY
