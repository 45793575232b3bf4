"""Qwen3-TTS 12 Hz speech codec against the reference package (qwen-tts 0.1.1).

The fixture (tests/tts/fixtures/make_qwen3_tts_codec.py) ran the reference on a tiny random
configuration; here the same weights are rebuilt from names and shapes, written in the real
checkpoint layout (`speech_tokenizer/config.json` + `model.safetensors`), loaded through
`SpeechCodec.from_dir`, and run on the same inputs.
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

from ferrum.errors import CheckpointError, InvalidInputError
from ferrum.models.qwen3_tts.codec import CodecModel, SpeechCodec, checkpoint_name_map
from ferrum.models.qwen3_tts.codec_config import CodecConfig
from tests.conftest import shared_sample
from tests.tts.seeded_weights import apply_rule, seeded_state_dict

FIXTURE = Path(__file__).parent / "fixtures" / "qwen3_tts_codec"
RELATIVE_TOLERANCE = 1e-4  # of the reference waveform's peak


def write_checkpoint(root: Path) -> Path:
    """A Qwen3-TTS checkpoint folder holding only its `speech_tokenizer/` subfolder."""
    folder = root / "speech_tokenizer"
    folder.mkdir(parents=True)
    shapes = json.loads((FIXTURE / "shapes.json").read_text())
    rules = json.loads((FIXTURE / "rules.json").read_text())
    state = seeded_state_dict({k: tuple(v) for k, v in shapes.items()}, rules["seed"])
    state = {k: apply_rule(k, v, rules["rules"]).contiguous() for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"))
    shutil.copy(FIXTURE / "config.json", folder / "config.json")
    return root


@pytest.fixture(scope="module")
def codec(tmp_path_factory: pytest.TempPathFactory) -> SpeechCodec:
    root = write_checkpoint(tmp_path_factory.mktemp("qwen3_tts"))
    return SpeechCodec.from_dir(root, torch.device("cpu"), torch.float32)


def test_attributes(codec: SpeechCodec) -> None:
    config = json.loads((FIXTURE / "config.json").read_text())
    assert codec.sample_rate == config["output_sample_rate"]
    assert codec.num_quantizers == config["decoder_config"]["num_quantizers"]
    assert codec.frame_rate == config["output_sample_rate"] / config["decode_upsample_rate"]


def test_subfolder_itself_loads(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path)
    codec = SpeechCodec.from_dir(root / "speech_tokenizer", torch.device("cpu"), torch.float32)
    assert codec.num_quantizers == 4


def test_real_checkpoint_names_and_shapes() -> None:
    """Every tensor of the real 12 Hz checkpoint (names and shapes from the reference model at
    the hub config) lands on one of our parameters with its shape, and nothing is left empty."""
    real = json.loads((FIXTURE / "real_config.json").read_text())
    with gzip.open(FIXTURE / "real_shapes.json.gz", "rt", encoding="utf-8") as f:
        shapes = json.load(f)
    config = CodecConfig.from_dict(real)
    with torch.device("meta"):
        model = CodecModel(config)
    params = {name: tuple(p.shape) for name, p in model.named_parameters()}
    map_name = checkpoint_name_map(config)
    filled = set()
    for name, shape in shapes.items():
        target = map_name(name)
        if target is None:
            continue
        assert params.get(target) == tuple(shape), f"{name} -> {target}"
        filled.add(target)
    assert filled == set(params)
    assert config.decode_upsample_rate == config.decoder.total_upsample == 1920


def test_decode_matches_reference(codec: SpeechCodec) -> None:
    """A padded batch of two lengths; the longer crosses the 300-frame chunk boundary."""
    ref = np.load(FIXTURE / "decode.npz")
    codes = torch.from_numpy(ref["codes"].astype(np.int64))
    audio = codec.decode(codes)
    assert audio.shape == ref["audio"].shape
    lengths = codec.decode_lengths(codes)
    assert lengths.tolist() == ref["audio_lengths"].tolist()
    expected = torch.from_numpy(ref["audio"])
    scale = expected.abs().max().item()
    assert scale > 0.1  # the fixture's signal is not degenerate
    diff = (audio - expected).abs().max().item()
    assert diff < RELATIVE_TOLERANCE * scale, f"max abs diff {diff:.3g} at scale {scale:.3g}"


def test_decode_single_sequence_equals_its_batch_row(codec: SpeechCodec) -> None:
    ref = np.load(FIXTURE / "decode.npz")
    short_len = int(ref["audio_lengths"][1]) // codec.config.decode_upsample_rate
    codes = torch.from_numpy(ref["codes"][1, :short_len].astype(np.int64))
    audio = codec.decode(codes)  # (T, Q) is taken as a batch of one
    expected = torch.from_numpy(ref["audio"][1, : audio.shape[-1]])
    assert audio.shape == (1, short_len * codec.config.decode_upsample_rate)
    assert (audio[0] - expected).abs().max().item() < RELATIVE_TOLERANCE


def _jfk() -> tuple[np.ndarray, int]:
    soundfile = pytest.importorskip("soundfile")
    path = shared_sample("jfk.flac")
    if not path.exists():
        pytest.skip(f"{path} is missing")
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data.mean(axis=1), int(rate)


def test_encode_matches_reference_on_real_speech(codec: SpeechCodec) -> None:
    pytest.importorskip("soxr")
    samples, rate = _jfk()
    ref = np.load(FIXTURE / "encode.npz")
    codes = codec.encode(torch.from_numpy(samples), rate)
    expected = ref["jfk_codes"].astype(np.int64)
    assert codes.shape == expected.shape
    assert len(np.unique(expected[:, 0])) > 5  # the codes follow the audio
    mismatched = (codes.numpy() != expected).sum()
    assert mismatched == 0, f"{mismatched} of {expected.size} codes differ"


def test_encode_short_clip_matches_reference(codec: SpeechCodec) -> None:
    pytest.importorskip("soxr")
    samples, rate = _jfk()
    ref = np.load(FIXTURE / "encode.npz")
    start = int(float(ref["short_start_s"]) * rate)
    piece = samples[start : start + int(float(ref["short_duration_s"]) * rate)]
    codes = codec.encode(torch.from_numpy(piece), rate)
    np.testing.assert_array_equal(codes.numpy(), ref["short_codes"].astype(np.int64))


def test_bad_codes_are_rejected(codec: SpeechCodec) -> None:
    with pytest.raises(InvalidInputError, match="shape"):
        codec.decode(torch.zeros(1, 5, codec.num_quantizers + 1, dtype=torch.long))
    with pytest.raises(InvalidInputError, match=r"\[0, "):
        codec.decode(torch.full((1, 5, codec.num_quantizers), 10_000, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="no frames"):
        codec.decode(torch.zeros(1, 0, codec.num_quantizers, dtype=torch.long))
    with pytest.raises(InvalidInputError, match="mono"):
        codec.encode(torch.zeros(2, 100), 24000)


def test_missing_weights_file(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path)
    (root / "speech_tokenizer" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="safetensors"):
        SpeechCodec.from_dir(root, torch.device("cpu"), torch.float32)


def test_missing_config(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path)
    (root / "speech_tokenizer" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config"):
        SpeechCodec.from_dir(root, torch.device("cpu"), torch.float32)


def test_corrupt_weights_file(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path)
    weights = root / "speech_tokenizer" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError):
        SpeechCodec.from_dir(root, torch.device("cpu"), torch.float32)


def test_missing_tensor(tmp_path: Path) -> None:
    root = write_checkpoint(tmp_path)
    weights = root / "speech_tokenizer" / "model.safetensors"
    from safetensors.torch import load_file

    state = load_file(str(weights))
    del state["decoder.pre_transformer.norm.weight"]
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match="missing"):
        SpeechCodec.from_dir(root, torch.device("cpu"), torch.float32)
