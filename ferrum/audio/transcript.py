"""What transcription returns: words, segments and the whole result (plain data, no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """A word with its time in the file."""

    start: float  # seconds from the start of the file
    end: float  # seconds from the start of the file
    word: str  # text, with its leading space
    probability: float  # mean probability of its tokens


@dataclass(frozen=True)
class Segment:
    """A stretch of text the model timed as one unit (usually a sentence or clause)."""

    id: int  # position in the transcript, from 0
    start: float  # seconds from the start of the file
    end: float  # seconds from the start of the file
    text: str  # decoded text, with its leading space
    tokens: tuple[int, ...]  # text tokens (timestamps left out)
    avg_logprob: float  # mean token log-probability of the window it came from
    compression_ratio: float  # of the window's text: high means repetition
    no_speech_prob: float  # of the window it came from
    temperature: float  # of the decoding attempt that was kept
    words: tuple[Word, ...] = ()  # when word timestamps were asked for


@dataclass(frozen=True)
class TranscriptionResult:
    """The transcript of one file."""

    text: str  # all segments' text joined
    segments: tuple[Segment, ...]  # in time order
    language: str  # language code (detected or given)
    duration: float  # seconds of audio
    source: str = ""  # the file name, when there was one
    language_probs: dict[str, float] = field(default_factory=dict)  # when detected
