"""TransformerConfig.from_hf reads config.json the way transformers does, in both rope spellings,
and rejects what ferrum cannot run with errors that say so."""

from __future__ import annotations

import pytest

from ferrum.errors import CheckpointError, UnsupportedModelError
from ferrum.models import ARCHITECTURES, model_class
from ferrum.models.config import TransformerConfig

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
}


def test_transformers4_and_5_rope_spellings_agree():
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    v4 = {
        **LLAMA,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", **scaling, "original_max_position_embeddings": 8},
    }
    v5 = {
        **LLAMA,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            **scaling,
            "original_max_position_embeddings": 8,
        },
    }
    a, b = TransformerConfig.from_hf(v4), TransformerConfig.from_hf(v5)
    assert a == b
    assert a.rope_theta == 500000.0 and a.rope_type == "llama3"
    assert a.rope_scaling["original_max_position_embeddings"] == 8


def test_old_type_key_and_defaults():
    cfg = TransformerConfig.from_hf({**LLAMA, "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert cfg.rope_theta == 10000.0
    assert cfg.head_dim == 16 and not cfg.tie_word_embeddings
    plain = TransformerConfig.from_hf({**LLAMA, "num_key_value_heads": None})
    assert plain.num_kv_heads == 4 and plain.rope_scaling is None


def test_yarn_defaults_like_transformers():
    cfg = TransformerConfig.from_hf({**LLAMA, "rope_scaling": {"type": "yarn", "factor": 4.0}})
    # transformers fills the pretraining context from max_position_embeddings
    assert cfg.rope_scaling["original_max_position_embeddings"] == 4096
    no_factor = {"rope_type": "yarn", "original_max_position_embeddings": 1024}
    cfg = TransformerConfig.from_hf({**LLAMA, "rope_scaling": no_factor})
    assert cfg.rope_scaling["factor"] == 4.0


def test_architecture_flags():
    qwen2 = TransformerConfig.from_hf({**LLAMA, "architectures": ["Qwen2ForCausalLM"]})
    assert qwen2.attention_bias and not qwen2.attention_out_bias and not qwen2.qk_norm
    qwen3 = TransformerConfig.from_hf({**LLAMA, "architectures": ["Qwen3ForCausalLM"]})
    assert qwen3.qk_norm and not qwen3.attention_bias
    assert qwen3.head_dim == 128  # Qwen3Config's default when config.json omits it
    llama = TransformerConfig.from_hf({**LLAMA, "attention_bias": True, "mlp_bias": True})
    assert llama.attention_bias and llama.attention_out_bias and llama.mlp_bias


def test_sliding_window_caps_the_context():
    mistral = {**LLAMA, "architectures": ["MistralForCausalLM"], "sliding_window": 1024}
    assert TransformerConfig.from_hf(mistral).max_position_embeddings == 1024
    mistral["sliding_window"] = None
    assert TransformerConfig.from_hf(mistral).max_position_embeddings == 4096
    qwen = {**LLAMA, "architectures": ["Qwen2ForCausalLM"], "sliding_window": 1024}
    assert TransformerConfig.from_hf(qwen).max_position_embeddings == 4096  # not in use
    qwen["use_sliding_window"] = True
    assert TransformerConfig.from_hf(qwen).max_position_embeddings == 1024


@pytest.mark.parametrize(
    "change, error, words",
    [
        ({"architectures": ["GPT2LMHeadModel"]}, UnsupportedModelError, "GPT2LMHeadModel"),
        ({"architectures": []}, CheckpointError, "architectures"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, UnsupportedModelError, "dynamic"),
        ({"rope_scaling": {"rope_type": "longrope"}}, UnsupportedModelError, "longrope"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, CheckpointError, "freq"),
        ({"hidden_act": "gelu"}, UnsupportedModelError, "gelu"),
        ({"hidden_size": None}, CheckpointError, "hidden_size"),
        ({"num_hidden_layers": "2"}, CheckpointError, "num_hidden_layers"),
        ({"num_key_value_heads": 3}, CheckpointError, "multiple"),
    ],
)
def test_bad_configs(change, error, words):
    with pytest.raises(error, match=words):
        TransformerConfig.from_hf({**LLAMA, **change})


def test_registry():
    assert model_class("MistralForCausalLM") is model_class("LlamaForCausalLM")
    assert model_class("Qwen3ForCausalLM").__name__ == "Qwen3ForCausalLM"
    assert issubclass(model_class("Qwen2ForCausalLM"), model_class("LlamaForCausalLM"))
    with pytest.raises(UnsupportedModelError, match="LlamaForCausalLM"):
        model_class("BertModel")
    assert {"LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"} <= set(ARCHITECTURES)
