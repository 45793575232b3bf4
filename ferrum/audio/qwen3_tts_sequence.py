"""One Qwen3-TTS request inside the continuous-batching engine: the scheduler's `Sequence` (its
counters and KV blocks) plus what the talker needs that token ids cannot carry.

The talker's inputs are embeddings, so the sequence's "tokens" are input rows: the prompt (T rows),
then one row per generated frame (the frame's summed codec embedding plus the next text
embedding). `Sequence.token_ids` only mirrors their count (placeholder ids; prefix caching is
off), which is all the scheduler and block manager reason about. Every row is kept, so a
preempted request is recomputed from its rows exactly like an LLM sequence from its tokens.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ferrum.engine.sequence import Sequence
from ferrum.models.qwen3_tts.generate import GenerationOptions
from ferrum.models.qwen3_tts.prompt import TalkerPrompt
from ferrum.models.qwen3_tts.row_sampling import RowSampling
from ferrum.models.qwen3_tts.sampling import MIN_NEW_TOKENS
from ferrum.sampling_params import SamplingParams

PLACEHOLDER_ID = 0  # stands in for an input row in `Sequence.token_ids`


@dataclass
class SpeechSequence:
    """A request's state between steps (engine thread only, after construction)."""

    seq: Sequence
    prompt: TalkerPrompt
    tts_pad: Tensor  # (1, hidden) text added once the trailing text has run out
    options: GenerationOptions
    talker_sampling: RowSampling
    predictor_sampling: RowSampling
    future: Future[Tensor] = field(default_factory=Future)
    frame_inputs: list[Tensor] = field(default_factory=list)  # (1, hidden) input of each frame
    frames: list[Tensor] = field(default_factory=list)  # (Q,) codes of each frame
    seen: list[int] = field(default_factory=list)  # distinct codebook-0 tokens drawn
    drawn: int = 0  # codebook-0 tokens drawn (frames plus the last, never completed, one)

    @classmethod
    def create(
        cls, prompt: TalkerPrompt, tts_pad: Tensor, options: GenerationOptions
    ) -> SpeechSequence:
        generator = None
        if options.seed is not None:
            generator = torch.Generator(device=tts_pad.device).manual_seed(options.seed)
        length = prompt.embeds.shape[0]
        return cls(
            seq=Sequence([PLACEHOLDER_ID] * length, SamplingParams()),
            prompt=prompt,
            tts_pad=tts_pad,
            options=options,
            talker_sampling=RowSampling(options.talker, generator),
            predictor_sampling=RowSampling(options.code_predictor, generator),
        )

    @property
    def prompt_len(self) -> int:
        return int(self.prompt.embeds.shape[0])

    @property
    def num_kv_slots(self) -> int:
        """Cache slots the request may need at most: its prompt and every frame's input."""
        return self.prompt_len + self.options.max_new_tokens - 1

    @property
    def may_stop(self) -> bool:
        """Whether EOS may be drawn now (never before MIN_NEW_TOKENS tokens, nor if ignored)."""
        return self.drawn >= MIN_NEW_TOKENS and not self.options.ignore_eos

    def input_rows(self, start: int, end: int) -> Tensor:
        """Input rows start..end-1 (of the prompt, then of the frames): (end - start, hidden)."""
        n = self.prompt_len
        if end <= n:
            return self.prompt.embeds[start:end]
        if start >= n and end - start == 1:  # a decode step: no copy
            return self.frame_inputs[start - n]
        return torch.cat((self.prompt.embeds, *self.frame_inputs))[start:end]

    def next_text(self) -> Tensor:
        """The text row added to the input of the frame being completed now: (1, hidden)."""
        i = len(self.frames)
        trailing = self.prompt.trailing_text
        return trailing[i : i + 1] if i < trailing.shape[0] else self.tts_pad

    def record_token(self, token: int, eos: int) -> bool:
        """Count a drawn codebook-0 token; True when the request is done (EOS, or the frame
        limit: as in `generate_codes`, the last token of `max_new_tokens` is not completed)."""
        self.drawn += 1
        if token not in self.seen:
            self.seen.append(token)
        return token == eos or self.drawn >= self.options.max_new_tokens

    def add_frame(self, codes: Tensor, next_input: Tensor) -> None:
        """A completed frame (Q,) and the talker's input row (1, hidden) that follows it."""
        self.frames.append(codes)
        self.frame_inputs.append(next_input)
        self.seq.append_token(PLACEHOLDER_ID)

    def codes(self, num_groups: int) -> Tensor:
        """The request's codec frames (frames, Q) int64."""
        if not self.frames:
            return torch.zeros(0, num_groups, dtype=torch.long, device=self.tts_pad.device)
        return torch.stack(self.frames)
