"""TransformerConfig: the hyperparameters of a LLaMA-family decoder, read from an HF config.json.

One dataclass covers LLaMA, Mistral, Qwen2 and Qwen3: they differ in a few flags (q/k/v bias,
per-head q/k norm, explicit head_dim), which `from_hf` fills per architecture the way transformers
does, including its defaults for keys a config.json leaves out. Rope parameters are accepted in
both spellings found on disk: transformers 4 (`rope_theta` + `rope_scaling`) and transformers 5
(`rope_parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferrum.errors import CheckpointError, UnsupportedModelError

DEFAULT_ROPE_THETA = 10_000.0
DEFAULT_RMS_NORM_EPS = 1e-6
# Rope types whose tables we compute exactly as transformers does ("default" means unscaled).
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# Rope types that need the pretraining context length (transformers defaults it to the model's).
ROPE_TYPES_WITH_ORIGINAL_CONTEXT = ("llama3", "yarn")
SUPPORTED_ACTIVATIONS = ("silu",)


@dataclass(frozen=True)
class _ArchDefaults:
    """What an architecture's transformers config class assumes when config.json is silent."""

    max_position_embeddings: int
    default_head_dim: int | None  # None: hidden_size // num_heads
    qkv_bias: bool | None  # None: read `attention_bias` from the config
    out_bias_follows_qkv: bool  # o_proj has a bias whenever q/k/v do (LLaMA, Qwen3)
    qk_norm: bool
    has_mlp_bias: bool  # reads `mlp_bias` (LLaMA only)


_ARCHS: dict[str, _ArchDefaults] = {
    "LlamaForCausalLM": _ArchDefaults(2048, None, None, True, False, True),
    "MistralForCausalLM": _ArchDefaults(4096 * 32, None, False, False, False, False),
    "Qwen2ForCausalLM": _ArchDefaults(32768, None, True, False, False, False),
    "Qwen3ForCausalLM": _ArchDefaults(32768, 128, None, True, True, False),
}


