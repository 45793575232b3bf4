"""Transcribe or translate whole recordings with Whisper.

Two ways through a recording:
- sequential (openai/whisper's algorithm): 30-s windows, each starting where the last complete
  segment ended (timestamp-based seeking), the previous segments fed as a prompt with their
  timestamp tokens (without them the model stops writing timestamps, cannot seek, and repeats);
- batched: the audio is cut into ≤30-s chunks at silences (energy VAD), and chunks (from any
  number of files) are decoded side by side; no prompt, each chunk stands alone.
Both retry a window at higher temperatures when its text repeats (compression ratio) or is
unlikely (mean logprob), and drop windows that are silence (energy gate, no-speech probability).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ferrum.audio.alignment import WordTiming, align_words
from ferrum.audio.checkpoint import WhisperCheckpoint, load_whisper
from ferrum.audio.decoding import DecodingOptions, DecodingResult, decode, with_temperature
from ferrum.audio.fallback import QualityThresholds, best_attempt, is_silence, needs_fallback
from ferrum.audio.io import SAMPLE_RATE, load_audio
from ferrum.audio.mel import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    log_mel_spectrogram,
    pad_or_trim,
)
from ferrum.audio.tokens import TIME_PRECISION
from ferrum.audio.transcript import Segment, TranscriptionResult, Word
from ferrum.audio.vad import Chunk, is_silent, speech_chunks
from ferrum.device import Backend
from ferrum.errors import InvalidInputError

INPUT_STRIDE = 2  # mel frames per encoder position (and per timestamp step)
PROMPT_RESET_TEMPERATURE = 0.5  # text sampled hotter than this is not used as a prompt

AudioInput = str | Path | np.ndarray | torch.Tensor
Progress = Callable[[float, float], None]  # (seconds done, seconds total)


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe a recording."""

    task: str = "transcribe"  # "transcribe" or "translate" (into English)
    language: str | None = None  # language code; None detects it
    temperature: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # tried in turn on failure
    beam_size: int | None = None  # beams at temperature 0 (None or 1: greedy)
    best_of: int | None = 5  # samples at temperature > 0
    patience: float | None = None  # beam search patience
    length_penalty: float | None = None  # None: mean logprob ranking
    compression_ratio_threshold: float | None = 2.4  # above: the text repeats, retry hotter
    logprob_threshold: float | None = -1.0  # below: the text is unlikely, retry hotter
    no_speech_threshold: float | None = 0.6  # above (and unlikely text): the window is silence
    condition_on_previous_text: bool = True  # feed the previous text as a prompt (sequential)
    initial_prompt: str | None = None  # text that primes the first window (spelling, style)
    without_timestamps: bool = False  # one segment per window, no timestamp tokens
    word_timestamps: bool = False  # time every word (cross-attention alignment)
    batch_size: int = 1  # > 1: VAD chunks decoded this many at a time (batched mode)


