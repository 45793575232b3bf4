"""Qwen3-TTS text-to-codes against the reference (qwen-tts 0.1.1) on a tiny random model.

The fixture (tests/tts/fixtures/make_qwen3_tts_talker.py) holds the tiny config, tokenizer and
the reference's prompts, codes and speaker embedding; the weights are rebuilt here from the
shape table with the same seeded values and written as a checkpoint folder that our loader reads.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ferrum.errors import InvalidInputError
from ferrum.models.qwen3_tts.config import Qwen3TTSConfig
from ferrum.models.qwen3_tts.generate import GenerationOptions, pad_prompts
from ferrum.models.qwen3_tts.model import Qwen3TTS, Qwen3TTSModel
from ferrum.models.qwen3_tts.prompt import SpeechRequest, VoiceClonePrompt
from ferrum.models.qwen3_tts.sampling import SamplingOptions
from ferrum.models.qwen3_tts.speaker_encoder import speaker_mel

from .seeded_weights import is_norm_scale, seeded_state_dict

FIXTURES = Path(__file__).parent / "fixtures" / "qwen3_tts_talker"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")
CUSTOM_TEXTS = ["Hello world.", "Good day to you, my friend."]
CLONE_TEXTS = ["Hello world.", "Good day to you, my friend. The quick brown fox."]
PROMPT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def reference() -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((FIXTURES / "reference.json").read_text())
    with np.load(FIXTURES / "reference.npz") as data:
        return meta, {k: data[k] for k in data.files}


def apply_overrides(state: dict[str, torch.Tensor], rules: dict) -> dict[str, torch.Tensor]:
    """The fixture's rule: every tensor but norm scales times `scale`, then some rows scaled."""
    out = {
        name: t if is_norm_scale(name, tuple(t.shape)) else t * rules["scale"]
        for name, t in state.items()
    }
    for rule in rules["rows"]:
        out[rule["name"]][rule["row"]] *= rule["factor"]
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, reference: tuple) -> Path:
    meta, _ = reference
    folder = tmp_path_factory.mktemp("qwen3_tts")
    shapes = {name: tuple(shape) for name, shape in meta["shapes"].items()}
    state = apply_overrides(seeded_state_dict(shapes, meta["seed"]), meta["overrides"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    for name in TOKENIZER_FILES:
        shutil.copy(FIXTURES / name, folder / name)
    shutil.copy(FIXTURES / "config.json", folder / "config.json")
    return folder


def load(checkpoint: Path, model_type: str) -> Qwen3TTS:
    """The checkpoint as a `model_type` model (the same weights serve all three here)."""
    config = json.loads((FIXTURES / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "tts_model_type": model_type}))
    return Qwen3TTS(checkpoint)


@pytest.fixture(scope="module")
def custom_voice(checkpoint: Path) -> Qwen3TTS:
    return load(checkpoint, "custom_voice")


@pytest.fixture(scope="module")
def voice_design(checkpoint: Path) -> Qwen3TTS:
    return load(checkpoint, "voice_design")


@pytest.fixture(scope="module")
def base(checkpoint: Path) -> Qwen3TTS:
    return load(checkpoint, "base")


def reference_clip(rate: int = 24000) -> torch.Tensor:
    """The fixture script's clip: 0.75 s, two tones plus seeded noise."""
    n = rate * 3 // 4
    t = torch.arange(n, dtype=torch.float32) / rate
    noise = torch.randn(n, generator=torch.Generator().manual_seed(5))
    clip = 0.3 * torch.sin(2 * torch.pi * 220 * t) + 0.2 * torch.sin(2 * torch.pi * 1330 * t)
    return clip + 0.05 * noise


def check_case(
    tts: Qwen3TTS,
    name: str,
    requests: list[SpeechRequest],
    reference: tuple,
    options: GenerationOptions | None = None,
) -> None:
    meta, ref = reference
    prompts = [tts.prompts.build(r) for r in requests]
    embeds, valid, trailing = pad_prompts(prompts, tts.prompts.special_text()[2])
    np.testing.assert_array_equal(valid.numpy(), ref[f"{name}.mask"].astype(bool))
    np.testing.assert_allclose(
        embeds.detach().numpy(), ref[f"{name}.embeds"], atol=PROMPT_TOLERANCE
    )
    np.testing.assert_allclose(
        trailing.detach().numpy(), ref[f"{name}.trailing"], atol=PROMPT_TOLERANCE
    )
    options = options or GenerationOptions.greedy(meta["max_new_tokens"])
    codes = tts.generate(requests, options)
    assert len(codes) == meta["cases"][name]["count"]
    for i, c in enumerate(codes):
        np.testing.assert_array_equal(c.numpy(), ref[f"{name}.{i}"], err_msg=f"{name}[{i}]")


def custom_requests(non_streaming: bool | None = None) -> list[SpeechRequest]:
    return [
        SpeechRequest(CUSTOM_TEXTS[0], "English", speaker="Vivian", non_streaming=non_streaming),
        SpeechRequest(CUSTOM_TEXTS[1], "Auto", speaker="dylan", non_streaming=non_streaming),
    ]


@pytest.mark.parametrize("name", ["0b6_base", "1b7_base"])
def test_real_checkpoint_names_and_shapes(name: str) -> None:
    """Our module tree holds exactly the reference's tensors for the released architectures,
    so a downloaded checkpoint's model.safetensors loads name for name."""
    configs = json.loads((FIXTURES / "real_configs.json").read_text())
    with gzip.open(FIXTURES / "real_shapes.json.gz", "rt", encoding="utf-8") as f:
        expected = json.load(f)[name]
    config = Qwen3TTSConfig.from_dict(configs[name])
    with torch.device("meta"):
        model = Qwen3TTSModel(config)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected


def test_tokenizer_matches_reference(custom_voice: Qwen3TTS, reference: tuple) -> None:
    meta, _ = reference
    encode = custom_voice.tokenizer.encode
    assistant = "<|im_start|>assistant\nHello world.<|im_end|>\n<|im_start|>assistant\n"
    assert encode(assistant).ids == meta["token_ids"]["assistant_hello"]
    ref = f"<|im_start|>assistant\n{meta['ref_text']}<|im_end|>\n"
    assert encode(ref).ids == meta["token_ids"]["ref"]


def test_custom_voice_greedy(custom_voice: Qwen3TTS, reference: tuple) -> None:
    check_case(custom_voice, "custom_voice", custom_requests(), reference)
    check_case(custom_voice, "custom_voice_streaming", custom_requests(False), reference)


def test_custom_voice_sampled_with_the_same_seed(custom_voice: Qwen3TTS, reference: tuple) -> None:
    meta, _ = reference
    seed = meta["cases"]["custom_voice_sampled"]["seed"]
    sampled = GenerationOptions(max_new_tokens=meta["max_new_tokens"], seed=seed)
    check_case(custom_voice, "custom_voice_sampled", custom_requests(), reference, sampled)


def test_voice_design_greedy(voice_design: Qwen3TTS, reference: tuple) -> None:
    requests = [
        SpeechRequest(
            "The quick brown fox.", "English", instruct="A calm deep voice, speaking slowly."
        ),
        SpeechRequest("你好世界", "Auto"),
    ]
    check_case(voice_design, "voice_design", requests, reference)


def test_voice_design_sampled_with_every_knob(voice_design: Qwen3TTS, reference: tuple) -> None:
    meta, _ = reference
    case = meta["cases"]["voice_design_sampled"]
    knobs = case["sampling"]
    options = GenerationOptions(
        talker=SamplingOptions(True, knobs["temperature"], knobs["top_k"], knobs["top_p"]),
        code_predictor=SamplingOptions(
            True, knobs["subtalker_temperature"], knobs["subtalker_top_k"], knobs["subtalker_top_p"]
        ),
        repetition_penalty=knobs["repetition_penalty"],
        max_new_tokens=meta["max_new_tokens"],
        seed=case["seed"],
    )
    requests = [
        SpeechRequest(
            "The quick brown fox.",
            "English",
            instruct="A calm deep voice, speaking slowly.",
            non_streaming=False,
        ),
        SpeechRequest("你好世界", "Auto", non_streaming=False),
    ]
    check_case(voice_design, "voice_design_sampled", requests, reference, options)


@pytest.mark.parametrize(
    ("rate", "key"), [(24000, "speaker_embedding"), (16000, "speaker_embedding_16k")]
)
def test_speaker_embedding_matches_reference(
    base: Qwen3TTS, reference: tuple, rate: int, key: str
) -> None:
    _, ref = reference
    embedding = base.speaker_embedding(reference_clip(rate), rate)
    expected = ref[key]
    np.testing.assert_allclose(
        embedding.numpy(), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()
    )


def test_voice_clone_greedy(base: Qwen3TTS, reference: tuple) -> None:
    meta, ref = reference
    embedding = torch.from_numpy(ref["speaker_embedding"])
    codes = torch.from_numpy(ref["ref_codes"].astype(np.int64))
    voices = [VoiceClonePrompt(embedding), VoiceClonePrompt(embedding, codes, meta["ref_text"])]
    for name, non_streaming in (("voice_clone", None), ("voice_clone_non_streaming", True)):
        requests = [
            SpeechRequest(t, "English", voice=v, non_streaming=non_streaming)
            for t, v in zip(CLONE_TEXTS, voices, strict=True)
        ]
        check_case(base, name, requests, reference)


def test_bad_requests_say_what_to_fix(custom_voice: Qwen3TTS, base: Qwen3TTS) -> None:
    with pytest.raises(InvalidInputError, match="speaker"):
        custom_voice.generate([SpeechRequest("Hi.", "English", speaker="nobody")])
    with pytest.raises(InvalidInputError, match="language"):
        custom_voice.generate([SpeechRequest("Hi.", "Klingon", speaker="vivian")])
    with pytest.raises(InvalidInputError, match="reference clip"):
        base.generate([SpeechRequest("Hi.", "English")])
    with pytest.raises(InvalidInputError, match="transcript"):
        base.voice_clone_prompt(reference_clip(), 24000, ref_text=None)
    with pytest.raises(InvalidInputError, match="top_p"):
        SamplingOptions(top_p=0.0)


def test_speaker_mel_shape() -> None:
    mel = speaker_mel(reference_clip(), 24000)
    assert mel.shape == (18000 // 256, 128) and torch.isfinite(mel).all()


# --- `ferrum tts` with a Qwen3-TTS folder (tiny talker + the codec helper's tiny codec) ---------


def write_model(root: Path, checkpoint: Path, model_type: str) -> Path:
    """A full Qwen3-TTS folder: the talker checkpoint, its tokenizer and `speech_tokenizer/`."""
    from .test_qwen3_tts_codec import write_checkpoint

    folder = write_checkpoint(root / model_type)
    for name in (*TOKENIZER_FILES, "model.safetensors"):
        shutil.copy(checkpoint / name, folder / name)
    config = json.loads((FIXTURES / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tts_model_type": model_type}))
    (folder / "generation_config.json").write_text(json.dumps({"max_new_tokens": 12}))
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("qwen3_tts_cli")
    clip = root / "clip.wav"
    import soundfile

    soundfile.write(clip, reference_clip().numpy(), 24000)
    folders = {
        t: write_model(root, checkpoint, t) for t in ("base", "custom_voice", "voice_design")
    }
    return {**folders, "clip": clip}


def run_cli(args: list[str]) -> object:
    from typer.testing import CliRunner

    from ferrum.commands import _register, app

    _register()
    return CliRunner().invoke(app, ["tts", *args])


def test_cli_custom_voice_equals_the_library(models: dict[str, Path], tmp_path: Path) -> None:
    import soundfile

    from ferrum.audio.qwen3_tts import Qwen3SpeechOptions, Qwen3Synthesizer

    out = tmp_path / "speech.wav"
    args = ["Hello world.", "-m", str(models["custom_voice"]), "-o", str(out)]
    result = run_cli([*args, "--speaker", "vivian", "--language", "english", "--seed", "3"])
    assert result.exit_code == 0, result.output
    samples, rate = soundfile.read(out, dtype="float32")
    synthesizer = Qwen3Synthesizer(models["custom_voice"], device="cpu")
    options = Qwen3SpeechOptions(speaker="vivian", language="english", seed=3)
    expected = synthesizer.synthesize("Hello world.", options).samples
    codes = synthesizer.tts.generate(
        [SpeechRequest("Hello world.", "english", speaker="vivian")],
        synthesizer.tts.default_options(seed=3),
    )[0]
    per_frame = synthesizer.codec.config.decode_upsample_rate
    assert rate == 24000 and len(samples) == len(expected) == codes.shape[0] * per_frame > 0
    np.testing.assert_allclose(samples, expected, atol=1 / 32768)  # 16-bit wav


def test_cli_voice_clone_and_voice_design(models: dict[str, Path], tmp_path: Path) -> None:
    import soundfile

    base = ["Good day to you.", "-m", str(models["base"]), "--ref-audio", str(models["clip"])]
    for extra in (["--ref-text", "This is my reference clip."], []):  # ICL, then x-vector only
        out = tmp_path / "clone.wav"
        result = run_cli([*base, *extra, "-o", str(out), "--seed", "1"])
        assert result.exit_code == 0, result.output
        assert soundfile.info(out).samplerate == 24000
    out = tmp_path / "design.wav"
    design = ["Hello.", "-m", str(models["voice_design"]), "--instruct", "A deep voice."]
    result = run_cli([*design, "-o", str(out)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("model_type", "args", "message"),
    [
        ("custom_voice", ["--speaker", "nobody"], "needs a speaker"),
        ("custom_voice", ["--speaker", "vivian", "--speed", "2"], "--speed"),
        ("base", [], "reference clip"),
        ("voice_design", ["--ref-text", "hi"], "give the clip"),
    ],
)
def test_cli_errors(
    models: dict[str, Path], model_type: str, args: list[str], message: str
) -> None:
    result = run_cli(["Hi.", "-m", str(models[model_type]), "-o", "x.wav", *args])
    assert result.exit_code != 0
    assert message in str(result.output) + str(result.exception)


def test_bad_folders_raise_clear_errors(checkpoint: Path, tmp_path: Path) -> None:
    from ferrum.errors import CheckpointError, UnsupportedModelError

    config = json.loads((FIXTURES / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no config.json"):
        Qwen3TTS(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "tts_model_type": "karaoke"}))
    with pytest.raises(UnsupportedModelError, match="tts_model_type"):
        Qwen3TTS(tmp_path)
    talker = {k: v for k, v in config["talker_config"].items() if k != "num_hidden_layers"}
    (tmp_path / "config.json").write_text(json.dumps({**config, "talker_config": talker}))
    with pytest.raises(CheckpointError, match="num_hidden_layers"):
        Qwen3TTS(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="safetensors"):
        Qwen3TTS(tmp_path)
