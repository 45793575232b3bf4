"""Decode a batch of 30-second windows into tokens: one encoder pass, then the decoder step by
step through small strategy objects (a token decoder picks the next token, logit filters forbid
tokens), the way openai/whisper's decoding.py is laid out.

Design note: every row of a batch decodes in lockstep. All rows start from prompts of the same
length (the same prompt text, their own language token), so one KV-cache offset serves all;
a row that has finished keeps receiving end-of-text until the whole batch is done. Beam search
and best-of sampling widen each audio to `n_group` rows and reorder the cache as beams survive.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ferrum.audio.checkpoint import WhisperCheckpoint
from ferrum.audio.tokens import TIME_PRECISION, WhisperTokenizer
from ferrum.errors import InvalidInputError
from ferrum.models.whisper import KVCache

NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodingOptions:
    """How to decode one window (openai/whisper's options, same names and meanings)."""

    task: str = "transcribe"  # "transcribe" (same language) or "translate" (into English)
    language: str | None = None  # language code; None detects it (multilingual models)
    temperature: float = 0.0  # 0: greedy or beam search; > 0: sampling
    sample_len: int | None = None  # most tokens to produce (None: half the text context)
    best_of: int | None = None  # samples drawn at temperature > 0; the most likely is kept
    beam_size: int | None = None  # beams at temperature 0 (None or 1: greedy)
    patience: float | None = None  # beam search stops after beam_size × patience finished beams
    length_penalty: float | None = None  # None: rank by mean logprob; α: Google NMT penalty
    prompt: tuple[int, ...] = ()  # previous text, fed after <|startofprev|> as context
    prefix: tuple[int, ...] = ()  # tokens this window's text is forced to start with
    suppress_tokens: tuple[int, ...] = (-1,)  # -1 stands for the checkpoint's non-speech tokens
    suppress_blank: bool = True  # no space or end-of-text as the first text token
    without_timestamps: bool = False  # text only, no <|t|> tokens
    max_initial_timestamp: float | None = 1.0  # seconds: latest allowed first timestamp


@dataclass(frozen=True)
class DecodingResult:
    """One window's decoded text and the numbers transcription uses to judge it."""

    language: str  # language code used (detected or given)
    tokens: tuple[int, ...]  # text and timestamp tokens, without prompt or end-of-text
    text: str  # the text tokens decoded, stripped
    avg_logprob: float  # mean log-probability of the sampled tokens (end-of-text included)
    no_speech_prob: float  # probability of <|nospeech|> at the start of transcript
    temperature: float  # temperature used
    compression_ratio: float  # text bytes / zlib bytes: high means repeating text
    language_probs: dict[str, float] = field(default_factory=dict)  # when detected


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


# --- logit filters ---------------------------------------------------------------------------


class LogitFilter(ABC):
    """Forbids tokens in place: (rows, V) logits, given tokens so far (rows, T)."""

    @abstractmethod
    def apply(self, logits: Tensor, tokens: Tensor) -> None: ...


class SuppressBlank(LogitFilter):
    """The first text token is neither a space nor end-of-text."""

    def __init__(self, blank_tokens: list[int], sample_begin: int) -> None:
        self.blank_tokens = blank_tokens
        self.sample_begin = sample_begin

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits[:, self.blank_tokens] = NEG_INF


class SuppressTokens(LogitFilter):
    """Tokens that are never produced (non-speech symbols, control tokens)."""

    def __init__(self, suppress_tokens: list[int]) -> None:
        self.suppress_tokens = suppress_tokens

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        logits[:, self.suppress_tokens] = NEG_INF


class ApplyTimestampRules(LogitFilter):
    """Timestamps come in pairs (segment end, next start) that never go back; text cannot start
    without a timestamp; when timestamps together outweigh every text token, take one."""

    def __init__(
        self, tokenizer: WhisperTokenizer, sample_begin: int, max_initial_index: int | None
    ):
        self.special = tokenizer.special
        self.sample_begin = sample_begin
        self.max_initial_index = max_initial_index

    def apply(self, logits: Tensor, tokens: Tensor) -> None:
        ts_begin, eot = self.special.timestamp_begin, self.special.eot
        logits[:, self.special.no_timestamps] = NEG_INF
        for k, row in enumerate(tokens[:, self.sample_begin :].tolist()):
            last_was_ts = len(row) >= 1 and row[-1] >= ts_begin
            penultimate_was_ts = len(row) < 2 or row[-2] >= ts_begin
            if last_was_ts:
                if penultimate_was_ts:  # a pair is complete: text (or end) comes next
                    logits[k, ts_begin:] = NEG_INF
                else:  # a segment just ended: another timestamp or end-of-text
                    logits[k, :eot] = NEG_INF
            timestamps = [t for t in row if t >= ts_begin]
            if timestamps:
                # never go back in time; a new segment must be longer than zero
                floor = (
                    timestamps[-1] if last_was_ts and not penultimate_was_ts else timestamps[-1] + 1
                )
                logits[k, ts_begin:floor] = NEG_INF
        if tokens.shape[1] == self.sample_begin:
            logits[:, :ts_begin] = NEG_INF
            if self.max_initial_index is not None:
                logits[:, ts_begin + self.max_initial_index + 1 :] = NEG_INF
        logprobs = F.log_softmax(logits.float(), dim=-1)
        timestamp_logprob = logprobs[:, ts_begin:].logsumexp(dim=-1)  # (rows,)
        max_text_logprob = logprobs[:, :ts_begin].max(dim=-1).values  # (rows,)
        logits[timestamp_logprob > max_text_logprob, :ts_begin] = NEG_INF


# --- token decoders --------------------------------------------------------------------------


class TokenDecoder(ABC):
    """Chooses next tokens; knows when decoding is done and which sequence wins."""

    def reset(self) -> None:  # noqa: B027 - stateless decoders have nothing to forget
        """Forget state from a previous batch."""

    @abstractmethod
    def update(
        self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor, cache: KVCache
    ) -> tuple[Tensor, bool]:
        """Append one token to each row of `tokens` (rows, T) → (rows, T + 1); True when done."""

    @abstractmethod
    def finalize(
        self, tokens: Tensor, sum_logprobs: Tensor
    ) -> tuple[list[list[Tensor]], list[list[float]]]:
        """Candidate sequences and their summed logprobs, grouped per audio."""


class GreedyDecoder(TokenDecoder):
    """Argmax at temperature 0, else a sample from the softened distribution."""

    def __init__(self, temperature: float, eot: int, n_group: int) -> None:
        self.temperature = temperature
        self.eot = eot
        self.n_group = n_group

    def update(
        self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor, cache: KVCache
    ) -> tuple[Tensor, bool]:
        if self.temperature == 0:
            next_tokens = logits.argmax(dim=-1)
        else:
            next_tokens = torch.distributions.Categorical(logits=logits / self.temperature).sample()
        logprobs = F.log_softmax(logits.float(), dim=-1)
        current = logprobs[torch.arange(logprobs.shape[0]), next_tokens]
        finished = tokens[:, -1] == self.eot
        sum_logprobs += current * ~finished
        next_tokens[finished] = self.eot
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=-1)
        return tokens, bool((tokens[:, -1] == self.eot).all())

    def finalize(
        self, tokens: Tensor, sum_logprobs: Tensor
    ) -> tuple[list[list[Tensor]], list[list[float]]]:
        tokens = F.pad(tokens, (0, 1), value=self.eot)  # every sequence ends with end-of-text
        groups = tokens.view(-1, self.n_group, tokens.shape[-1])
        scores = sum_logprobs.view(-1, self.n_group).tolist()
        return [list(g) for g in groups], scores


