"""Our LLaMA-family models equal transformers on the same weights: teacher-forced logits through
the paged KV cache (one chunk, chunked + decode steps, mixed batches) and greedy decoding."""

from __future__ import annotations

import pytest
import torch

PROMPT_LEN = 20
NEW_TOKENS = 12
ATOL = RTOL = 1e-4  # float32


def prompt(seed: int, length: int = PROMPT_LEN) -> list[int]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 300, (length,), generator=gen).tolist()


def hf_logits(checkpoint, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return checkpoint.hf_model(torch.tensor([tokens])).logits[0].float()  # (L, V)


@pytest.fixture(scope="module")
def ours(checkpoint):
    return checkpoint.load()


def test_one_prefill_chunk(checkpoint, ours, paged_driver):
    tokens = prompt(1)
    (logits,) = paged_driver(ours).step([(0, tokens)])
    torch.testing.assert_close(logits, hf_logits(checkpoint, tokens), atol=ATOL, rtol=RTOL)


def test_chunks_then_decode_steps(checkpoint, ours, paged_driver):
    tokens = prompt(2)
    driver = paged_driver(ours, block_size=4)
    pieces = [tokens[:7], tokens[7:14]] + [[t] for t in tokens[14:]]
    logits = torch.cat([driver.step([(0, piece)])[0] for piece in pieces])
    torch.testing.assert_close(logits, hf_logits(checkpoint, tokens), atol=ATOL, rtol=RTOL)
    assert sorted(driver.tables[0]) != driver.tables[0], "block table should not be contiguous"


def test_mixed_batches(checkpoint, ours, paged_driver):
    a, b = prompt(3), prompt(4, length=17)
    driver = paged_driver(ours)
    got_a, got_b = [], []
    got_a += driver.step([(0, a[:13])])
    # one decode token of A beside a prefill chunk of B
    out = driver.step([(0, a[13:14]), (1, b[:9])])
    got_a.append(out[0]), got_b.append(out[1])
    # both decode together (the batched, length-masked path)
    out = driver.step([(1, b[9:10]), (0, a[14:15])])
    got_b.append(out[0]), got_a.append(out[1])
    # a chunk of B with cached context beside A's decode
    out = driver.step([(0, a[15:16]), (1, b[10:17])])
    got_a.append(out[0]), got_b.append(out[1])
    torch.testing.assert_close(
        torch.cat(got_a), hf_logits(checkpoint, a[:16]), atol=ATOL, rtol=RTOL
    )
    torch.testing.assert_close(torch.cat(got_b), hf_logits(checkpoint, b), atol=ATOL, rtol=RTOL)


def test_greedy_decode_matches_generate(checkpoint, ours, paged_driver):
    prompts = [prompt(5), prompt(6, length=11)]
    driver = paged_driver(ours)
    outs = driver.step([(i, p) for i, p in enumerate(prompts)])
    generated: list[list[int]] = [[], []]
    for _ in range(NEW_TOKENS):
        nxt = [int(logits[-1].argmax()) for logits in outs]
        for i, token in enumerate(nxt):
            generated[i].append(token)
        outs = driver.step([(i, [token]) for i, token in enumerate(nxt)])
    for p, got in zip(prompts, generated, strict=True):
        with torch.no_grad():
            ids = torch.tensor([p])
            ref = checkpoint.hf_model.generate(
                ids,
                attention_mask=torch.ones_like(ids),  # else generate masks tokens == pad id
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=0,
            )
        assert got == ref[0, len(p) :].tolist()
