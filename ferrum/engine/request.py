"""A generation request inside the engine: its n sequences, their detokenizers and timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ferrum.engine.detokenizer import IncrementalDetokenizer
from ferrum.engine.sequence import Sequence
from ferrum.outputs import CompletionOutput, RequestMetrics, RequestOutput, TokenLogprob
from ferrum.sampling_params import SamplingParams


@dataclass
class SeqState:
    seq: Sequence
    detok: IncrementalDetokenizer
    generator: torch.Generator | None
    logprobs: list[TokenLogprob] | None
    sent_tokens: int = 0  # output tokens already reported
    sent_logprobs: int = 0
    reported_finish: bool = False
    # text decoded once at the end: nobody reads it before, and no stop string needs it
    deferred_text: bool = False


@dataclass
class Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    stream: bool = True  # report every step's progress; else only the finished request
    states: list[SeqState] = field(default_factory=list)
    metrics: RequestMetrics = field(default_factory=lambda: RequestMetrics(time.perf_counter()))

    @property
    def finished(self) -> bool:
        return all(s.seq.is_finished for s in self.states)

    def output(self) -> RequestOutput:
        """The request's state now, with deltas since the previous call."""
        completions = []
        for s in self.states:
            seq = s.seq
            finished = seq.is_finished
            out_ids = seq.output_token_ids
            delta_lp = None
            if s.logprobs is not None:
                delta_lp = s.logprobs[s.sent_logprobs :]
                s.sent_logprobs = len(s.logprobs)
            delta_text = s.detok.take_delta(finished)
            completions.append(
                CompletionOutput(
                    index=seq.index,
                    text=s.detok.text[: s.detok.emitted],
                    token_ids=out_ids,
                    finish_reason=seq.finish_reason if finished else None,
                    stop_reason=seq.stop_reason,
                    delta_text=delta_text,
                    delta_token_ids=out_ids[s.sent_tokens :],
                    logprobs=s.logprobs,
                    delta_logprobs=delta_lp,
                )
            )
            s.sent_tokens = len(out_ids)
            s.reported_finish = finished
        return RequestOutput(
            request_id=self.request_id,
            prompt=self.prompt,
            prompt_token_ids=self.prompt_token_ids,
            outputs=completions,
            finished=self.finished,
            metrics=self.metrics,
        )
