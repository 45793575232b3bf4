"""Read a GGUF file (llama.cpp's single-file format): its metadata as an HF config, its tensors
under HF parameter names, dequantized to float32.

GGUF names tensors its own way (`blk.0.attn_q.weight`) and stores hyperparameters as
`<arch>.<key>` metadata; this module translates both back to what an HF checkpoint of the same
model would hold, so a model built for safetensors checkpoints loads a GGUF unchanged.

One wrinkle: llama.cpp's converter permutes the rows of the Q and K projections of llama-arch
models (its rope pairs adjacent dimensions, HF's pairs the two halves), so those are un-permuted
here. Qwen2/Qwen3 files are written unpermuted (llama.cpp uses neox-style rope for them).

Parsing is `gguf_reader.py` and dequantization `dequant.py` (both ours, for load speed; the
`gguf` package is their reference in tests); `checkpoint.py` puts the pieces together and
`tokenizer.py` builds the tokenizer from the same metadata.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ferrum.errors import CheckpointError, UnsupportedModelError
from ferrum.loader.dequant import SUPPORTED_TYPES, dequantize
from ferrum.loader.gguf_reader import GGUFFile, GGUFTensorInfo, read_gguf
from ferrum.registry import (
    LLAMA3_HIGH_FREQ_FACTOR,
    LLAMA3_LOW_FREQ_FACTOR,
    LLAMA3_ORIGINAL_CONTEXT,
)

Array = TypeVar("Array", np.ndarray, torch.Tensor)

# GGUF architecture name -> (HF architectures entry, HF model_type).
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaForCausalLM", "llama"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2"),
    "qwen3": ("Qwen3ForCausalLM", "qwen3"),
}
# Architectures whose Q/K rows llama.cpp permuted for its interleaved rope.
PERMUTED_QK = {"llama"}

SUPPORTED_TENSOR_TYPES = SUPPORTED_TYPES

# Whole-model tensors: GGUF name -> HF name.
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# Per-layer tensors: GGUF `blk.N.<key>` -> HF `model.layers.N.<value>`.
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
# llama.cpp folds llama3 rope scaling into this tensor instead of metadata; it is read back into
# the config's rope_scaling and is not a model parameter.
ROPE_FREQS = "rope_freqs.weight"
PREFETCH_PER_WORKER = 2  # tensors dequantized ahead of the consumer, per pool thread


def open_gguf(path: Path) -> GGUFFile:
    """Open a GGUF file (memory-mapped, metadata parsed); CheckpointError when it is corrupt or
    truncated."""
    return read_gguf(path)


def field_value(reader: GGUFFile, key: str, default: Any = None) -> Any:
    """One metadata value as a Python scalar, string or list (default when the key is absent)."""
    return reader.metadata.get(key, default)


def gguf_architecture(reader: GGUFFile, path: Path) -> str:
    """The file's `general.architecture`, checked against the ones ferrum runs."""
    arch = field_value(reader, "general.architecture")
    if arch is None:
        raise CheckpointError(f"{path}: GGUF metadata has no general.architecture")
    if arch not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"{path}: GGUF architecture {arch!r} is not supported "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    return arch