@dataclass
class TransformerConfig:
    """Hyperparameters of one LLaMA-family decoder-only model."""

    architecture: str  # HF "architectures"[0], e.g. "LlamaForCausalLM"
    vocab_size: int
    hidden_size: int
    intermediate_size: int  # width of the gated MLP
    num_layers: int
    num_heads: int  # query heads
    num_kv_heads: int  # key/value heads (< num_heads: grouped-query attention)
    head_dim: int
    rms_norm_eps: float
    rope_theta: float  # rotary base wavelength
    rope_scaling: dict | None  # None: plain rope; else {"rope_type": ..., type's parameters}
    max_position_embeddings: int  # longest context the model is run at
    tie_word_embeddings: bool  # lm_head reuses the token embedding matrix
    attention_bias: bool  # q/k/v projections have a bias (Qwen2)
    qk_norm: bool  # per-head RMSNorm on q and k before rope (Qwen3)
    hidden_act: str = "silu"
    attention_out_bias: bool = False  # o_proj has a bias (LLaMA/Qwen3 with attention_bias=true)
    mlp_bias: bool = False  # gate/up/down projections have biases (LLaMA mlp_bias=true)

    @property
    def rope_type(self) -> str:
        return self.rope_scaling["rope_type"] if self.rope_scaling else "default"

    @classmethod
    def from_hf(cls, hf: dict) -> TransformerConfig:
        """Read an HF config.json dict; UnsupportedModelError for architectures, rope types or
        activations ferrum does not run, CheckpointError for a config that is malformed."""
        arch = _architecture(hf)
        traits = _ARCHS[arch]
        hidden = _positive_int(hf, "hidden_size")
        heads = _positive_int(hf, "num_attention_heads")
        kv_heads = _positive_int(hf, "num_key_value_heads", default=heads)
        if heads % kv_heads:
            raise CheckpointError(
                f"config.json: num_attention_heads ({heads}) is not a multiple of "
                f"num_key_value_heads ({kv_heads})"
            )
        head_dim = _positive_int(hf, "head_dim", default=traits.default_head_dim or hidden // heads)
        qkv_bias = traits.qkv_bias
        if qkv_bias is None:
            qkv_bias = bool(hf.get("attention_bias", False))
        act = hf.get("hidden_act", "silu")
        if act not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModelError(
                f"{arch} with hidden_act={act!r} is not supported (supported: "
                f"{', '.join(SUPPORTED_ACTIVATIONS)})"
            )
        max_pos = _positive_int(hf, "max_position_embeddings", traits.max_position_embeddings)
        theta, scaling = _rope(hf, arch, max_pos)
        return cls(
            architecture=arch,
            vocab_size=_positive_int(hf, "vocab_size"),
            hidden_size=hidden,
            intermediate_size=_positive_int(hf, "intermediate_size"),
            num_layers=_positive_int(hf, "num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=float(hf.get("rms_norm_eps") or DEFAULT_RMS_NORM_EPS),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=_usable_context(hf, arch, max_pos),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            attention_bias=qkv_bias,
            qk_norm=traits.qk_norm,
            hidden_act=act,
            attention_out_bias=qkv_bias and traits.out_bias_follows_qkv,
            mlp_bias=traits.has_mlp_bias and bool(hf.get("mlp_bias", False)),
        )


def supported_architectures() -> list[str]:
    """The HF architecture names `TransformerConfig.from_hf` reads."""
    return sorted(_ARCHS)


def _architecture(hf: dict) -> str:
    archs = hf.get("architectures") or []
    if not archs:
        raise CheckpointError("config.json has no 'architectures' entry; cannot tell the model")
    arch = archs[0]
    if arch not in _ARCHS:
        raise UnsupportedModelError(
            f"architecture {arch!r} is not supported; supported: {', '.join(sorted(_ARCHS))}"
        )
    return arch


def _positive_int(hf: dict, key: str, default: int | None = None) -> int:
    value = hf.get(key)
    if value is None:
        if default is None:
            raise CheckpointError(f"config.json lacks {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


def _rope(hf: dict, arch: str, max_pos: int) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling or None), from either transformers 4 or 5 spelling."""
    params: dict[str, Any] = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    if any(isinstance(v, dict) for v in params.values()):
        raise UnsupportedModelError(f"{arch}: per-layer rope parameters are not supported")
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    theta = float(params.pop("rope_theta", None) or hf.get("rope_theta") or DEFAULT_ROPE_THETA)
    factor = params.get("partial_rotary_factor", hf.get("partial_rotary_factor"))
    if factor not in (None, 1, 1.0):
        raise UnsupportedModelError(f"{arch}: partial_rotary_factor={factor} is not supported")
    params.pop("partial_rotary_factor", None)
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"{arch}: rope type {rope_type!r} is not supported (supported: "
            f"{', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    if rope_type == "default":
        return theta, None
    if rope_type in ROPE_TYPES_WITH_ORIGINAL_CONTEXT:
        original = hf.get("original_max_position_embeddings")
        params["original_max_position_embeddings"] = (
            original or params.get("original_max_position_embeddings") or max_pos
        )
    if rope_type == "yarn" and not params.get("factor"):
        # transformers derives the stretch from the two context lengths
        params["factor"] = max_pos / params["original_max_position_embeddings"]
    required = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor")}
    missing = [k for k in required.get(rope_type, ()) if params.get(k) is None]
    if missing:
        raise CheckpointError(f"config.json: {rope_type} rope scaling lacks {', '.join(missing)}")
    return theta, {"rope_type": rope_type, **params}


def _usable_context(hf: dict, arch: str, max_pos: int) -> int:
    """The context we run at: a sliding-window model is capped at its window, inside which
    sliding-window attention equals the full causal attention our kernels compute."""
    window = hf.get("sliding_window")
    sliding = arch == "MistralForCausalLM" or bool(hf.get("use_sliding_window"))
    sliding = sliding or "sliding_attention" in (hf.get("layer_types") or [])
    if sliding and isinstance(window, int) and 0 < window < max_pos:
        return window
    return max_pos
