"""Find speech by energy and cut audio into windows of at most 30 s at silences.

Batched transcription decodes these windows side by side; cutting at pauses (rather than every
30 s) keeps words whole and leaves silence, where Whisper invents text, out of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ferrum.audio.io import SAMPLE_RATE

FRAME_SECONDS = 0.02  # energy frame
SILENCE_DBFS = -55.0  # frames quieter than this are silence whatever the recording
NOISE_MARGIN_DB = 8.0  # speech is at least this far above the recording's noise floor
NOISE_PERCENTILE = 10  # the noise floor: this percentile of frame energies
MIN_SPEECH_SECONDS = 0.2  # shorter bursts are clicks, not speech
MIN_SILENCE_SECONDS = 0.4  # shorter pauses stay inside one speech region
PAD_SECONDS = 0.2  # kept on each side of a region so word edges are not clipped
MAX_CHUNK_SECONDS = 30.0  # a Whisper window
MIN_CUT_SECONDS = 15.0  # when a region must be cut, not before this far into the chunk


@dataclass(frozen=True)
class Chunk:
    """A stretch of audio to decode as one window, in samples."""

    start: int  # first sample
    end: int  # one past the last sample


def frame_energies_db(audio: np.ndarray) -> np.ndarray:
    """Mean power of each 20 ms frame, in dB relative to full scale."""
    frame = int(FRAME_SECONDS * SAMPLE_RATE)
    n = len(audio) // frame
    if n == 0:
        return np.zeros(0)
    frames = audio[: n * frame].reshape(n, frame).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def is_silent(audio: np.ndarray) -> bool:
    """True when no frame of `audio` rises above the silence floor."""
    energies = frame_energies_db(audio)
    return energies.size == 0 or float(energies.max()) < SILENCE_DBFS


def speech_regions(audio: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) frame ranges that hold speech."""
    energies = frame_energies_db(audio)
    if energies.size == 0:
        return []
    threshold = max(
        SILENCE_DBFS, float(np.percentile(energies, NOISE_PERCENTILE)) + NOISE_MARGIN_DB
    )
    voiced = energies > threshold
    regions: list[tuple[int, int]] = []
    min_gap = round(MIN_SILENCE_SECONDS / FRAME_SECONDS)
    for start, end in _runs(voiced):
        if regions and start - regions[-1][1] < min_gap:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    min_len = round(MIN_SPEECH_SECONDS / FRAME_SECONDS)
    return [(s, e) for s, e in regions if e - s >= min_len]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )


def speech_chunks(audio: np.ndarray) -> list[Chunk]:
    """Speech regions padded and packed into chunks of at most 30 s, cut at pauses; a region
    longer than a window is cut at its quietest frame."""
    frame = int(FRAME_SECONDS * SAMPLE_RATE)
    energies = frame_energies_db(audio)
    pad = round(PAD_SECONDS / FRAME_SECONDS)
    max_len = round(MAX_CHUNK_SECONDS / FRAME_SECONDS)
    n = len(energies)
    chunks: list[tuple[int, int]] = []
    for start, end in speech_regions(audio):
        start, end = max(0, start - pad), min(n, end + pad)
        if chunks and end - chunks[-1][0] <= max_len:
            chunks[-1] = (chunks[-1][0], end)  # the region fits in the open chunk
            continue
        if chunks and start < chunks[-1][1]:
            start = chunks[-1][1]  # padding must not overlap the previous chunk
        while end - start > max_len:
            cut = _quietest(
                energies, start + round(MIN_CUT_SECONDS / FRAME_SECONDS), start + max_len
            )
            chunks.append((start, cut))
            start = cut
        chunks.append((start, end))
    last = len(audio)
    return [Chunk(s * frame, min(last, e * frame)) for s, e in chunks if e > s]


def _quietest(energies: np.ndarray, lo: int, hi: int) -> int:
    return lo + int(np.argmin(energies[lo:hi]))