class BeamSearchDecoder(TokenDecoder):
    """Beam search over `beam_size` rows per audio; finished beams are set aside until each
    audio has beam_size × patience of them."""

    def __init__(self, beam_size: int, eot: int, patience: float | None) -> None:
        self.beam_size = beam_size
        self.eot = eot
        self.max_candidates = round(beam_size * (patience or 1.0))
        if self.max_candidates <= 0:
            raise InvalidInputError(f"patience {patience} leaves no beam candidates")
        self.finished: list[dict[tuple[int, ...], float]] = []

    def reset(self) -> None:
        self.finished = []

    def update(
        self, tokens: Tensor, logits: Tensor, sum_logprobs: Tensor, cache: KVCache
    ) -> tuple[Tensor, bool]:
        n_audio = tokens.shape[0] // self.beam_size
        if not self.finished:
            self.finished = [{} for _ in range(n_audio)]
        logprobs = F.log_softmax(logits.float(), dim=-1)
        top_logprobs, top_tokens = logprobs.topk(self.beam_size + 1, dim=-1)  # (rows, beam + 1)
        scores = (sum_logprobs[:, None] + top_logprobs).tolist()
        top_tokens_list = top_tokens.tolist()
        rows = tokens.tolist()
        next_rows, source, next_scores = [], [], []
        for i in range(n_audio):
            candidates: dict[tuple[int, ...], tuple[float, int]] = {}
            for j in range(self.beam_size):
                r = i * self.beam_size + j
                for score, token in zip(scores[r], top_tokens_list[r], strict=True):
                    candidates[(*rows[r], token)] = (score, r)
            kept = 0
            for seq in sorted(candidates, key=lambda s: candidates[s][0], reverse=True):
                score, r = candidates[seq]
                if seq[-1] == self.eot:
                    self.finished[i].setdefault(seq, score)
                else:
                    next_rows.append(seq)
                    source.append(r)
                    next_scores.append(score)
                    kept += 1
                    if kept == self.beam_size:
                        break
        index = torch.tensor(source, device=tokens.device)
        cache.reorder(index)
        sum_logprobs.copy_(torch.tensor(next_scores, device=sum_logprobs.device))
        tokens = torch.tensor(next_rows, device=tokens.device)
        done = all(len(f) >= self.max_candidates for f in self.finished)
        return tokens, done

    def finalize(
        self, tokens: Tensor, sum_logprobs: Tensor
    ) -> tuple[list[list[Tensor]], list[list[float]]]:
        scores = sum_logprobs.tolist()
        rows = tokens.tolist()
        sequences, seq_scores = [], []
        for i, finished in enumerate(self.finished):
            if len(finished) < self.beam_size:  # too few ended: take the best unfinished beams
                order = sorted(range(self.beam_size), key=lambda j: -scores[i * self.beam_size + j])
                for j in order[: self.beam_size - len(finished)]:
                    r = i * self.beam_size + j
                    finished[(*rows[r], self.eot)] = scores[r]
            sequences.append([torch.tensor(s) for s in finished])
            seq_scores.append(list(finished.values()))
        return sequences, seq_scores


