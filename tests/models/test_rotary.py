"""Rope frequencies and attention factors equal transformers' ROPE_INIT_FUNCTIONS for every rope
type we accept, and the rotation equals transformers' apply_rotary_pos_emb."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama import modeling_llama  # noqa: E402

from ferrum.layers.rotary import RotaryEmbedding, apply_rotary, rope_frequencies  # noqa: E402
from ferrum.models.config import TransformerConfig  # noqa: E402

HEAD_DIM = 64
MAX_POS = 8192

CASES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 1024,
    },
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048},
    "yarn-no-truncate-betas": {
        "rope_type": "yarn",
        "factor": 2.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 16,
        "beta_slow": 2,
        "truncate": False,
    },
    "yarn-mscale": {
        "rope_type": "yarn",
        "factor": 40.0,
        "original_max_position_embeddings": 4096,
        "mscale": 1.0,
        "mscale_all_dim": 0.707,
    },
    "yarn-attention-factor": {
        "rope_type": "yarn",
        "factor": 8.0,
        "original_max_position_embeddings": 1024,
        "attention_factor": 1.3,
    },
}


def hf_config(scaling: dict | None, theta: float):
    params = {"rope_type": "default", "rope_theta": theta, **(scaling or {})}
    return transformers.LlamaConfig(
        hidden_size=HEAD_DIM * 4,
        num_attention_heads=4,
        max_position_embeddings=MAX_POS,
        rope_parameters=params,
    )


def ours(hf_cfg) -> TransformerConfig:
    raw = hf_cfg.to_dict()
    raw["architectures"] = ["LlamaForCausalLM"]
    raw.update(vocab_size=10, intermediate_size=8, num_hidden_layers=1)
    return TransformerConfig.from_hf(raw)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("theta", [10000.0, 1000000.0])
def test_frequencies_match_transformers(case, theta):
    hf_cfg = hf_config(CASES[case], theta)
    rope_type = hf_cfg.rope_parameters["rope_type"]
    if rope_type == "default":
        init = modeling_llama.LlamaRotaryEmbedding.compute_default_rope_parameters
    else:
        init = ROPE_INIT_FUNCTIONS[rope_type]
    ref_freq, ref_factor = init(hf_cfg, device=torch.device("cpu"))
    cfg = ours(hf_cfg)
    inv_freq, factor = rope_frequencies(
        cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, cfg.max_position_embeddings
    )
    torch.testing.assert_close(inv_freq, ref_freq.float(), rtol=1e-6, atol=0)
    assert factor == pytest.approx(ref_factor, rel=1e-12)


@pytest.mark.parametrize("case", ["default", "llama3", "yarn-mscale"])
def test_rotation_matches_transformers(case):
    hf_cfg = hf_config(CASES[case], 10000.0)
    cfg = ours(hf_cfg)
    positions = torch.tensor([0, 1, 5, 700, 4000, 8191])
    hf_rope = modeling_llama.LlamaRotaryEmbedding(hf_cfg)
    x = torch.randn(1, len(positions), HEAD_DIM)
    cos_ref, sin_ref = hf_rope(x, positions[None])  # (1, T, D)
    q = torch.randn(len(positions), 3, HEAD_DIM)  # (T, H, D)
    ref, _ = modeling_llama.apply_rotary_pos_emb(
        q.transpose(0, 1)[None], q.transpose(0, 1)[None], cos_ref, sin_ref
    )
    rope = RotaryEmbedding(
        cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling
    )
    cos, sin = rope(positions, torch.float32)
    got = apply_rotary(q, cos, sin)
    torch.testing.assert_close(got, ref[0].transpose(0, 1), atol=1e-5, rtol=1e-5)


def test_rope_table_is_not_state():
    rope = RotaryEmbedding(16, 32, 10000.0, None)
    assert "cos_sin_cache" not in rope.state_dict()
    assert rope.cos_sin_cache.shape == (32, 16)
    with torch.device("meta"):
        lazy = RotaryEmbedding(16, 32, 10000.0, None)
    lazy.to_empty(device="cpu")
    lazy.init_buffers()
    torch.testing.assert_close(lazy.cos_sin_cache, rope.cos_sin_cache)
