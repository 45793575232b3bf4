"""The Synthesizer: voices, options, sentences, streaming and threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ferrum.audio.tts import SpeechOptions, Synthesizer, resolve_voice
from ferrum.errors import CheckpointError, InvalidInputError, ModelNotFoundError

from .conftest import TINY, TINY_SAMPLE_RATE, TINY_SPEAKERS

TEXT = "Hello there. How are you today? I am fine, thanks."


@pytest.fixture(scope="module")
def tiny(tiny_voice: Path, espeak: None) -> Synthesizer:
    return Synthesizer(tiny_voice, device="cpu")


def test_stream_yields_a_chunk_per_sentence_in_order(tiny: Synthesizer) -> None:
    options = SpeechOptions(seed=3, sentence_silence=0.1)
    chunks = list(tiny.stream(TEXT, options))
    assert [c.index for c in chunks] == [0, 1, 2]
    assert chunks[0].phonemes.endswith(".") and chunks[1].phonemes.endswith("?")
    silence = int(0.1 * TINY_SAMPLE_RATE)
    for chunk in chunks:
        assert chunk.sample_rate == TINY_SAMPLE_RATE
        assert len(chunk.samples) > silence and not chunk.samples[-silence:].any()
    whole = tiny.synthesize(TEXT, options)
    np.testing.assert_array_equal(whole.samples, np.concatenate([c.samples for c in chunks]))
    assert whole.samples.dtype == np.float32 and np.abs(whole.samples).max() <= 1.0


def test_seed_fixes_the_audio_and_noise_varies_it(tiny: Synthesizer) -> None:
    a = tiny.synthesize("Testing, one two three.", SpeechOptions(seed=1)).samples
    b = tiny.synthesize("Testing, one two three.", SpeechOptions(seed=1)).samples
    c = tiny.synthesize("Testing, one two three.", SpeechOptions(seed=2)).samples
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_speed_shortens_the_audio(tiny: Synthesizer) -> None:
    still = SpeechOptions(noise_w=0.0, noise_scale=0.0)
    slow = tiny.synthesize(TEXT, still).samples
    fast = tiny.synthesize(TEXT, SpeechOptions(noise_w=0.0, noise_scale=0.0, speed=2.0)).samples
    assert 0.4 < len(fast) / len(slow) < 0.65


def test_speakers_by_name_or_id(tiny: Synthesizer) -> None:
    assert tiny.speakers == list(TINY_SPEAKERS)
    quiet = {"noise_w": 0.0, "noise_scale": 0.0, "normalize": False}
    by_name = tiny.synthesize("Hi.", SpeechOptions(speaker="bob", **quiet)).samples
    by_id = tiny.synthesize("Hi.", SpeechOptions(speaker=1, **quiet)).samples
    other = tiny.synthesize("Hi.", SpeechOptions(speaker="carol", **quiet)).samples
    np.testing.assert_array_equal(by_name, by_id)
    assert len(by_name) != len(other) or not np.allclose(by_name, other)
    with pytest.raises(InvalidInputError, match="no speaker 'dave'"):
        tiny.synthesize("Hi.", SpeechOptions(speaker="dave"))
    with pytest.raises(InvalidInputError, match="no speaker"):
        tiny.synthesize("Hi.", SpeechOptions(speaker=TINY.n_speakers))


def test_threads_share_one_synthesizer(tiny: Synthesizer) -> None:
    options = SpeechOptions(seed=7)
    expected = tiny.synthesize(TEXT, options).samples
    results: list[np.ndarray] = []

    def speak() -> None:
        results.append(tiny.synthesize(TEXT, options).samples)

    threads = [threading.Thread(target=speak) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for r in results:
        np.testing.assert_array_equal(r, expected)


@pytest.mark.parametrize("text", ["", "   \n", "..."])
def test_empty_text_is_invalid(tiny: Synthesizer, text: str) -> None:
    with pytest.raises(InvalidInputError, match="nothing to say"):
        tiny.synthesize(text)


@pytest.mark.parametrize(
    "options", [SpeechOptions(speed=0), SpeechOptions(speed=-1), SpeechOptions(noise_w=-0.1)]
)
def test_bad_options_are_invalid(tiny: Synthesizer, options: SpeechOptions) -> None:
    with pytest.raises(InvalidInputError):
        tiny.stream("Hello.", options)  # raises before any audio is computed


def test_voice_files(tmp_path: Path, tiny_voice: Path) -> None:
    assert resolve_voice(tiny_voice).config == tiny_voice.with_name("tiny.onnx.json")
    assert resolve_voice(tiny_voice.parent).model == tiny_voice  # a folder with one voice
    assert resolve_voice(str(tiny_voice) + ".json").model == tiny_voice
    with pytest.raises(ModelNotFoundError, match="unknown voice"):
        resolve_voice("no-such-voice")
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(tiny_voice.read_bytes())
    with pytest.raises(CheckpointError, match="lone.onnx.json is missing"):
        resolve_voice(lone)
    text = tmp_path / "voice.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="an .onnx file"):
        resolve_voice(text)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not an onnx graph")
    garbage.with_name("garbage.onnx.json").write_text(
        tiny_voice.with_suffix(".onnx.json").read_text()
    )
    with pytest.raises(CheckpointError):
        Synthesizer(garbage, device="cpu")


def test_default_voice_is_joe(joe_voice: Path, espeak: None) -> None:
    synth = Synthesizer(device="cpu")
    assert synth.files.model == joe_voice and synth.sample_rate == 22050
    assert synth.speakers == []
    result = synth.synthesize("Hi.", SpeechOptions(seed=0))
    assert 0.2 < result.duration < 2.0
    assert abs(np.abs(result.samples).max() - 1.0) < 1e-6  # peak-normalized, as Piper does
    with pytest.raises(InvalidInputError, match="single speaker"):
        synth.synthesize("Hi.", SpeechOptions(speaker="bob"))
