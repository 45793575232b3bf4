"""Text to codec frames: the talker's autoregressive loop over a batch of prompts.

Each step the talker's logits give codebook 0 of a frame; the code predictor completes the frame
from the talker's last hidden state; the frame's summed embedding, plus the next trailing-text
embedding (or tts_pad once the text has run out), is the talker's next input. A request ends at
its codec EOS. As in the reference, `max_new_tokens` counts codebook-0 tokens and the last one is
never completed into a frame, so a request that never stops yields `max_new_tokens - 1` frames.

Prompts of different lengths are left-padded; each request keeps its own positions. A finished
request keeps stepping with EOS as its input (as transformers does) until all are done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ferrum.errors import InvalidInputError
from ferrum.models.qwen3_tts.prompt import TalkerPrompt
from ferrum.models.qwen3_tts.sampling import SamplingOptions, pick, process_first_codebook
from ferrum.models.qwen3_tts.talker import Talker

DEFAULT_MAX_NEW_TOKENS = 2048  # codebook-0 tokens: 164 s of speech at 12.5 frames a second


@dataclass(frozen=True)
class GenerationOptions:
    """How the talker and the code predictor choose tokens (defaults: the reference's)."""

    talker: SamplingOptions = field(default_factory=SamplingOptions)
    code_predictor: SamplingOptions = field(default_factory=SamplingOptions)
    repetition_penalty: float = 1.05  # on codebook-0 tokens already generated
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int | None = None  # None: torch's global generator
    ignore_eos: bool = False  # never stop before max_new_tokens (benchmarks)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise InvalidInputError("max_new_tokens must be >= 1")
        if self.repetition_penalty <= 0:
            raise InvalidInputError("repetition_penalty must be > 0")

    @classmethod
    def greedy(cls, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> GenerationOptions:
        argmax = SamplingOptions(do_sample=False)
        return cls(talker=argmax, code_predictor=argmax, max_new_tokens=max_new_tokens)

    @classmethod
    def from_generation_config(cls, raw: dict, **overrides: object) -> GenerationOptions:
        """Options from a checkpoint's generation_config.json (keys the reference reads)."""

        def stage(prefix: str) -> SamplingOptions:
            base = SamplingOptions()
            return SamplingOptions(
                do_sample=bool(raw.get(f"{prefix}do_sample", base.do_sample)),
                temperature=float(raw.get(f"{prefix}temperature", base.temperature)),
                top_k=int(raw.get(f"{prefix}top_k", base.top_k)),
                top_p=float(raw.get(f"{prefix}top_p", base.top_p)),
            )

        values: dict[str, object] = {
            "talker": stage(""),
            "code_predictor": stage("subtalker_"),
            "repetition_penalty": float(raw.get("repetition_penalty", 1.05)),
            "max_new_tokens": int(raw.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


def pad_prompts(prompts: list[TalkerPrompt], tts_pad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad prompts -> embeds (B, T, D), valid (B, T) bool, trailing text (B, L, D) padded
    on the right with tts_pad (1, D)."""
    longest = max(p.embeds.shape[0] for p in prompts)
    trailing_len = max(p.trailing_text.shape[0] for p in prompts)
    b, d = len(prompts), tts_pad.shape[-1]
    like = prompts[0].embeds
    embeds = like.new_zeros(b, longest, d)
    valid = torch.zeros(b, longest, dtype=torch.bool, device=like.device)
    trailing = tts_pad.reshape(1, 1, d).repeat(b, trailing_len, 1)
    for i, p in enumerate(prompts):
        n = p.embeds.shape[0]
        embeds[i, longest - n :] = p.embeds
        valid[i, longest - n :] = True
        trailing[i, : p.trailing_text.shape[0]] = p.trailing_text
    return embeds, valid, trailing


@torch.inference_mode()
def generate_codes(
    talker: Talker,
    prompts: list[TalkerPrompt],
    tts_pad: Tensor,
    options: GenerationOptions,
) -> list[Tensor]:
    """Codec frames (frames, Q) int64 for each prompt, in order."""
    if not prompts:
        return []
    generator = None
    if options.seed is not None:
        generator = torch.Generator(device=tts_pad.device).manual_seed(options.seed)
    eos = talker.config.codec.eos
    embeds, valid, trailing = pad_prompts(prompts, tts_pad)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # (B, T) each request from 0
    lengths = valid.sum(-1, keepdim=True)  # (B, 1) next position of each request
    hidden, cache = talker.model(embeds, positions, valid, None)
    last = hidden[:, -1]  # (B, D)
    b = embeds.shape[0]
    history = torch.zeros(b, 0, dtype=torch.long, device=embeds.device)
    finished = torch.zeros(b, dtype=torch.bool, device=embeds.device)
    frames: list[Tensor] = []
    step_valid = torch.ones(b, 1, dtype=torch.bool, device=embeds.device)
    for step in range(options.max_new_tokens):
        scores = process_first_codebook(
            talker.codec_head(last), history, eos, options.repetition_penalty
        )
        if options.ignore_eos:
            scores[:, eos] = -float("inf")
        token = pick(scores, options.talker, generator)
        token = torch.where(finished, torch.full_like(token, eos), token)
        history = torch.cat((history, token[:, None]), dim=1)
        finished |= token == eos
        if bool(finished.all()) or step == options.max_new_tokens - 1:
            break
        residual = talker.code_predictor.predict(
            last,
            talker.embed_codec(token),
            lambda logits: pick(logits, options.code_predictor, generator),
        )
        frame = torch.cat((token[:, None], residual), dim=1)  # (B, Q)
        frames.append(frame)
        text = trailing[:, step] if step < trailing.shape[1] else tts_pad.expand(b, -1)
        x = (talker.embed_frame(frame) + text)[:, None]  # (B, 1, D)
        hidden, cache = talker.model(x, lengths + step, step_valid, cache)
        last = hidden[:, -1]
    return _cut_at_eos(frames, b, talker.config.num_code_groups, eos, embeds.device)


def _cut_at_eos(
    frames: list[Tensor], batch: int, groups: int, eos: int, device: torch.device
) -> list[Tensor]:
    if not frames:
        return [torch.zeros(0, groups, dtype=torch.long, device=device) for _ in range(batch)]
    codes = torch.stack(frames, dim=1)  # (B, frames, Q)
    out = []
    for row in codes:
        stops = (row[:, 0] == eos).nonzero()
        out.append(row[: int(stops[0])] if len(stops) else row)
    return out
