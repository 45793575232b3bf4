"""build_model: broken checkpoints give CheckpointError naming the tensor, unknown architectures
UnsupportedModelError, extra tensors some checkpoints carry are skipped, and a random init needs
no checkpoint at all."""

from __future__ import annotations

import pytest
import torch

from ferrum.errors import CheckpointError, UnsupportedModelError
from ferrum.layers.attention import Attention
from ferrum.layers.norm import RMSNorm
from ferrum.models.build import RANDOM_INIT_STD, build_model

CPU = torch.device("cpu")


def build(checkpoint, tensors):
    return build_model(checkpoint.hf_config, tensors, CPU, torch.float32)


def without(checkpoint, name: str):
    return ((n, t) for n, t in checkpoint.tensors() if n != name)


def replaced(checkpoint, name: str, tensor: torch.Tensor):
    return ((n, tensor if n == name else t) for n, t in checkpoint.tensors())


@pytest.mark.parametrize(
    "name",
    [
        "model.norm.weight",
        "lm_head.weight",
        "model.layers.1.self_attn.k_proj.weight",  # one shard of the fused qkv
        "model.layers.0.mlp.up_proj.weight",  # one shard of the fused gate_up
    ],
)
def test_missing_tensor(llama_checkpoint, name):
    with pytest.raises(CheckpointError, match="missing"):
        build(llama_checkpoint, without(llama_checkpoint, name))


@pytest.mark.parametrize(
    "name, shape",
    [
        ("model.layers.0.self_attn.o_proj.weight", (64, 32)),
        ("model.layers.0.self_attn.q_proj.weight", (32, 64)),  # fused shard
        ("model.layers.0.mlp.gate_proj.weight", (128, 65)),  # fused shard
        ("model.embed_tokens.weight", (299, 64)),
    ],
)
def test_wrong_shape(llama_checkpoint, name, shape):
    with pytest.raises(CheckpointError, match="shape"):
        build(llama_checkpoint, replaced(llama_checkpoint, name, torch.zeros(shape)))


def test_unexpected_tensor(llama_checkpoint):
    extra = [
        *llama_checkpoint.tensors(),
        ("model.layers.0.self_attn.z_proj.weight", torch.zeros(2)),
    ]
    with pytest.raises(CheckpointError, match="z_proj"):
        build(llama_checkpoint, extra)


def test_unknown_architecture(llama_checkpoint):
    config = {**llama_checkpoint.hf_config, "architectures": ["FalconForCausalLM"]}
    with pytest.raises(UnsupportedModelError, match="FalconForCausalLM"):
        build_model(config, llama_checkpoint.tensors(), CPU, torch.float32)


def test_ignored_extras_load(llama_checkpoint):
    tensors = [*llama_checkpoint.tensors(), ("model.rotary_emb.inv_freq", torch.zeros(8))]
    model = build(llama_checkpoint, tensors)
    ref = dict(llama_checkpoint.hf_model.named_parameters())
    torch.testing.assert_close(model.model.norm.weight, ref["model.norm.weight"])
    qkv = model.model.layers[1].self_attn.qkv_proj.weight
    torch.testing.assert_close(qkv[-32:], ref["model.layers.1.self_attn.v_proj.weight"])

    tied = {**llama_checkpoint.hf_config, "tie_word_embeddings": True}
    model = build_model(tied, llama_checkpoint.tensors(), CPU, torch.float32)  # lm_head skipped
    assert model.lm_head is None
    hidden = torch.randn(3, 64)
    torch.testing.assert_close(
        model.compute_logits(hidden), hidden @ ref["model.embed_tokens.weight"].T
    )


def test_random_init_without_checkpoint(llama_checkpoint):
    model = build_model(llama_checkpoint.hf_config, None, CPU, torch.bfloat16)
    norms = [m.weight for m in model.modules() if isinstance(m, RMSNorm)]
    assert norms and all(bool((w == 1).all()) for w in norms)
    qkv = model.model.layers[0].self_attn.qkv_proj.weight
    assert qkv.dtype == torch.bfloat16 and not qkv.requires_grad
    assert float(qkv.float().std()) == pytest.approx(RANDOM_INIT_STD, rel=0.1)
    assert "model.rotary_emb.cos_sin_cache" not in model.state_dict()
    assert model.model.rotary_emb.cos_sin_cache.dtype == torch.float32
    for m in model.modules():
        if isinstance(m, Attention):
            m.kv_cache = torch.zeros(2, 4, 4, 2, 16, dtype=torch.bfloat16)
    from ferrum.layers.attention import build_metadata

    meta = build_metadata([5], [5], [[2, 0]], 4, CPU)
    logits = model.compute_logits(model(torch.arange(5), torch.arange(5), meta))
    assert logits.shape == (5, 300) and logits.dtype == torch.float32
    assert bool(torch.isfinite(logits).all())


def test_bfloat16_load_tracks_float32(llama_checkpoint, paged_driver):
    tokens = list(range(3, 40, 3))
    full = paged_driver(build(llama_checkpoint, llama_checkpoint.tensors())).step([(0, tokens)])[0]
    half = build_model(llama_checkpoint.hf_config, llama_checkpoint.tensors(), CPU, torch.bfloat16)
    assert half.model.layers[0].mlp.gate_up_proj.weight.dtype == torch.bfloat16
    driver = paged_driver(half)
    for module in half.modules():
        if isinstance(module, Attention):
            module.kv_cache = module.kv_cache.to(torch.bfloat16)
    low = driver.step([(0, tokens)])[0]
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, full, atol=0.1, rtol=0.05)


def test_weights_are_one_bf16_arena(llama_checkpoint):
    """A built model's parameters, random or loaded, are views of one bf16 allocation."""
    for tensors in (None, llama_checkpoint.tensors()):
        model = build_model(llama_checkpoint.hf_config, tensors, CPU, torch.bfloat16)
        params = list(model.parameters())
        assert {p.dtype for p in params} == {torch.bfloat16}
        assert len({p.untyped_storage().data_ptr() for p in params}) == 1
