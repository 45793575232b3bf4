"""Turns a batch of logits into next tokens, each row under its own sampling parameters.

One pass over the batch: penalties, then greedy rows take the argmax and the others are
temperature-scaled, filtered (top-k, top-p, min-p) and sampled with the exponential-race trick
(argmax of p / E, E ~ Exp(1)), which is an exact draw from p. A seeded row draws its noise from its
own generator, so its tokens do not depend on what else shares the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ferrum.device import to_device
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
    drop = rank >= to_device(top_k, torch.long, dev)[:, None]
    probs = ordered.masked_fill(drop, float("-inf")).softmax(-1)
    # keep the smallest prefix whose mass reaches top_p (the first token always stays)
    before = probs.cumsum(-1) - probs
    drop |= before >= to_device(top_p, probs.dtype, dev)[:, None]
    drop |= probs < to_device(min_p, probs.dtype, dev)[:, None] * probs[:, :1]
    drop[:, 0] = False
    return logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))


@dataclass
class DeviceSample:
    """What one step sampled, still on the device: the host reads it with `to_host` (at once,
    or a step later when steps overlap)."""

    tokens: torch.Tensor  # (B,) int64
    # per row the sampled token's logprob, and the top-k (values, ids); None: no row asked
    chosen: torch.Tensor | None = None  # (B,) float32
    top_values: torch.Tensor | None = None  # (B, K)
    top_ids: torch.Tensor | None = None  # (B, K)
    wanted: list[int | None] | None = None  # each row's logprobs count (None: not asked)

    def tensors(self) -> list[torch.Tensor]:
        return [
            t for t in (self.tokens, self.chosen, self.top_values, self.top_ids) if t is not None
        ]

    def to_host(self, tensors: list[torch.Tensor] | None = None) -> SamplerOutput:
        """Lists of the sampled values; `tensors` are host copies of `self.tensors()`."""
        got = tensors if tensors is not None else self.tensors()
        tokens = got[0].tolist()
        if self.wanted is None:
            return SamplerOutput(tokens, [None] * len(tokens))
        chosen, top_v, top_i = (t.tolist() for t in got[1:])
        result: list[tuple[float, list[tuple[int, float]]] | None] = []
        for i, k in enumerate(self.wanted):
            result.append(None if k is None else (chosen[i], list(zip(top_i[i][:k], top_v[i][:k]))))
        return SamplerOutput(tokens, result)


class Sampler:
    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        """logits: (B, V) float32, one row per entry of `rows`."""
        return self.sample(logits, rows).to_host()

    def sample(self, logits: torch.Tensor, rows: list[SamplingRow]) -> DeviceSample:
        """The next token of every row, left on the device (no synchronization)."""
        logits = logits.float()
        want_logprobs = any(r.params.logprobs is not None for r in rows)
        raw_logprobs = logits.log_softmax(-1) if want_logprobs else None
        if any(r.params.has_penalties for r in rows):
            logits = logits.clone()
            _apply_penalties(logits, rows)
        tokens = logits.argmax(-1)
        sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
        if sampled:
            idx = to_device(sampled, torch.long, logits.device)
            temps = [rows[i].params.temperature for i in sampled]
            temps = to_device(temps, logits.dtype, logits.device)
            scaled = _filter(logits[idx] / temps[:, None], [rows[i] for i in sampled])
            probs = scaled.softmax(-1)
            noise = torch.empty_like(probs)
            if any(rows[i].generator is not None for i in sampled):
                for j, i in enumerate(sampled):
                    noise[j].exponential_(generator=rows[i].generator)
            else:  # no seeded row: one draw for the whole batch, no per-row launches
                noise.exponential_()
            tokens[idx] = (probs / noise).argmax(-1)
        if raw_logprobs is None:
            return DeviceSample(tokens)
        wanted = [r.params.logprobs for r in rows]
        top_v, top_i = raw_logprobs.topk(max(max(k or 0 for k in wanted), 1), dim=-1)
        chosen = raw_logprobs.gather(-1, tokens[:, None])[:, 0]
        return DeviceSample(tokens, chosen, top_v, top_i, wanted)
