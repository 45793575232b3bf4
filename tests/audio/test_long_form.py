"""Long-form transcription (issue #6): the sequential loop must not repeat or invent text.

A recording of JFK tiled five times has a known transcript, so the word count and the word error
rate of the whole output can be checked; faster-whisper on the same CTranslate2 weights, greedy at
temperature 0, is the reference the sequential loop must agree with.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import ferrum.audio.transcribe as transcribe_module
from ferrum.audio.checkpoint import WhisperCheckpoint
from ferrum.audio.decoding import DecodingOptions, DecodingResult
from ferrum.audio.fallback import QualityThresholds, best_attempt, is_silence, needs_fallback
from ferrum.audio.io import load_audio
from ferrum.audio.transcribe import TranscribeOptions, Transcriber, split_segments

from .conftest import JFK_TEXT

COPIES = 5  # jfk.flac (11 s) tiled to 55 s: two 30-s windows and a seek across a segment
GREEDY = TranscribeOptions(temperature=(0.0,))  # the bench's setting: no fallback to hide loops
TS = 50363  # <|0.00|> of the tiny.en vocabulary (timestamp i is TS + i, 0.02 s each)
FRAMES_PER_TS = 2  # mel frames per timestamp step


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Levenshtein distance over words / reference length."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        prev, row = row, [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ref != hyp))
    return row[-1] / len(reference)


@pytest.fixture(scope="module")
def transcriber(tiny_en_ct2_dir: Path) -> Transcriber:
    return Transcriber(None, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def tiled(jfk_path: Path) -> np.ndarray:
    return np.tile(load_audio(jfk_path), COPIES)


@pytest.fixture(scope="module")
def prompts_and_result(
    transcriber: Transcriber, tiled: np.ndarray
) -> tuple[list[tuple[int, ...]], list[str]]:
    """The sequential transcript of the tiled clip, and the prompt each window was given."""
    prompts: list[tuple[int, ...]] = []
    real_decode = transcribe_module.decode

    def spy(
        checkpoint: WhisperCheckpoint, mel: torch.Tensor, options: DecodingOptions
    ) -> list[DecodingResult]:
        prompts.append(options.prompt)
        return real_decode(checkpoint, mel, options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transcribe_module, "decode", spy)
        result = transcriber.transcribe(tiled, GREEDY)
    return prompts, words(result.text)


def test_sequential_long_form_says_each_word_once(
    prompts_and_result: tuple[list[tuple[int, ...]], list[str]],
) -> None:
    _, hypothesis = prompts_and_result
    reference = words(JFK_TEXT) * COPIES
    assert abs(len(hypothesis) - len(reference)) <= 0.05 * len(reference), " ".join(hypothesis)
    assert word_error_rate(reference, hypothesis) <= 0.10, " ".join(hypothesis)


def test_prompt_keeps_timestamps(
    prompts_and_result: tuple[list[tuple[int, ...]], list[str]],
) -> None:
    """A text-only prompt teaches the model to leave timestamps out; a window without them
    cannot seek and runs on to its token limit, repeating itself (the cause of issue #6)."""
    prompts, _ = prompts_and_result
    assert len(prompts) >= 2 and prompts[0] == ()
    assert all(any(t >= TS for t in p) for p in prompts[1:])


def test_sequential_matches_faster_whisper(
    transcriber: Transcriber, tiled: np.ndarray, tiny_en_ct2_dir: Path
) -> None:
    faster_whisper = pytest.importorskip(
        "faster_whisper", reason="faster-whisper not installed (pip install faster-whisper)"
    )
    reference = faster_whisper.WhisperModel(
        str(tiny_en_ct2_dir), device="cpu", compute_type="float32", cpu_threads=1
    )
    segments, _ = reference.transcribe(tiled, beam_size=1, temperature=0.0, language="en")
    expected = list(segments)
    ours = transcriber.transcribe(tiled, GREEDY).segments
    theirs_words = words("".join(s.text for s in expected))
    ours_words = words("".join(s.text for s in ours))
    assert word_error_rate(theirs_words, ours_words) <= 0.02, (theirs_words, ours_words)
    assert len(ours) == len(expected)
    for mine, their in zip(ours, expected, strict=True):
        assert mine.start == pytest.approx(their.start, abs=0.021)


# --- the rules, on hand-made inputs ------------------------------------------------------------


def test_split_segments_keeps_timestamps_for_the_prompt() -> None:
    # <|0.00|> a b <|2.00|><|2.00|> c <|4.00|><|4.00|> d   (the last segment is unfinished)
    tokens = [TS, 1, 2, TS + 100, TS + 100, 3, TS + 200, TS + 200, 4]
    pieces, advance = split_segments(tokens, TS, 3000)
    assert [(p.start, p.end) for p in pieces] == [(0.0, 2.0), (2.0, 4.0)]
    assert [p.tokens for p in pieces] == [(TS, 1, 2, TS + 100), (TS + 100, 3, TS + 200)]
    assert [p.text_tokens for p in pieces] == [(1, 2), (3,)]
    assert advance == 200 * FRAMES_PER_TS  # seek to the last complete segment's end
    # a window that ends on a single timestamp was read to its end
    pieces, advance = split_segments([TS, 1, TS + 50, TS + 50, 2, TS + 90], TS, 2500)
    assert [(p.start, p.end) for p in pieces] == [(0.0, 1.0), (1.0, 1.8)]
    assert advance == 2500


def result(
    cr: float = 1.5, logprob: float = -0.3, no_speech: float = 0.1, t: float = 0.0
) -> DecodingResult:
    return DecodingResult("en", (1,), "x", logprob, no_speech, t, cr)


def test_fallback_follows_openai_whisper() -> None:
    limits = QualityThresholds()
    assert not needs_fallback(result(), limits)
    assert needs_fallback(result(cr=3.0), limits)  # repeats
    assert needs_fallback(result(logprob=-1.5), limits)  # unlikely
    assert not needs_fallback(result(logprob=-1.5, no_speech=0.9), limits)  # silence
    # likely text that repeats is retried even when <|nospeech|> is probable
    assert needs_fallback(result(cr=3.0, no_speech=0.9), limits)
    assert is_silence(result(logprob=-1.5, no_speech=0.9), limits)
    assert not is_silence(result(logprob=-0.5, no_speech=0.9), limits)
    assert not needs_fallback(result(cr=3.0, logprob=-1.5), QualityThresholds(None, None, None))


def test_when_every_temperature_fails_the_likeliest_non_repeating_attempt_is_kept() -> None:
    limits = QualityThresholds()
    attempts = [
        result(cr=3.5, logprob=-0.1, t=0.0),  # likeliest, but repeats
        result(cr=1.2, logprob=-1.2, t=0.2),
        result(cr=1.3, logprob=-1.1, t=0.4),
        result(cr=1.1, logprob=-1.9, t=1.0),
    ]
    kept = best_attempt(attempts, limits)
    assert (kept.compression_ratio, kept.avg_logprob) == (1.3, -1.1)
    assert kept.temperature == 1.0  # hot: the caller must not use it as a prompt
    every_one_repeats = [result(cr=3.0, logprob=-0.9), result(cr=3.0, logprob=-0.4, t=0.2)]
    assert best_attempt(every_one_repeats, limits).avg_logprob == -0.4
