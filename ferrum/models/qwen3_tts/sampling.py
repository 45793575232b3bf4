"""Choosing codec tokens from logits, the way the reference's `generate` calls choose them.

Codebook 0 (the talker) goes through transformers' logits processors in their order: repetition
penalty over the codebook-0 tokens generated so far, EOS forbidden before `MIN_NEW_TOKENS`, the
control-token range forbidden (except EOS); then, when sampling, temperature, top-k and top-p
before one multinomial draw. Codebooks 1..Q-1 (the code predictor) only get the sampling steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MIN_NEW_TOKENS = 2  # the reference never stops before two frames
CONTROL_TOKENS = 1024  # the top of the talker's vocabulary: control tokens, never spoken


@dataclass(frozen=True)
class SamplingOptions:
    """How one stage picks a token (the reference's defaults)."""

    do_sample: bool = True  # False: greedy (argmax)
    temperature: float = 0.9
    top_k: int = 50  # 0: no top-k cut
    top_p: float = 1.0  # 1.0: no nucleus cut

    def __post_init__(self) -> None:
        from ferrum.errors import InvalidInputError

        if self.do_sample and self.temperature <= 0:
            raise InvalidInputError("temperature must be > 0 when sampling (or sample greedily)")
        if self.top_k < 0:
            raise InvalidInputError("top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError("top_p must be in (0, 1]")


def pick(logits: Tensor, options: SamplingOptions, generator: torch.Generator | None) -> Tensor:
    """Processed logits (B, V) -> tokens (B,)."""
    scores = logits.float()
    if not options.do_sample:
        return scores.argmax(dim=-1)
    if options.temperature != 1.0:
        scores = scores / options.temperature
    if options.top_k > 0:
        k = min(options.top_k, scores.shape[-1])
        kth = torch.topk(scores, k).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if options.top_p < 1.0:
        ascending, order = torch.sort(scores, descending=False)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1 - options.top_p
        drop[..., -1:] = False  # always keep the most likely token
        scores = scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


def process_first_codebook(
    logits: Tensor, history: Tensor, eos: int, repetition_penalty: float
) -> Tensor:
    """The talker's logits processors: logits (B, V), history (B, N) tokens so far -> (B, V)."""
    scores = logits.float().clone()
    if history.shape[1] > 0 and repetition_penalty != 1.0:
        seen = torch.gather(scores, 1, history)
        seen = torch.where(seen < 0, seen * repetition_penalty, seen / repetition_penalty)
        scores.scatter_(1, history, seen)
    if history.shape[1] < MIN_NEW_TOKENS:
        scores[:, eos] = -float("inf")
    vocab = scores.shape[-1]
    control = torch.arange(vocab - CONTROL_TOKENS, vocab, device=scores.device)
    control = control[control != eos]
    scores[:, control] = -float("inf")
    return scores