def gguf_config(reader: GGUFFile, path: Path) -> dict[str, Any]:
    """An HF config.json-style dict for the model in the file, built from its metadata."""
    arch = gguf_architecture(reader, path)

    def meta(key: str, default: Any = None) -> Any:
        return field_value(reader, f"{arch}.{key}", default)

    hidden = meta("embedding_length")
    heads = meta("attention.head_count")
    layers = meta("block_count")
    if hidden is None or heads is None or layers is None:
        raise CheckpointError(f"{path}: GGUF metadata lacks {arch}.embedding_length/head_count/...")
    names = {t.name for t in reader.tensors}
    vocab = meta("vocab_size") or len(field_value(reader, "tokenizer.ggml.tokens", []))
    hf_arch, model_type = ARCHITECTURES[arch]
    config: dict[str, Any] = {
        "architectures": [hf_arch],
        "model_type": model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": meta("feed_forward_length"),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": meta("attention.head_count_kv", heads),
        "head_dim": meta("attention.key_length") or meta("rope.dimension_count") or hidden // heads,
        "hidden_act": "silu",
        "rms_norm_eps": _decimal(meta("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": _decimal(meta("rope.freq_base", 10_000.0)),
        "rope_scaling": _rope_scaling(reader, arch),
        "max_position_embeddings": meta("context_length"),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "mlp_bias": False,
        "bos_token_id": field_value(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field_value(reader, "tokenizer.ggml.eos_token_id"),
    }
    return config


def _decimal(value: float) -> float:
    """A float32 metadata value as the short decimal it was written from (1e-05, not
    9.999999747378752e-06), so configs compare equal to the HF ones."""
    return float(f"{value:.7g}")


def _rope_scaling(reader: GGUFFile, arch: str) -> dict[str, Any] | None:
    kind = field_value(reader, f"{arch}.rope.scaling.type")
    if kind in ("linear", "yarn"):
        scaling: dict[str, Any] = {
            "rope_type": kind,
            "factor": _decimal(field_value(reader, f"{arch}.rope.scaling.factor", 1.0)),
        }
        original = field_value(reader, f"{arch}.rope.scaling.original_context_length")
        if original is not None:
            scaling["original_max_position_embeddings"] = original
        return scaling
    freqs = next((t for t in reader.tensors if t.name == ROPE_FREQS), None)
    if freqs is None:
        return None
    # Llama 3.x: per-frequency divisors, 1 for high frequencies and `factor` for the lowest ones.
    factor = float(_dequantize(reader, freqs).max())
    return {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": LLAMA3_LOW_FREQ_FACTOR,
        "high_freq_factor": LLAMA3_HIGH_FREQ_FACTOR,
        "original_max_position_embeddings": LLAMA3_ORIGINAL_CONTEXT,
    }


def hf_tensor_name(gguf_name: str) -> str | None:
    """The HF parameter name of a GGUF tensor, or None when it has no counterpart."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _LAYER_RE.fullmatch(gguf_name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        return None
    layer, key, kind = m.groups()
    return f"model.layers.{layer}.{_LAYER_NAMES[key]}.{kind}"


def unpermute_qk(w: Array, n_head: int) -> Array:
    """Undo llama.cpp's `permute(w, n_head)`: per head, rows interleaved (pairs) -> halves.
    Works on weights (rows, cols) and biases (rows,), numpy arrays or torch tensors."""
    rows = w.shape[0]
    head_dim = rows // n_head
    # (n_head, head_dim/2, 2, ...) -> (n_head, 2, head_dim/2, ...)
    return w.reshape(n_head, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _dequantize(reader: GGUFFile, tensor: GGUFTensorInfo) -> torch.Tensor:
    if tensor.type_name not in SUPPORTED_TENSOR_TYPES:
        raise UnsupportedModelError(
            f"tensor {tensor.name!r} has GGUF type {tensor.type_name}, which ferrum does not read "
            f"(supported: {', '.join(SUPPORTED_TENSOR_TYPES)}); use another quantization"
        )
    raw = torch.from_numpy(reader.tensor_bytes(tensor))  # (n_bytes,) uint8, no copy
    return dequantize(raw, tensor.type_name, tensor.shape)


def gguf_tensors(
    reader: GGUFFile, config: dict[str, Any], path: Path
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (HF name, float32 tensor) for every model tensor of the file, in file order.
    F32 tensors are views of the file's (copy-on-write) memory map, the rest new memory.

    Tensors are dequantized ahead of the consumer by a pool of `torch.get_num_threads()` Python
    threads, each running torch single-threaded; while the generator is live, torch's intra-op
    thread count is 1 (restored when it finishes or is closed). Why: dequantizing and copying
    are streams of short memory-bound ops, and an OpenMP team pays a barrier on each, which on a
    busy machine (a descheduled worker) costs milliseconds apiece and made loading ten times
    slower; whole tensors per thread need no barrier at all."""
    arch = gguf_architecture(reader, path)
    jobs = [(_hf_name_or_raise(t.name, arch, path), t) for t in reader.tensors]
    jobs = [(name, t) for name, t in jobs if t.name != ROPE_FREQS]
    heads = config["num_attention_heads"]
    kv_heads = config["num_key_value_heads"]

    def load(name: str, tensor: GGUFTensorInfo) -> torch.Tensor:
        data = _read_tensor(reader, tensor, path)
        if arch in PERMUTED_QK and ".attn_q." in tensor.name:
            data = unpermute_qk(data, heads)
        elif arch in PERMUTED_QK and ".attn_k." in tensor.name:
            data = unpermute_qk(data, kv_heads)
        return data

    workers = max(1, torch.get_num_threads())
    with _intra_op_threads(1), ThreadPoolExecutor(workers, "ferrum-gguf") as pool:
        queued = iter(jobs)
        pending = deque(
            (name, pool.submit(load, name, t))
            for name, t in islice(queued, workers * PREFETCH_PER_WORKER)
        )
        while pending:
            name, future = pending.popleft()
            for next_name, t in islice(queued, 1):
                pending.append((next_name, pool.submit(load, next_name, t)))
            yield name, future.result()


def _hf_name_or_raise(gguf_name: str, arch: str, path: Path) -> str:
    if gguf_name == ROPE_FREQS:
        return gguf_name
    name = hf_tensor_name(gguf_name)
    if name is None:
        raise UnsupportedModelError(
            f"{path}: GGUF tensor {gguf_name!r} has no place in a {arch} model"
        )
    return name


def _read_tensor(reader: GGUFFile, tensor: GGUFTensorInfo, path: Path) -> torch.Tensor:
    try:
        return _dequantize(reader, tensor)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{path}: {e}") from e
    except Exception as e:
        raise CheckpointError(
            f"{path}: tensor {tensor.name!r} cannot be read ({type(e).__name__}: {e}); "
            "the file may be truncated or corrupt"
        ) from e


@contextmanager
def _intra_op_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
