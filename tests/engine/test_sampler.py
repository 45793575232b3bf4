"""Sampler: filters and penalties against direct computations."""

from __future__ import annotations

import torch

from ferrum.engine.sampler import Sampler, SamplingRow
from ferrum.sampling_params import SamplingParams


def row(**kw):
    g = None
    if "seed" in kw:
        g = torch.Generator().manual_seed(kw.pop("seed"))
    return SamplingRow(SamplingParams(**kw), [1, 2, 3, 3, 4], 2, g)


def test_filters_that_keep_one_token_equal_greedy():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    rows = [row(top_k=1), row(top_p=1e-6), row(min_p=1.0), row(temperature=0)]
    assert Sampler()(logits, rows).token_ids == logits.argmax(-1).tolist()


def test_top_k_never_samples_outside_the_k_best():
    torch.manual_seed(0)
    logits = torch.randn(1, 100)
    best = set(logits[0].topk(5).indices.tolist())
    for seed in range(50):
        tok = Sampler()(logits, [row(top_k=5, seed=seed)]).token_ids[0]
        assert tok in best


def test_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    counts = torch.zeros(3)
    for seed in range(600):
        counts[Sampler()(logits, [row(seed=seed)]).token_ids[0]] += 1
    freq = counts / counts.sum()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.06)


def test_penalties_match_their_definition():
    logits = torch.tensor([[1.0, 2.0, -1.0, 0.5, 3.0, 0.0]])
    r = row(temperature=0, presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=2.0)
    expected = logits.clone()[0]
    for t in {1, 2, 3, 4}:  # prompt [1, 2] + output [3, 3, 4]
        expected[t] = expected[t] / 2 if expected[t] > 0 else expected[t] * 2
    expected[3] -= 0.25 * 2 + 0.5
    expected[4] -= 0.25 * 1 + 0.5
    out = Sampler()(logits, [r])
    assert out.token_ids == [int(expected.argmax())]
    # penalise the best token out of first place
    logits2 = torch.tensor([[0.0, 0.0, 0.0, 5.0, 4.9, 0.0]])
    r2 = row(temperature=0, frequency_penalty=1.0)
    assert Sampler()(logits2, [r2]).token_ids == [4]


def test_logprobs_are_of_the_raw_distribution():
    torch.manual_seed(1)
    logits = torch.randn(2, 30)
    out = Sampler()(logits, [row(temperature=0, logprobs=2), row(temperature=0)])
    lp = logits.log_softmax(-1)
    chosen, top = out.logprobs[0]
    assert abs(chosen - lp[0].max().item()) < 1e-5
    assert [t for t, _ in top] == lp[0].topk(2).indices.tolist()
    assert out.logprobs[1] is None