def rank_by_length(lengths: list[int], logprobs: list[float], length_penalty: float | None) -> int:
    """The best candidate: mean logprob, or logprob / ((5 + length) / 6) ** α (Google NMT)."""

    def score(length: int, logprob: float) -> float:
        penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
        return logprob / max(penalty, 1e-9)

    return max(range(len(lengths)), key=lambda i: score(lengths[i], logprobs[i]))


# --- the decoding task -----------------------------------------------------------------------


class DecodingTask:
    """Decode a batch of windows with one set of options."""

    def __init__(self, checkpoint: WhisperCheckpoint, options: DecodingOptions) -> None:
        self.model = checkpoint.model
        self.tokenizer = checkpoint.tokenizer
        self.hints = checkpoint.hints
        self.options = options
        special = self.tokenizer.special
        self.n_group = options.beam_size or options.best_of or 1
        self.sample_len = options.sample_len or self.model.dims.n_text_ctx // 2
        if options.temperature == 0 and options.best_of not in (None, 1):
            raise InvalidInputError(
                "best_of needs temperature > 0 (use beam_size at temperature 0)"
            )
        if options.beam_size not in (None, 1) and options.temperature != 0:
            raise InvalidInputError("beam_size needs temperature 0")
        self.decoder: TokenDecoder
        if options.beam_size not in (None, 1):
            self.decoder = BeamSearchDecoder(options.beam_size, special.eot, options.patience)  # type: ignore[arg-type]
        else:
            self.decoder = GreedyDecoder(options.temperature, special.eot, self.n_group)
        self.prompt_tokens = self._prompt_tokens()
        self.sot_index = len(self.prompt_tokens)  # where <|startoftranscript|> sits
        sot_len = len(
            self.tokenizer.sot_sequence(
                options.language, options.task, not options.without_timestamps
            )
        )
        self.sample_begin = self.sot_index + sot_len + len(options.prefix)
        self.filters = self._filters()

    def _prompt_tokens(self) -> list[int]:
        if not self.options.prompt:
            return []
        keep = self.model.dims.n_text_ctx // 2 - 1
        return [self.tokenizer.special.sot_prev, *self.options.prompt[-keep:]]

    def _filters(self) -> list[LogitFilter]:
        filters: list[LogitFilter] = []
        special = self.tokenizer.special
        if self.options.suppress_blank:
            blank = self.tokenizer.encode(" ") + [special.eot]
            filters.append(
                SuppressBlank(
                    sorted(set(blank) | set(self.hints.begin_suppress_tokens)), self.sample_begin
                )
            )
        filters.append(SuppressTokens(self._suppress_list()))
        if not self.options.without_timestamps:
            max_initial = None
            if self.options.max_initial_timestamp is not None:
                max_initial = round(self.options.max_initial_timestamp / TIME_PRECISION)
            filters.append(ApplyTimestampRules(self.tokenizer, self.sample_begin, max_initial))
        return filters

    def _suppress_list(self) -> list[int]:
        special = self.tokenizer.special
        tokens = set(self.options.suppress_tokens)
        if -1 in tokens:
            tokens.discard(-1)
            tokens |= set(self.hints.suppress_tokens)
        # control tokens are never text; <|nospeech|> is read, not produced
        tokens |= {
            special.transcribe,
            special.translate,
            special.sot,
            special.sot_prev,
            special.no_speech,
        }
        return sorted(t for t in tokens if 0 <= t < self.model.dims.n_vocab)

    @torch.inference_mode()
    def run(self, mel: Tensor) -> list[DecodingResult]:
        """mel (B, n_mels, 3000) → one result per window."""
        model = self.model
        mel = mel.to(next(model.parameters()).dtype)
        audio_features = model.encoder(mel)  # (B, 1500, D)
        languages, language_probs = self._languages(audio_features)
        rows = [
            self.prompt_tokens
            + self.tokenizer.sot_sequence(
                lang, self.options.task, not self.options.without_timestamps
            )
            + list(self.options.prefix)
            for lang in languages
        ]
        tokens = torch.tensor(rows, device=mel.device)  # (B, T0)
        cache = model.decoder.new_cache(audio_features)
        tokens, sum_logprobs, no_speech_probs = self._main_loop(tokens, cache)
        return self._results(tokens, sum_logprobs, no_speech_probs, languages, language_probs)

    def _languages(self, audio_features: Tensor) -> tuple[list[str], list[dict[str, float]]]:
        b = audio_features.shape[0]
        if self.options.language or not self.tokenizer.multilingual:
            return [self.options.language or "en"] * b, [{} for _ in range(b)]
        return detect_language(self.model, self.tokenizer, audio_features)

    def _main_loop(self, tokens: Tensor, cache: KVCache) -> tuple[Tensor, Tensor, list[float]]:
        n_audio = tokens.shape[0]
        special = self.tokenizer.special
        if self.n_group > 1:
            cache.repeat(self.n_group)
            tokens = tokens.repeat_interleave(self.n_group, dim=0)
        sum_logprobs = torch.zeros(tokens.shape[0], device=tokens.device)
        self.decoder.reset()
        no_speech_probs = [float("nan")] * n_audio
        step_input = tokens
        for i in range(self.sample_len):
            # the first step's prompt: only the rows at SOT (no-speech probability) and the end
            at = [self.sot_index, -1] if i == 0 else None
            logits, _ = self.model.decoder(step_input, cache, logits_at=at)  # (rows, T', V)
            if i == 0:
                probs_at_sot = logits[:, 0].float().softmax(dim=-1)
                no_speech_probs = probs_at_sot[:: self.n_group, special.no_speech].tolist()
            logits = logits[:, -1]  # (rows, V)
            for logit_filter in self.filters:
                logit_filter.apply(logits, tokens)
            tokens, done = self.decoder.update(tokens, logits, sum_logprobs, cache)
            if done or tokens.shape[1] >= self.model.dims.n_text_ctx:
                break
            step_input = tokens[:, -1:]
        return tokens, sum_logprobs, no_speech_probs

    def _results(
        self,
        tokens: Tensor,
        sum_logprobs: Tensor,
        no_speech_probs: list[float],
        languages: list[str],
        language_probs: list[dict[str, float]],
    ) -> list[DecodingResult]:
        eot = self.tokenizer.special.eot
        groups, scores = self.decoder.finalize(tokens, sum_logprobs)
        results = []
        for i, (candidates, logprobs) in enumerate(zip(groups, scores, strict=True)):
            texts = []
            for seq in candidates:
                seq = seq[self.sample_begin :].tolist()
                texts.append(seq[: seq.index(eot)] if eot in seq else seq)
            best = rank_by_length([len(t) for t in texts], logprobs, self.options.length_penalty)
            text_tokens = texts[best]
            text = self.tokenizer.decode(text_tokens).strip()
            results.append(
                DecodingResult(
                    language=languages[i],
                    tokens=tuple(text_tokens),
                    text=text,
                    avg_logprob=logprobs[best] / (len(text_tokens) + 1),
                    no_speech_prob=no_speech_probs[i],
                    temperature=self.options.temperature,
                    compression_ratio=compression_ratio(text),
                    language_probs=language_probs[i],
                )
            )
        return results


