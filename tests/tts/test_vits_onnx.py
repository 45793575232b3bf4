"""ferrum's PyTorch VITS against onnxruntime on the same Piper voice and phoneme ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ferrum.audio.phonemize import phoneme_ids, phonemize
from ferrum.audio.tts import PiperVoiceConfig, load_piper_model
from ferrum.device import Backend
from ferrum.loader.onnx import read_onnx_weights

from .conftest import TINY

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi!",
    "Long ago, in a quiet village by the sea, an old clockmaker repaired watches for "
    "sailors, fishermen and anyone else who knocked on his small green door at dawn.",
]


def onnx_speak(session: object, ids: list[int], scales: tuple[float, float, float]) -> np.ndarray:
    feed = {
        "input": np.array([ids], np.int64),
        "input_lengths": np.array([len(ids)], np.int64),
        "scales": np.array(scales, np.float32),
    }
    return session.run(None, feed)[0].reshape(-1)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def joe(joe_voice: Path, espeak: None) -> tuple[torch.nn.Module, object, PiperVoiceConfig]:
    ort = pytest.importorskip("onnxruntime")
    voice = PiperVoiceConfig.from_json(joe_voice.with_name(joe_voice.name + ".json"))
    model = load_piper_model(joe_voice, voice.num_speakers, Backend.resolve("cpu", "float32"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(joe_voice), options, providers=["CPUExecutionProvider"])
    return model, session, voice


@pytest.mark.slow
@pytest.mark.parametrize("length_scale", [1.0, 0.7])
def test_joe_matches_onnxruntime_without_noise(joe: tuple, length_scale: float) -> None:
    model, session, voice = joe
    for sentence in SENTENCES:
        for phonemes in phonemize(sentence, voice.espeak_voice):
            ids = phoneme_ids(phonemes, voice.phoneme_id_map)
            expected = onnx_speak(session, ids, (0.0, length_scale, 0.0))
            with torch.inference_mode():
                ours = model(
                    torch.tensor(ids), noise_scale=0.0, length_scale=length_scale, noise_w=0.0
                ).numpy()
            # Same durations (the duration predictor agrees), hence the same number of samples.
            assert ours.shape == expected.shape, sentence
            assert np.abs(ours - expected).max() < 1e-3, sentence


def test_onnx_reader_recovers_renamed_weights(tiny_voice: Path) -> None:
    weights = read_onnx_weights(tiny_voice)
    assert "onnx::Conv_1234" not in weights.tensors
    h = TINY.hidden_channels
    assert weights.shape("flow.flows.0.enc.in_layers.0.weight") == (2 * h, h, TINY.flow_kernel_size)
    assert weights.attributes["dec.ups.0.weight"]["strides"] == [TINY.upsample_rates[0]]
    assert weights.attributes["dec.resblocks.1.convs.1.weight"]["dilations"] == [3]


def test_config_is_read_off_the_weights(tiny_voice: Path) -> None:
    model = load_piper_model(tiny_voice, 3, Backend.resolve("cpu", "float32"))
    assert model.config == TINY


def test_unreadable_files_raise_checkpoint_error(tmp_path: Path) -> None:
    from ferrum.errors import CheckpointError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all \x00\xff")
    with pytest.raises(CheckpointError):
        read_onnx_weights(bad)
