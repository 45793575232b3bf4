"""Text to speech through the one library entry (`ferrum.synthesize`, `load_synthesizer`), for
Piper voices and Qwen3-TTS folders alike: long text split into sentences, batched through the
talker and spoken in order, streamed, the shared options, and the errors for options that do not
apply. Qwen3-TTS results are checked against the model layer run directly (`Qwen3TTS.generate` and
`SpeechCodec.decode`, themselves checked against the reference package by the talker and codec
tests) on the tiny random model those tests build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from safetensors.torch import save_file

import ferrum
from ferrum.audio.qwen3_tts import Qwen3Job, Qwen3Synthesizer, read_clip
from ferrum.audio.speech import load_synthesizer, speech_options
from ferrum.audio.speech_sentences import split_sentences
from ferrum.audio.tts import SpeechOptions, Synthesizer
from ferrum.errors import AudioDecodeError, InvalidInputError, ModelNotFoundError
from ferrum.models.qwen3_tts.config import SPEAKER_SAMPLE_RATE
from ferrum.models.qwen3_tts.generate import GenerationOptions
from ferrum.models.qwen3_tts.prompt import SpeechRequest

from .seeded_weights import seeded_state_dict
from .test_qwen3_tts_talker import FIXTURES, TOKENIZER_FILES, apply_overrides, reference_clip

LONG_TEXT = "Hello world. Good day to you, my friend! Is the quick brown fox here?"
SENTENCES = ["Hello world.", "Good day to you, my friend!", "Is the quick brown fox here?"]
REF_TEXT = "This is my reference clip."
MAX_FRAMES = 12  # generation_config.json of the tiny folders: short, so the tests stay fast


def write_qwen3_models(root: Path) -> dict[str, Path]:
    """Tiny Qwen3-TTS folders (base, custom_voice, voice_design) in the hub's layout, built from
    the talker and codec fixtures, plus a reference clip `clip` (24 kHz wav)."""
    from .test_qwen3_tts_codec import write_checkpoint

    meta = json.loads((FIXTURES / "reference.json").read_text())
    shapes = {name: tuple(shape) for name, shape in meta["shapes"].items()}
    state = apply_overrides(seeded_state_dict(shapes, meta["seed"]), meta["overrides"])
    state = {k: v.contiguous() for k, v in state.items()}
    config = json.loads((FIXTURES / "config.json").read_text())
    folders: dict[str, Path] = {}
    for model_type in ("base", "custom_voice", "voice_design"):
        folder = write_checkpoint(root / model_type)
        save_file(state, str(folder / "model.safetensors"))
        for name in TOKENIZER_FILES:
            shutil.copy(FIXTURES / name, folder / name)
        (folder / "config.json").write_text(json.dumps({**config, "tts_model_type": model_type}))
        generation = {"max_new_tokens": MAX_FRAMES}
        (folder / "generation_config.json").write_text(json.dumps(generation))
        folders[model_type] = folder
    clip = root / "clip.wav"
    soundfile.write(clip, reference_clip().numpy(), SPEAKER_SAMPLE_RATE)
    return {**folders, "clip": clip}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_qwen3_models(tmp_path_factory.mktemp("qwen3_api"))


@pytest.fixture(scope="module")
def custom(models: dict[str, Path]) -> Qwen3Synthesizer:
    engine = load_synthesizer(models["custom_voice"], device="cpu")
    assert isinstance(engine, Qwen3Synthesizer)
    return engine


@pytest.fixture(scope="module")
def base(models: dict[str, Path]) -> Qwen3Synthesizer:
    return Qwen3Synthesizer(models["base"], device="cpu")


def decoded(engine: Qwen3Synthesizer, codes: torch.Tensor) -> np.ndarray:
    """What the codec makes of `codes` (frames, Q), clipped as speech is."""
    with torch.inference_mode():
        audio = engine.codec.decode(codes[None])[0].numpy()
    return np.clip(audio, -1.0, 1.0)


# --- sentences --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (LONG_TEXT, SENTENCES),
        (
            "It costs 3.5 dollars at example.com. Wow!",
            ["It costs 3.5 dollars at example.com.", "Wow!"],
        ),
        ('He said "stop." Then   left\nquietly.', ['He said "stop."', "Then left quietly."]),
        ("你好。世界！再见", ["你好。", "世界！", "再见"]),
        ("A title\n\nThe body… goes on", ["A title", "The body…", "goes on"]),
        (" \n\t ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


# --- Qwen3-TTS through the one entry ----------------------------------------------------------


def test_long_text_is_each_sentence_spoken_in_order(custom: Qwen3Synthesizer) -> None:
    options = SpeechOptions(speaker="vivian", language="english", greedy=True)
    result = ferrum.synthesize(LONG_TEXT, custom, options=options)
    generation = GenerationOptions.greedy(MAX_FRAMES)
    parts = []
    for sentence in SENTENCES:  # one by one, straight through the model layer
        request = SpeechRequest(sentence, "english", speaker="vivian")
        codes = custom.tts.generate([request], generation)[0]
        assert codes.shape[0] > 0
        parts.append(decoded(custom, codes))
    assert result.sample_rate == 24000
    np.testing.assert_allclose(result.samples, np.concatenate(parts), atol=1e-5)


def test_stream_yields_each_sentence_as_the_whole_does(custom: Qwen3Synthesizer) -> None:
    options = {"speaker": "dylan", "seed": 11}
    chunks = list(ferrum.synthesize_stream(LONG_TEXT, custom, **options))
    assert [c.index for c in chunks] == [0, 1, 2]
    assert [c.phonemes for c in chunks] == SENTENCES
    whole = ferrum.synthesize(LONG_TEXT, custom, **options).samples
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), whole)
    other = ferrum.synthesize(LONG_TEXT, custom, speaker="dylan", seed=12).samples
    assert not np.array_equal(other, whole)  # the seed matters: sampling is on


class Recorder:
    """A CodeGenerator that records its calls and asks the real model for the codes."""

    def __init__(self, engine: Qwen3Synthesizer) -> None:
        self.engine = engine
        self.calls: list[tuple[list[str], int | None]] = []

    def generate(self, requests: list[SpeechRequest], options: GenerationOptions) -> list:
        self.calls.append(([r.text for r in requests], options.seed))
        return self.engine.tts.generate(requests, options)


def test_sentences_are_batched_through_one_generate_call(custom: Qwen3Synthesizer) -> None:
    text = " ".join(f"Sentence number {i}." for i in range(6))
    recorder = Recorder(custom)
    engine = Qwen3Synthesizer(custom.path, device="cpu", sentence_batch=3, generator=recorder)
    options = SpeechOptions(speaker="vivian", seed=5)
    chunks = list(engine.stream(text, options))
    sentences = split_sentences(text)
    # the first alone (heard soonest), then three at a time; each batch a seed of its own
    assert recorder.calls == [(sentences[:1], 5), (sentences[1:4], 6), (sentences[4:], 9)]
    assert [c.phonemes for c in chunks] == sentences
    # each chunk is its own batch row, decoded: compare with that batch run directly
    job = engine.prepare(text, options)
    codes = custom.tts.generate(job.requests[1:4], job.generation_for(1))
    for chunk, c in zip(chunks[1:4], codes, strict=True):
        np.testing.assert_allclose(chunk.samples, decoded(custom, c), atol=1e-5)


def test_greedy_batch_equals_one_by_one(custom: Qwen3Synthesizer) -> None:
    batched = Qwen3Synthesizer(custom.path, device="cpu", sentence_batch=8)
    options = SpeechOptions(speaker="vivian", greedy=True)
    one_by_one = Qwen3Synthesizer(custom.path, device="cpu", sentence_batch=1)
    a = batched.synthesize(LONG_TEXT, options).samples
    b = one_by_one.synthesize(LONG_TEXT, options).samples
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_shared_options_level_and_silence(custom: Qwen3Synthesizer) -> None:
    plain = custom.stream(LONG_TEXT, SpeechOptions(speaker="vivian", greedy=True))
    shaped_options = SpeechOptions(
        speaker="vivian", greedy=True, normalize=True, volume=0.5, sentence_silence=0.1
    )
    shaped = custom.stream(LONG_TEXT, shaped_options)
    gap = round(0.1 * custom.sample_rate)
    for p, s in zip(plain, shaped, strict=True):
        assert len(s.samples) == len(p.samples) + gap and not s.samples[-gap:].any()
        peak = np.abs(p.samples).max()
        np.testing.assert_allclose(s.samples[:-gap], p.samples * 0.5 / peak, atol=1e-6)


def test_voice_clone_through_the_entry(base: Qwen3Synthesizer, models: dict[str, Path]) -> None:
    clip = models["clip"]
    options = SpeechOptions(ref_audio=clip, ref_text=REF_TEXT, greedy=True, language="english")
    job = base.prepare("Good day to you.", options)
    voice = job.requests[0].voice
    assert voice is not None and voice.ref_codes is not None
    samples = read_clip(clip, SPEAKER_SAMPLE_RATE)
    expected = base.tts.voice_clone_prompt(torch.from_numpy(samples), SPEAKER_SAMPLE_RATE, REF_TEXT)
    torch.testing.assert_close(voice.speaker_embedding, expected.speaker_embedding)
    assert torch.equal(voice.ref_codes, expected.ref_codes)
    request = SpeechRequest("Good day to you.", "english", voice=expected)
    codes = base.tts.generate([request], GenerationOptions.greedy(MAX_FRAMES))[0]
    got = ferrum.synthesize("Good day to you.", base, options=options)
    whole = decoded(base, torch.cat((expected.ref_codes, codes)))  # the clip leads, then is cut
    np.testing.assert_allclose(got.samples, whole[len(whole) - len(got.samples) :], atol=1e-5)
    assert len(got.samples) == codes.shape[0] * base.codec.config.decode_upsample_rate
    # the clip as file bytes (what the server passes) is the same clip
    from_bytes = ferrum.synthesize(
        "Good day to you.", base, options=options, ref_audio=clip.read_bytes()
    )
    np.testing.assert_array_equal(from_bytes.samples, got.samples)
    xvector = base.prepare("Hi.", SpeechOptions(ref_audio=clip)).requests[0].voice
    assert xvector is not None and xvector.ref_codes is None  # no transcript: x-vector only


def test_voice_design_follows_the_instruction(models: dict[str, Path]) -> None:
    engine = load_synthesizer(models["voice_design"], device="cpu")
    assert isinstance(engine, Qwen3Synthesizer) and engine.speakers == []
    options = SpeechOptions(instruct="A deep calm voice.", greedy=True)
    job = engine.prepare("Hello.", options)
    assert job.requests[0].instruct == "A deep calm voice."
    with_instruct = engine.synthesize("Hello.", options).samples
    without = engine.synthesize("Hello.", SpeechOptions(greedy=True)).samples
    assert not np.array_equal(with_instruct, without)


# --- Piper through the same entry -------------------------------------------------------------


def test_piper_through_the_entry(tiny_voice: Path, espeak: None) -> None:
    engine = load_synthesizer(tiny_voice, device="cpu")
    assert isinstance(engine, Synthesizer) and engine.name == "tiny"
    text = "Hello there. How are you?"
    got = ferrum.synthesize(text, str(tiny_voice), device="cpu", speaker="bob", seed=7)
    expected = engine.synthesize(text, SpeechOptions(speaker="bob", seed=7))
    np.testing.assert_array_equal(got.samples, expected.samples)
    assert got.sample_rate == engine.sample_rate
    chunks = list(ferrum.synthesize_stream(text, engine, speaker="bob", seed=7))
    assert len(chunks) == 2
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), expected.samples)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"instruct": "whisper"}, "instruct (--instruct) is for Qwen3-TTS"),
        ({"language": "english"}, "language (--language) is for Qwen3-TTS"),
        ({"ref_audio": "clip.wav"}, "ref_audio (--ref-audio) is for Qwen3-TTS"),
        ({"greedy": True}, "greedy"),
    ],
)
def test_piper_rejects_qwen3_options(
    tiny_voice: Path, espeak: None, fields: dict, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ferrum.synthesize("Hi.", str(tiny_voice), device="cpu", **fields)


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields", "message"),
    [
        ("custom_voice", {"speaker": "vivian", "speed": 2.0}, "--speed"),
        ("custom_voice", {"speaker": "vivian", "noise_scale": 0.1}, "noise_scale"),
        ("custom_voice", {"speaker": "nobody"}, "needs a speaker, one of: dylan, vivian"),
        ("custom_voice", {}, "needs a speaker"),
        ("custom_voice", {"speaker": "vivian", "language": "klingon"}, "language 'klingon'"),
        ("custom_voice", {"speaker": "vivian", "instruct": "Loud."}, "does not follow"),
        ("custom_voice", {"speaker": "vivian", "ref_audio": b"RIFF"}, "needs a Base model"),
        ("voice_design", {"ref_text": "hi"}, "give the clip"),
        ("voice_design", {"volume": -1.0}, "volume must be >= 0"),
        ("base", {}, "reference clip"),
        ("base", {"ref_audio": b"this is not audio at all"}, "not a decodable audio"),
        ("base", {"ref_audio": b""}, "empty"),
        ("base", {"ref_audio": "/no/such/clip.wav"}, "no such file"),
        ("base", {"ref_audio": "SHORT"}, "at least 0.25 s"),
        ("base", {"max_new_tokens": 0}, "max_new_tokens"),
        ("base", {"colour": "blue"}, "unknown speech option 'colour'"),
    ],
)
def test_bad_input_says_what_to_fix(
    models: dict[str, Path], tmp_path: Path, model: str, fields: dict, message: str
) -> None:
    if fields.get("ref_audio") == "SHORT":
        short = tmp_path / "short.wav"
        soundfile.write(short, reference_clip()[:2400].numpy(), SPEAKER_SAMPLE_RATE)
        fields = {"ref_audio": short}
    with pytest.raises(InvalidInputError, match=message):
        ferrum.synthesize("Hi.", models[model], device="cpu", **fields)


def test_empty_text_and_loading_errors(custom: Qwen3Synthesizer, models: dict[str, Path]) -> None:
    for text in ("", "  \n "):
        with pytest.raises(InvalidInputError, match="nothing to say"):
            custom.synthesize(text, SpeechOptions(speaker="vivian"))
    with pytest.raises(ModelNotFoundError, match="load_synthesizer"):
        Synthesizer(models["custom_voice"])  # the Piper class, given a Qwen3-TTS folder
    with pytest.raises(ModelNotFoundError, match="unknown voice"):
        load_synthesizer("no-such-voice")
    with pytest.raises(AudioDecodeError, match="not a decodable audio"):
        read_clip(b"GIF89a not a sound", SPEAKER_SAMPLE_RATE)
    with pytest.raises(InvalidInputError, match="sentence_batch"):
        Qwen3Synthesizer(models["custom_voice"], sentence_batch=0)
    assert speech_options(SpeechOptions(seed=1), speaker="x") == SpeechOptions(seed=1, speaker="x")


def test_job_seeds_per_batch() -> None:
    job = Qwen3Job([], GenerationOptions(seed=40), SpeechOptions())
    assert job.generation_for(0).seed == 40 and job.generation_for(3).seed == 43
    unseeded = Qwen3Job([], GenerationOptions(), SpeechOptions())
    assert unseeded.generation_for(3).seed is None


# --- the command ---------------------------------------------------------------------------------


def test_cli_streams_long_text_as_the_library_speaks_it(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from .test_qwen3_tts_talker import run_cli

    out = tmp_path / "long.wav"
    args = [LONG_TEXT, "-m", str(models["custom_voice"]), "-o", str(out), "--stream"]
    result = run_cli([*args, "--speaker", "vivian", "--seed", "4", "--sentence-silence", "0.2"])
    assert result.exit_code == 0, result.output
    samples, rate = soundfile.read(out, dtype="float32")
    options = SpeechOptions(speaker="vivian", seed=4, sentence_silence=0.2)
    expected = ferrum.synthesize(LONG_TEXT, models["custom_voice"], device="cpu", options=options)
    assert rate == expected.sample_rate == 24000 and len(samples) == len(expected.samples)
    np.testing.assert_allclose(samples, expected.samples, atol=1 / 32768)  # 16-bit wav
