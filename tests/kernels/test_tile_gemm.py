"""The tile GEMM (a decode batch of up to 64 rows, K optionally split across programs) against
F.linear: every split count, widths that are not multiples of the tiles, bias, and the ticket
counters left zeroed for the next call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.kernels.conftest import DEVICE, DTYPES, tolerance

# (rows, K, N, block_n, block_k, split_k)
CASES = [
    (1, 64, 32, 16, 32, 1),
    (17, 100, 40, 16, 32, 1),  # K and N past the last whole tile
    (64, 128, 64, 32, 32, 4),  # four parts of one slice each
    (5, 96, 48, 16, 32, 3),
    (9, 160, 33, 16, 32, 2),  # uneven parts: 3 + 2 slices
    (3, 64, 24, 16, 32, 3),  # more parts than slices: the last is empty and still counts
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_linear(dtype, case, bias):
    from ferrum.kernels.tile_gemm import TileConfig, _ticket_counters, tile_linear

    rows, k, n, block_n, block_k, split = case
    gen = torch.Generator().manual_seed(rows * k + n + split)
    x = torch.randn(rows, k, generator=gen).to(DEVICE, dtype)
    w = (torch.randn(n, k, generator=gen) / k**0.5).to(DEVICE, dtype)
    b = torch.randn(n, generator=gen).to(DEVICE, dtype) if bias else None
    config = TileConfig(block_n=block_n, block_k=block_k, split_k=split)
    ref = F.linear(x.float(), w.float(), None if b is None else b.float())
    for _ in range(2):  # the second call relies on the first leaving its counters at zero
        got = tile_linear(x, w, b, config)
        assert got.shape == (rows, n) and got.dtype == dtype
        tol = tolerance(dtype)
        torch.testing.assert_close(got.float(), ref, atol=4 * tol["atol"], rtol=4 * tol["rtol"])
    assert int(_ticket_counters(x.device).abs().sum()) == 0


def test_split_sum_is_deterministic():
    """The last part to arrive adds every part's partial in split order: the result is the
    same bits on every call, whichever part finished last."""
    from ferrum.kernels.tile_gemm import TileConfig, tile_linear

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(8, 256, generator=gen).to(DEVICE)
    w = torch.randn(32, 256, generator=gen).to(DEVICE)
    config = TileConfig(block_n=16, block_k=32, split_k=4)
    first = tile_linear(x, w, None, config)
    assert all(torch.equal(first, tile_linear(x, w, None, config)) for _ in range(3))


def test_default_config_fills_the_chip():
    from ferrum.kernels.tile_gemm import default_config

    # 132 SMs: Llama-3.1-8B's projections fill the chip with column tiles alone, the wide
    # ones with the widest tiles; Qwen3-0.6B's o (1024 columns) cuts K in 4
    o = default_config(64, 4096, 4096, 132)
    assert o.split_k == 1 and 4096 // o.block_n >= 0.7 * 132
    gate_up = default_config(64, 28672, 4096, 132)
    assert (gate_up.block_n, gate_up.split_k) == (128, 1)
    qwen_o = default_config(64, 1024, 2048, 132)
    assert (qwen_o.block_n, qwen_o.split_k) == (32, 4)
    assert default_config(64, 4096, 14336, 132).block_k == 256  # long rows: wider K slices
    assert (o.block_n, o.block_k) == (32, 256)  # narrow tiles of 4096-long rows too
    assert default_config(64, 4096, 1024, 132).block_k == 128  # Qwen3's qkv keeps 128
    # every part keeps at least 4 slices of K
    tiny = default_config(64, 64, 512, 132)
    assert 512 // tiny.block_k // tiny.split_k >= 4


def test_rejects_what_it_cannot_take():
    from ferrum.kernels.tile_gemm import tile_linear

    w = torch.zeros(8, 16, device=DEVICE)
    with pytest.raises(ValueError, match="at most 64 rows"):
        tile_linear(torch.zeros(65, 16, device=DEVICE), w)
    with pytest.raises(ValueError, match="does not take 32 inputs"):
        tile_linear(torch.zeros(2, 32, device=DEVICE), w)


def test_engine_rows_fit_the_kernel():
    from ferrum.kernels.tile_gemm import MAX_ROWS
    from ferrum.layers.linear import TILE_ROWS

    assert TILE_ROWS[-1] == MAX_ROWS and TILE_ROWS[0] > 1  # one row: the skinny path


@pytest.mark.parametrize("dtype", DTYPES[1:])  # the logits of a 16-bit model
def test_float32_logits_and_folded_argmax(dtype):
    """Logits written as float32 hold the 16-bit product (F.linear(...).float()), and each row's
    argmax word gives torch.argmax of them: negative rows, ties across tiles (first index)."""
    from ferrum.kernels.logits import EMPTY, argmax_word, tokens_from_words
    from ferrum.kernels.tile_gemm import TileConfig, tile_linear

    gen = torch.Generator().manual_seed(3)
    rows, k, vocab = 20, 64, 200
    u = torch.ones(k) / k**0.5
    w = torch.randn(vocab, k, generator=gen) / k**0.5 + 3 * u  # every row leans along u
    x = torch.randn(rows, k, generator=gen)
    x[3] = -u  # row 3: every logit negative
    v = torch.randn(k, generator=gen)
    w[7] += 3 * v / v.norm()
    x[0] = v / v.norm()  # row 0: its largest logit at 7 ...
    w[150] = w[7]  # ... and again at 150, in a later tile
    x, w = x.to(DEVICE, dtype), w.to(DEVICE, dtype)
    ref = F.linear(x, w).float()
    ref_tokens = ref.argmax(-1)
    assert ref_tokens[0] == 7 and ref[0, 150] == ref[0, 7] and bool((ref[3] < 0).all())
    logits = torch.full((rows, vocab), float("nan"), device=DEVICE)
    words = argmax_word(DEVICE, rows)
    tokens = torch.full((rows,), -1, dtype=torch.long, device=DEVICE)
    for _ in range(2):  # the token kernel leaves the words reset for the next step
        tile_linear(x, w, None, TileConfig(block_n=32, block_k=32), out=logits, argmax_word=words)
        tokens_from_words(words, tokens)
        # float32 values of the 16-bit product: a ulp of it where the sums' order differs
        torch.testing.assert_close(logits, ref, **tolerance(dtype))
        assert torch.equal(logits, logits.to(dtype).float())
        assert torch.equal(tokens, logits.argmax(-1))  # the first index, ties included
        assert torch.equal(tokens, ref_tokens)
        assert bool((words == EMPTY).all())
