"""When a decoded window is kept, retried hotter, or dropped as silence.

The rules of openai/whisper's `transcribe()` (and faster-whisper's, which users compare
against): a window whose text repeats (compression ratio) or is unlikely (mean logprob) is
decoded again at the next temperature, unless it is silence (the no-speech probability is high
*and* the text is unlikely), which no hotter attempt can fix. When every temperature fails, the
attempt kept is the most likely one that does not repeat (faster-whisper's choice), not the
last, hottest one: that one is the most random text of all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ferrum.audio.decoding import DecodingResult


@dataclass(frozen=True)
class QualityThresholds:
    """The limits a window's text is judged by (None switches a rule off)."""

    compression_ratio: float | None = 2.4  # above: the text repeats
    logprob: float | None = -1.0  # below: the text is unlikely
    no_speech: float | None = 0.6  # above (with unlikely text): the window is silence


def is_repetitive(result: DecodingResult, limits: QualityThresholds) -> bool:
    return (
        limits.compression_ratio is not None and result.compression_ratio > limits.compression_ratio
    )


def is_unlikely(result: DecodingResult, limits: QualityThresholds) -> bool:
    return limits.logprob is not None and result.avg_logprob < limits.logprob


def is_silence(result: DecodingResult, limits: QualityThresholds) -> bool:
    """No speech: the model says so at the start, and the text it wrote anyway is unlikely."""
    if limits.no_speech is None or result.no_speech_prob <= limits.no_speech:
        return False
    return limits.logprob is None or result.avg_logprob <= limits.logprob


def needs_fallback(result: DecodingResult, limits: QualityThresholds) -> bool:
    """True when the window should be decoded again at the next temperature."""
    unlikely = is_unlikely(result, limits)
    silent = limits.no_speech is not None and result.no_speech_prob > limits.no_speech
    return (is_repetitive(result, limits) or unlikely) and not (silent and unlikely)


def best_attempt(attempts: Sequence[DecodingResult], limits: QualityThresholds) -> DecodingResult:
    """The attempt to keep once every temperature failed: the most likely among those that do
    not repeat (else among all), labelled with the last temperature tried so that the caller
    still knows the text was sampled hot (and drops it from the next prompt)."""
    candidates = [a for a in attempts if not is_repetitive(a, limits)] or list(attempts)
    best = max(candidates, key=lambda a: a.avg_logprob)
    return replace(best, temperature=attempts[-1].temperature)
