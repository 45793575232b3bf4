"""Choosing codec tokens for a batch whose rows are separate requests, each with its own options,
repetition history and random generator (the continuous-batching engine's sampler).

Each row gets exactly what `sampling.py` gives a request of its own: the same logits processors,
and a seeded row draws from its own generator with the same calls (`pick` on its one row), so a
seeded request's codes do not depend on what else shares the batch. An all-greedy batch takes one
argmax; unseeded rows that share options share one `pick` (torch's global generator).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ferrum.models.qwen3_tts.sampling import CONTROL_TOKENS, SamplingOptions, pick


@dataclass(frozen=True)
class RowSampling:
    """How one row (one request) picks: its options and, when seeded, its generator."""

    options: SamplingOptions
    generator: torch.Generator | None


def pick_rows(logits: Tensor, rows: list[RowSampling]) -> Tensor:
    """Processed logits (B, V), one `RowSampling` per row -> tokens (B,)."""
    if all(not r.options.do_sample for r in rows):
        return logits.float().argmax(dim=-1)
    tokens = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    shared: dict[SamplingOptions, list[int]] = {}
    for i, row in enumerate(rows):
        if row.generator is not None:
            tokens[i : i + 1] = pick(logits[i : i + 1], row.options, row.generator)
        else:
            shared.setdefault(row.options, []).append(i)
    for options, members in shared.items():
        index = torch.tensor(members, device=logits.device)
        tokens[index] = pick(logits[index], options, None)
    return tokens


def first_codebook_scores(
    logits: Tensor,
    seen: list[list[int]],
    penalties: list[float],
    eos_allowed: list[bool],
    eos: int,
) -> Tensor:
    """`process_first_codebook` for rows with their own histories: logits (B, V), the distinct
    codebook-0 tokens each row has drawn so far, its repetition penalty, and whether it may
    stop now (it has drawn MIN_NEW_TOKENS tokens and does not ignore EOS) -> scores (B, V).

    Only distinct tokens matter (the reference gathers and scatters the same value for a repeat),
    so rows are padded with their own first token; a row with no history gets penalty 1.0, under
    which the update leaves every score bit for bit as it was.
    """
    scores = logits.float().clone()
    device = scores.device
    width = max((len(s) for s in seen), default=0)
    if width:
        padded = [s + [s[0]] * (width - len(s)) if s else [0] * width for s in seen]
        factor = [p if s else 1.0 for s, p in zip(seen, penalties, strict=True)]
        history = torch.tensor(padded, dtype=torch.long, device=device)  # (B, N)
        penalty = torch.tensor(factor, dtype=scores.dtype, device=device)[:, None]  # (B, 1)
        values = torch.gather(scores, 1, history)
        values = torch.where(values < 0, values * penalty, values / penalty)
        scores.scatter_(1, history, values)
    barred = [i for i, allowed in enumerate(eos_allowed) if not allowed]
    if barred:
        scores[torch.tensor(barred, device=device), eos] = -float("inf")
    vocab = scores.shape[-1]
    control = torch.arange(vocab - CONTROL_TOKENS, vocab, device=device)
    scores[:, control[control != eos]] = -float("inf")
    return scores