@torch.inference_mode()
def detect_language(
    model: torch.nn.Module, tokenizer: WhisperTokenizer, audio_features: Tensor
) -> tuple[list[str], list[dict[str, float]]]:
    """The most likely language of each window, from the token after <|startoftranscript|>."""
    if not tokenizer.languages:
        raise InvalidInputError("this model's tokenizer has no language tokens")
    b = audio_features.shape[0]
    cache = model.decoder.new_cache(audio_features)
    sot = torch.full((b, 1), tokenizer.special.sot, device=audio_features.device)
    logits, _ = model.decoder(sot, cache)  # (B, 1, V)
    codes = list(tokenizer.languages)
    ids = torch.tensor(list(tokenizer.languages.values()), device=logits.device)
    probs = logits[:, 0, ids].float().softmax(dim=-1)  # (B, languages)
    best = probs.argmax(dim=-1).tolist()
    all_probs = [dict(zip(codes, row, strict=True)) for row in probs.tolist()]
    return [codes[i] for i in best], all_probs


def decode(
    checkpoint: WhisperCheckpoint, mel: Tensor, options: DecodingOptions
) -> list[DecodingResult]:
    """Decode windows mel (B, n_mels, 3000) (or one window (n_mels, 3000)) with `options`."""
    if mel.ndim == 2:
        mel = mel[None]
    return DecodingTask(checkpoint, options).run(mel)


def with_temperature(options: DecodingOptions, temperature: float) -> DecodingOptions:
    """The options for one fallback attempt: sampling drops beam search, greedy drops best_of."""
    if temperature > 0:
        return replace(options, temperature=temperature, beam_size=None)
    return replace(options, temperature=temperature, best_of=None)