class Transcriber:
    """A loaded Whisper model that turns audio into text.

    `spec` is a path, an alias (`whisper-tiny.en`, `whisper-base`, `whisper-turbo`, …), a hub id,
    or None for the embedded default.
    """

    def __init__(self, spec: str | None = None, device: str = "auto", dtype: str = "auto") -> None:
        self.checkpoint: WhisperCheckpoint = load_whisper(spec, Backend.resolve(device, dtype))

    @property
    def name(self) -> str:
        return self.checkpoint.name

    def transcribe(
        self,
        audio: AudioInput,
        options: TranscribeOptions | None = None,
        progress: Progress | None = None,
    ) -> TranscriptionResult:
        """The whole transcript of one file or waveform (16 kHz mono float)."""
        options = options or TranscribeOptions()
        samples, source = _samples(audio)
        if options.batch_size > 1:
            return self.transcribe_batch([samples], options, progress, [source])[0]
        language = self._language(samples, options)
        segments = tuple(self._sequential(samples, replace(options, language=language), progress))
        return _result(segments, language, samples, source)

    def iter_segments(
        self, audio: AudioInput, options: TranscribeOptions | None = None
    ) -> Iterator[Segment]:
        """Segments of one file as they are decoded (sequential mode, whatever batch_size)."""
        options = options or TranscribeOptions()
        samples, _ = _samples(audio)
        language = self._language(samples, options)
        yield from self._sequential(samples, replace(options, language=language), None)

    def transcribe_batch(
        self,
        audios: Sequence[AudioInput],
        options: TranscribeOptions | None = None,
        progress: Progress | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[TranscriptionResult]:
        """Several files at once: speech chunks of all of them decoded `batch_size` at a time."""
        options = options or TranscribeOptions()
        loaded = [_samples(a) for a in audios]
        samples = [s for s, _ in loaded]
        names = list(sources) if sources else [src for _, src in loaded]
        languages = [self._language(s, options) for s in samples]
        work = [(i, c) for i, s in enumerate(samples) for c in speech_chunks(s)]
        total = sum(len(s) for s in samples) / SAMPLE_RATE
        per_file: list[list[Segment]] = [[] for _ in samples]
        batch = max(1, options.batch_size)
        done = 0.0
        for at in range(0, len(work), batch):
            items = work[at : at + batch]
            decoded = self._decode_chunks(samples, items, languages, options)
            for (i, chunk), segments in zip(items, decoded, strict=True):
                per_file[i].extend(segments)
                done += (chunk.end - chunk.start) / SAMPLE_RATE
            if progress:
                progress(min(done, total), total)
        return [
            _result(_renumber(segs), lang, s, name)
            for segs, lang, s, name in zip(per_file, languages, samples, names, strict=True)
        ]

    # --- internals ---------------------------------------------------------------------------

    def _language(self, samples: np.ndarray, options: TranscribeOptions) -> str:
        """The given language; English for English-only models; else detected on window one."""
        tokenizer = self.checkpoint.tokenizer
        if options.language:
            tokenizer.language_token(options.language)  # validates the code
            return options.language.lower()
        if not tokenizer.multilingual:
            return "en"
        from ferrum.audio.decoding import detect_language

        mel = self._mel(pad_or_trim(torch.from_numpy(samples)))
        with torch.inference_mode():
            features = self.checkpoint.model.encoder(mel[None].to(self._dtype))
        return detect_language(self.checkpoint.model, tokenizer, features)[0][0]

    @property
    def _dtype(self) -> torch.dtype:
        return self.checkpoint.backend.dtype

    def _mel(self, audio: torch.Tensor, padding: int = 0) -> torch.Tensor:
        n_mels = self.checkpoint.model.dims.n_mels
        return log_mel_spectrogram(audio.to(self.checkpoint.backend.device), n_mels, padding)

    def _decoding_options(self, options: TranscribeOptions, prompt: list[int]) -> DecodingOptions:
        return DecodingOptions(
            task=options.task,
            language=options.language,
            beam_size=options.beam_size,
            best_of=options.best_of,
            patience=options.patience,
            length_penalty=options.length_penalty,
            prompt=tuple(prompt),
            without_timestamps=options.without_timestamps,
        )

    def _decode_with_fallback(
        self, mel: torch.Tensor, options: TranscribeOptions, base: DecodingOptions
    ) -> list[DecodingResult]:
        """Decode windows (B, n_mels, 3000); rows whose text repeats or is unlikely are decoded
        again at the next temperature (ferrum.audio.fallback has the rules)."""
        limits = _limits(options)
        attempts: list[list[DecodingResult]] = [[] for _ in range(mel.shape[0])]
        pending = list(range(mel.shape[0]))
        for temperature in options.temperature:
            attempt = decode(self.checkpoint, mel[pending], with_temperature(base, temperature))
            for row, result in zip(pending, attempt, strict=True):
                attempts[row].append(result)
            pending = [row for row in pending if needs_fallback(attempts[row][-1], limits)]
            if not pending:
                break
        return [
            best_attempt(tried, limits) if row in pending else tried[-1]
            for row, tried in enumerate(attempts)
        ]

    def _sequential(
        self, samples: np.ndarray, options: TranscribeOptions, progress: Progress | None
    ) -> Iterator[Segment]:
        tokenizer = self.checkpoint.tokenizer
        mel = self._mel(torch.from_numpy(samples), padding=N_SAMPLES)  # (n_mels, frames + 3000)
        content_frames = mel.shape[-1] - N_FRAMES
        all_tokens: list[int] = (
            tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
        )
        prompt_reset_since = 0
        seek = 0
        next_id = 0
        while seek < content_frames:
            size = min(N_FRAMES, content_frames - seek)
            window = pad_or_trim(mel[:, seek : seek + size], N_FRAMES)
            offset = seek / FRAMES_PER_SECOND
            audio_window = samples[seek * HOP_LENGTH : (seek + size) * HOP_LENGTH]
            if is_silent(audio_window):
                seek += size
                continue
            base = self._decoding_options(options, all_tokens[prompt_reset_since:])
            result = self._decode_with_fallback(window[None], options, base)[0]
            if is_silence(result, _limits(options)):
                seek += size
                continue
            pieces, advance = split_segments(result.tokens, tokenizer.special.timestamp_begin, size)
            if options.word_timestamps:
                pieces, advance = self._add_words(window, size, options, pieces, advance)
            for piece in pieces:
                text = tokenizer.decode(list(piece.text_tokens))
                if not text.strip() or (
                    piece.end <= piece.start and not options.without_timestamps
                ):
                    continue
                yield _segment(next_id, offset, _clamped(piece, size), text, result)
                next_id += 1
                # timestamps stay in the prompt, as in openai/whisper and faster-whisper: a
                # text-only prompt teaches the model to drop them, and a window without
                # timestamps cannot seek, so it runs on to its token limit and repeats itself
                all_tokens.extend(piece.tokens)
            seek += advance
            if (
                not options.condition_on_previous_text
                or result.temperature > PROMPT_RESET_TEMPERATURE
            ):
                prompt_reset_since = len(all_tokens)
            if progress:
                progress(
                    min(seek, content_frames) / FRAMES_PER_SECOND,
                    content_frames / FRAMES_PER_SECOND,
                )

    def _add_words(
        self,
        window: torch.Tensor,
        size: int,
        options: TranscribeOptions,
        pieces: list[Piece],
        advance: int,
    ) -> tuple[list[Piece], int]:
        """Time the words of a window's segments; seek to the last word's end when the window
        ended mid-segment."""
        tokenizer = self.checkpoint.tokenizer
        text_tokens = [t for piece in pieces for t in piece.text_tokens]
        sot = tokenizer.sot_sequence(options.language, options.task, timestamps=False)[:-1]
        timings = align_words(self.checkpoint, window, sot, text_tokens, size)
        out = []
        at = 0
        for piece in pieces:
            mine: list[WordTiming] = []
            while at < len(timings) and sum(len(w.tokens) for w in mine) < len(piece.text_tokens):
                mine.append(timings[at])
                at += 1
            out.append(replace(piece, words=tuple(mine)))
        if timings and advance < size:
            advance = max(advance, min(size, round(timings[-1].end * FRAMES_PER_SECOND)))
        return out, advance

    def _decode_chunks(
        self,
        samples: list[np.ndarray],
        items: list[tuple[int, Chunk]],
        languages: list[str],
        options: TranscribeOptions,
    ) -> list[list[Segment]]:
        """One batch of VAD chunks → segments of each chunk, in file time."""
        audio = torch.stack(
            [pad_or_trim(torch.from_numpy(samples[i][c.start : c.end])) for i, c in items]
        )
        mel = self._mel(audio)  # (B, n_mels, 3000)
        out: list[list[Segment]] = []
        by_language: dict[str, list[int]] = {}
        for row, (i, _) in enumerate(items):
            by_language.setdefault(languages[i], []).append(row)
        results: dict[int, DecodingResult] = {}
        for language, rows in by_language.items():
            base = self._decoding_options(replace(options, language=language), [])
            for row, result in zip(
                rows, self._decode_with_fallback(mel[rows], options, base), strict=True
            ):
                results[row] = result
        tokenizer = self.checkpoint.tokenizer
        for row, (i, chunk) in enumerate(items):
            result = results[row]
            frames = (chunk.end - chunk.start) // HOP_LENGTH
            if is_silence(result, _limits(options)):
                out.append([])
                continue
            pieces, _ = split_segments(result.tokens, tokenizer.special.timestamp_begin, frames)
            if options.word_timestamps:
                lang_options = replace(options, language=languages[i])
                pieces, _ = self._add_words(mel[row], frames, lang_options, pieces, frames)
            offset = chunk.start / SAMPLE_RATE
            segments = []
            for piece in pieces:
                text = tokenizer.decode(list(piece.text_tokens))
                if text.strip():
                    segments.append(_segment(0, offset, _clamped(piece, frames), text, result))
            out.append(segments)
        return out


# --- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """One segment of a decoded window, in window time."""

    start: float  # seconds from the window start
    end: float  # seconds from the window start
    tokens: tuple[int, ...]  # as decoded, timestamps included: the next window's prompt
    text_tokens: tuple[int, ...]  # the same without timestamps
    words: tuple[WordTiming, ...] = ()  # when word timestamps were asked for


def split_segments(
    tokens: Sequence[int], timestamp_begin: int, num_frames: int
) -> tuple[list[Piece], int]:
    """A window's tokens → segments (times relative to the window) and how many mel frames to
    advance: to the last complete segment's end, or the whole window when it ended cleanly."""
    tokens = list(tokens)
    is_ts = [t >= timestamp_begin for t in tokens]
    window_seconds = num_frames / FRAMES_PER_SECOND
    if not any(is_ts):
        return [Piece(0.0, window_seconds, tuple(tokens), tuple(tokens))], num_frames
    single_ending = len(tokens) >= 2 and not is_ts[-2] and is_ts[-1]
    consecutive = [i for i in range(1, len(tokens)) if is_ts[i] and is_ts[i - 1]]

    def seconds(token: int) -> float:
        return (token - timestamp_begin) * TIME_PRECISION

    if not consecutive:
        end = window_seconds
        stamps = [t for t in tokens if t >= timestamp_begin]
        if stamps and stamps[-1] != timestamp_begin:
            end = seconds(stamps[-1])
        start = seconds(stamps[0]) if stamps and stamps[0] != stamps[-1] else 0.0
        text = tuple(t for t in tokens if t < timestamp_begin)
        return [Piece(start, end, tuple(tokens), text)], num_frames
    slices = consecutive + ([len(tokens)] if single_ending else [])
    pieces: list[Piece] = []
    last = 0
    for current in slices:
        part = tokens[last:current]
        text = tuple(t for t in part if t < timestamp_begin)
        pieces.append(Piece(seconds(part[0]), seconds(part[-1]), tuple(part), text))
        last = current
    if single_ending:
        return pieces, num_frames
    return pieces, (tokens[last - 1] - timestamp_begin) * INPUT_STRIDE


def _clamped(piece: Piece, num_frames: int) -> Piece:
    """The piece with its times inside the window's audio: the model may stamp times past the
    end of a window shorter than 30 s."""
    limit = num_frames / FRAMES_PER_SECOND
    start = min(piece.start, limit)
    return replace(piece, start=start, end=min(max(piece.end, start), limit))


def _limits(options: TranscribeOptions) -> QualityThresholds:
    return QualityThresholds(
        compression_ratio=options.compression_ratio_threshold,
        logprob=options.logprob_threshold,
        no_speech=options.no_speech_threshold,
    )


def _segment(index: int, offset: float, piece: Piece, text: str, result: DecodingResult) -> Segment:
    return Segment(
        id=index,
        start=round(offset + piece.start, 3),
        end=round(offset + piece.end, 3),
        text=text,
        tokens=piece.text_tokens,
        avg_logprob=result.avg_logprob,
        compression_ratio=result.compression_ratio,
        no_speech_prob=result.no_speech_prob,
        temperature=result.temperature,
        words=tuple(
            Word(round(offset + w.start, 3), round(offset + w.end, 3), w.word, w.probability)
            for w in piece.words
        ),
    )


def _renumber(segments: list[Segment]) -> tuple[Segment, ...]:
    return tuple(replace(s, id=i) for i, s in enumerate(segments))


def _samples(audio: AudioInput) -> tuple[np.ndarray, str]:
    if isinstance(audio, str | Path):
        return load_audio(audio), str(audio)
    array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if array.ndim != 1:
        raise InvalidInputError(f"audio must be mono samples (1-D), got shape {array.shape}")
    return array.astype(np.float32, copy=False), ""


def _result(
    segments: tuple[Segment, ...], language: str, samples: np.ndarray, source: str
) -> TranscriptionResult:
    return TranscriptionResult(
        text="".join(s.text for s in segments).strip(),
        segments=segments,
        language=language,
        duration=len(samples) / SAMPLE_RATE,
        source=source,
    )
