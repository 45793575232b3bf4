"""Weight-only int8/int4 quantization: each quantized linear against a float reference built here
from the same weights, and a tiny quantized model's greedy output against its float self."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ferrum.errors import InvalidInputError
from ferrum.quantization import (
    COMPUTE_DTYPE,
    Int4Linear,
    Int8Linear,
    int4_group_size,
    quantize_model,
)

IN, OUT, TOKENS = 128, 96, 5
BF16_RTOL = 2e-2  # activations and outputs pass through bfloat16 (8 bits of mantissa)


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Max error within `rtol` of the output's scale (bf16 rounding is relative to magnitude)."""
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= rtol * expected.abs().max().item(), err


def _layer(bias: bool) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(IN, OUT, bias=bias)
    with torch.no_grad():
        layer.weight.normal_(0.0, 0.5)
    return layer


def _int8_reference(w: torch.Tensor) -> torch.Tensor:
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    return torch.round(w / scale).clamp(-127, 127) * scale


def _int4_reference(w: torch.Tensor, group: int) -> torch.Tensor:
    g = w.reshape(w.shape[0], -1, group)
    low, high = g.amin(dim=2, keepdim=True), g.amax(dim=2, keepdim=True)
    scale = (high - low) / 15
    return (torch.round((g - low) / scale).clamp(0, 15) * scale + low).reshape(w.shape)


def _bf16_rows(x: torch.Tensor) -> torch.Tensor:
    return x.to(COMPUTE_DTYPE).double()


@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_matches_reference(bias):
    layer = _layer(bias)
    x = torch.randn(2, TOKENS, IN)
    quantized = Int8Linear(layer.weight, layer.bias)
    y = quantized(x)
    assert y.shape == (2, TOKENS, OUT) and y.dtype == torch.float32
    expected = _bf16_rows(x) @ _int8_reference(layer.weight.detach()).double().t()
    if bias:
        expected = expected + layer.bias.detach().double()
    _close(y, expected, BF16_RTOL)
    _close(y, layer(x).detach(), 0.05)  # and near the unquantized layer


@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("bias", [False, True])
def test_int4_linear_matches_reference(bias, group):
    layer = _layer(bias)
    x = torch.randn(TOKENS, IN)
    y = Int4Linear(layer.weight, layer.bias, group)(x)
    assert y.shape == (TOKENS, OUT)
    expected = _bf16_rows(x) @ _int4_reference(layer.weight.detach(), group).double().t()
    if bias:
        expected = expected + layer.bias.detach().double()
    _close(y, expected, BF16_RTOL)
    _close(y, layer(x).detach(), 0.2)  # 16 levels per group: coarse, yet close


def test_int4_group_size_fits_the_input_width():
    assert int4_group_size(576) == 32
    assert int4_group_size(1536, 128) == 128
    assert int4_group_size(48) == 16
    assert int4_group_size(24) is None


PEAK_SCALE = 30.0  # final norm weight x30: logits far apart


def _tiny_llm(tmp_path: Path, tied: bool):
    from ferrum import LLM

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 256,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": tied,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(0)
    llm = LLM(str(path), device="cpu", random_weights=True, max_num_seqs=1, kv_cache_memory="8MiB")
    model = llm.engine.runner.model
    with torch.no_grad():
        # A peaked model: the residual stream is mostly the token's embedding, and the head is
        # the embedding shifted by one row, so the clear winner after token t is t + 1 (tied:
        # t itself); the layers' outputs perturb it, through the quantized matmuls.
        model.model.norm.weight.mul_(PEAK_SCALE)
        if not tied:
            model.lm_head.weight.copy_(model.model.embed_tokens.weight.roll(1, dims=0))
    return llm, model


def _greedy(llm, steps: int) -> list[int]:
    from ferrum import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=steps, ignore_eos=True)
    return llm.generate([[5, 17, 42, 7]], params)[0].outputs[0].token_ids


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("tied", [False, True])
def test_quantized_model_keeps_greedy_output(tmp_path, mode, tied):
    llm, model = _tiny_llm(tmp_path, tied)
    hidden = torch.randn(3, 64)
    float_logits = model.compute_logits(hidden)
    reference = _greedy(llm, 8)
    assert reference == ([7] * 8 if tied else list(range(8, 16)))  # the model is as built
    report = quantize_model(model, mode)
    assert report.layers == 2 * 4 + 1 and not report.skipped  # qkv, o, gate_up, down; logits
    assert report.weight_bytes_after < report.weight_bytes_before / (3 if mode == "int8" else 5)
    assert not any(
        type(m) is nn.Linear or type(m).__name__ == "FusedLinear" for m in model.modules()
    )
    logits = model.compute_logits(hidden)
    assert logits.dtype == torch.float32 and logits.shape == float_logits.shape
    _close(logits, float_logits, 0.05 if mode == "int8" else 0.25)
    assert _greedy(llm, 8) == reference


def test_bad_mode_and_unquantizable_layers(tmp_path):
    with pytest.raises(InvalidInputError, match="int3"):
        quantize_model(nn.Sequential(nn.Linear(64, 64)), "int3")
    model = nn.Sequential(nn.Linear(24, 32), nn.Linear(64, 32))
    report = quantize_model(model, "int4")
    assert report.skipped == ["0"] and report.layers == 1
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], Int4Linear)
