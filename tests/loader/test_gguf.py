"""GGUF checkpoints: weights, un-permuted Q/K and configs against the HF originals and against
transformers' own GGUF loader."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_CONFIGS, smollm2_gguf, write_gguf

from ferrum.loader.checkpoint import open_checkpoint
from ferrum.loader.resolve import ModelSource

STRUCTURAL_KEYS = [
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
]
HF_ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def _gguf_checkpoint(path):
    return open_checkpoint(ModelSource(str(path), "gguf", path))


def _transformers_gguf_state(path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.state_dict()


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_gguf_config_matches_hf_config(arch, tiny_models, tiny_ggufs):
    hf = dict(tiny_models[arch].config)
    config = _gguf_checkpoint(tiny_ggufs[(arch, "F32")]).config
    assert config["architectures"] == [HF_ARCHS[arch]]
    hf.setdefault("head_dim", hf["hidden_size"] // hf["num_attention_heads"])  # Qwen2 omits it
    for key in STRUCTURAL_KEYS:
        assert config[key] == hf[key], key
    assert config["rope_theta"] == hf["rope_parameters"]["rope_theta"]
    assert config["rope_parameters"]["rope_theta"] == hf["rope_parameters"]["rope_theta"]
    if arch != "qwen2":  # Qwen2's config has no attention_bias key: its q/k/v always have biases
        assert config["attention_bias"] == hf["attention_bias"]


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_gguf_f32_weights_equal_hf_exactly(arch, tiny_models, tiny_ggufs):
    original = tiny_models[arch].state_dict
    weights = dict(_gguf_checkpoint(tiny_ggufs[(arch, "F32")]).weights())
    expected = set(original) - ({"lm_head.weight"} if _tied(arch) else set())
    assert set(weights) == expected
    for name, tensor in weights.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, original[name]), name


def _tied(arch: str) -> bool:
    return TINY_CONFIGS[arch]["tie_word_embeddings"]


@pytest.mark.parametrize("qtype", ["F16", "Q8_0"])
@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_gguf_quantized_weights_within_tolerance(arch, qtype, tiny_models, tiny_ggufs):
    original = tiny_models[arch].state_dict
    for name, tensor in _gguf_checkpoint(tiny_ggufs[(arch, qtype)]).weights():
        ref = original[name]
        # Q8_0: blocks of 32 share a scale of max|x|/127, so rounding is within half of it.
        tol = 1e-3 * ref.abs().max() if qtype == "F16" else ref.abs().max() / 127
        assert (tensor - ref).abs().max() <= tol, name


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_gguf_weights_equal_transformers_gguf_loader(arch, tiny_ggufs):
    path = tiny_ggufs[(arch, "Q8_0")]
    reference = _transformers_gguf_state(path)
    weights = dict(_gguf_checkpoint(path).weights())
    # transformers' GGUF config never sets attention_bias for llama, so its model has no q/k/v
    # biases to compare (ours are checked against the HF original above).
    missing = {n for n in weights if n not in reference}
    assert all(n.endswith("_proj.bias") for n in missing) and (arch == "llama" or not missing)
    for name in weights.keys() - missing:
        assert torch.equal(weights[name], reference[name]), name
    if _tied(arch):
        assert "lm_head.weight" not in weights


def test_unknown_architecture_is_unsupported(tmp_path):
    import gguf

    from ferrum.errors import UnsupportedModelError

    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="mamba"):
        _gguf_checkpoint(path)


def test_unsupported_tensor_type_is_named(tmp_path, tiny_models):
    from ferrum.errors import UnsupportedModelError

    path = write_gguf(tmp_path / "q5.gguf", tiny_models["qwen2"], "Q5_0")
    with pytest.raises(UnsupportedModelError, match="Q5_0"):
        dict(_gguf_checkpoint(path).weights())


@pytest.mark.slow
def test_smollm2_gguf_config_and_weights_equal_transformers():
    path = smollm2_gguf()
    checkpoint = _gguf_checkpoint(path)
    from ferrum.registry import builtin_config

    known = builtin_config("smollm2")
    for key in [*STRUCTURAL_KEYS, "architectures", "rope_theta", "rope_scaling"]:
        assert checkpoint.config[key] == known[key], key
    weights = dict(checkpoint.weights())
    assert len(weights) == 272
    reference = _transformers_gguf_state(path)
    assert set(weights) == set(reference) - {"lm_head.weight"}
    for name, tensor in weights.items():
        assert torch.equal(tensor, reference[name]), name
