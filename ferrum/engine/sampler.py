"""Turns a batch of logits into next tokens, each row under its own sampling parameters.

One pass over the batch: penalties, then greedy rows take the argmax and the others are
temperature-scaled, filtered (top-k, top-p, min-p) and sampled with the exponential-race trick
(argmax of p / E, E ~ Exp(1)), which is an exact draw from p. A seeded row draws its noise from its
own generator, so its tokens do not depend on what else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ferrum.sampling_params import SamplingParams


@dataclass
class SamplerOutput:
    token_ids: list[int]
    # per row: (sampled token's logprob, [(token, logprob) best first]) or None when not asked
    logprobs: list[tuple[float, list[tuple[int, float]]] | None]


@dataclass
class SamplingRow:
    params: SamplingParams
    token_ids: list[int]  # the sequence's prompt + output (a reference, not a copy)
    num_prompt_tokens: int
    generator: torch.Generator | None  # set for seeded requests


def _apply_penalties(logits: torch.Tensor, rows: list[SamplingRow]) -> None:
    """In place, on the rows that ask for penalties (OpenAI / vLLM semantics)."""
    for i, row in enumerate(rows):
        p = row.params
        if not p.has_penalties:
            continue
        out = torch.tensor(
            row.token_ids[row.num_prompt_tokens :], dtype=torch.long, device=logits.device
        )
        if p.repetition_penalty != 1.0:
            seen = torch.tensor(row.token_ids, dtype=torch.long, device=logits.device).unique()
            vals = logits[i, seen]
            logits[i, seen] = torch.where(
                vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty
            )
        if out.numel() and (p.presence_penalty or p.frequency_penalty):
            counts = torch.zeros_like(logits[i]).scatter_add_(
                0, out, torch.ones_like(out, dtype=logits.dtype)
            )
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(
                logits.dtype
            )


def _filter(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    """Mask (to -inf) what top-k, top-p and min-p exclude; logits are already temperature-scaled."""
    vocab = logits.shape[-1]
    top_k = [r.params.top_k or vocab for r in rows]
    top_p = [r.params.top_p for r in rows]
    min_p = [r.params.min_p for r in rows]
    if all(k >= vocab for k in top_k) and all(p >= 1 for p in top_p) and not any(min_p):
        return logits
    dev = logits.device
    ordered, order = logits.sort(dim=-1, descending=True)  # (B, V)
    rank = torch.arange(vocab, device=dev)[None, :]
    drop = rank >= torch.tensor(top_k, device=dev)[:, None]
    probs = ordered.masked_fill(drop, float("-inf")).softmax(-1)
    # keep the smallest prefix whose mass reaches top_p (the first token always stays)
    before = probs.cumsum(-1) - probs
    drop |= before >= torch.tensor(top_p, device=dev, dtype=probs.dtype)[:, None]
    drop |= probs < torch.tensor(min_p, device=dev, dtype=probs.dtype)[:, None] * probs[:, :1]
    drop[:, 0] = False
    return logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))


def _top_logprobs(logprobs: torch.Tensor, tokens: torch.Tensor, rows: list[SamplingRow]):
    result: list[tuple[float, list[tuple[int, float]]] | None] = []
    wanted = max((r.params.logprobs or 0) for r in rows)
    top_v, top_i = logprobs.topk(max(wanted, 1), dim=-1)
    chosen = logprobs.gather(-1, tokens[:, None])[:, 0].tolist()
    top_v, top_i = top_v.tolist(), top_i.tolist()
    for i, row in enumerate(rows):
        if row.params.logprobs is None:
            result.append(None)
            continue
        k = row.params.logprobs
        result.append((chosen[i], list(zip(top_i[i][:k], top_v[i][:k]))))
    return result


class Sampler:
    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        """logits: (B, V) float32, one row per entry of `rows`."""
        logits = logits.float()
        want_logprobs = any(r.params.logprobs is not None for r in rows)
        raw_logprobs = logits.log_softmax(-1) if want_logprobs else None
        if any(r.params.has_penalties for r in rows):
            logits = logits.clone()
            _apply_penalties(logits, rows)
        tokens = logits.argmax(-1)
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if sampled:
            idx = torch.tensor(sampled, device=logits.device)
            temps = torch.tensor(
                [rows[i].params.temperature for i in sampled],
                device=logits.device,
                dtype=logits.dtype,
            )
            scaled = _filter(logits[idx] / temps[:, None], [rows[i] for i in sampled])
            probs = scaled.softmax(-1)
            noise = torch.empty_like(probs)
            if any(rows[i].generator is not None for i in sampled):
                for j, i in enumerate(sampled):
                    noise[j].exponential_(generator=rows[i].generator)
            else:  # no seeded row: one draw for the whole batch, no per-row launches
                noise.exponential_()
            tokens[idx] = (probs / noise).argmax(-1)
        lps = (
            _top_logprobs(raw_logprobs, tokens, rows)
            if raw_logprobs is not None
            else [None] * len(rows)
        )
        return SamplerOutput(tokens.tolist(), lps)
