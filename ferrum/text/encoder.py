"""What every embedding model looks like to the Embedder, and how one is picked and run.

An encoder offers a text `OneShotWork` (and an image one for CLIP-like models) for the batcher;
each item comes back as an `ItemEmbedding`. `Precision` decides where and in which dtype the
forward runs: on CPUs with bf16 matrix units (AMX / AVX512-BF16) `dtype="auto"` keeps fp32
weights and runs the matmuls under bf16 autocast — layer norms, softmax and pooling stay fp32.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ferrum.batching import OneShotWork
from ferrum.device import Backend
from ferrum.errors import CheckpointError, UnsupportedModelError
from ferrum.text.resolve import ResolvedModel

TEXT_MODEL_TYPES = {"bert", "roberta", "xlm-roberta"}
DUAL_MODEL_TYPES = {"clip", "siglip", "siglip2", "chinese_clip"}
# decoder-only models packaged for last-token embeddings (Qwen3-Embedding and kin)
DECODER_MODEL_TYPES = {"qwen3", "qwen2", "llama", "mistral"}


@dataclass(frozen=True)
class ItemEmbedding:
    """One input's embedding, before optional normalization."""

    vector: np.ndarray  # (D,) float32
    num_tokens: int  # tokens the model read (0 for an image)
    truncated: bool  # the text was cut at the model's max sequence length


@dataclass(frozen=True)
class Precision:
    """Where the forward runs and in which dtypes."""

    device: torch.device
    weight_dtype: torch.dtype
    autocast_dtype: torch.dtype | None  # CPU only: matmuls in this dtype, the rest fp32

    @classmethod
    def choose(cls, device: str = "auto", dtype: str = "auto") -> Precision:
        backend = Backend.resolve(device, dtype)
        if backend.device.type != "cpu":
            return cls(backend.device, backend.dtype, None)
        if (dtype or "auto").lower() == "auto":
            fast = cpu_has_bf16_matmul()
            return cls(backend.device, torch.float32, torch.bfloat16 if fast else None)
        low = backend.dtype if backend.dtype != torch.float32 else None
        return cls(backend.device, torch.float32, low)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.autocast_dtype or self.weight_dtype

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """Inference mode, plus autocast when matmuls run in lower precision (thread-local, so
        entered by the thread that runs the forward)."""
        with torch.inference_mode():
            if self.autocast_dtype is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                    yield


def cpu_has_bf16_matmul() -> bool:
    """True where oneDNN has native bf16 matmuls (AMX tiles or AVX512-BF16)."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


class Encoder(Protocol):
    """A loaded embedding model, as the Embedder drives it."""

    name: str
    dims: int
    normalize_default: bool  # whether the model's own pipeline L2-normalizes
    max_seq_length: int
    text_work: OneShotWork[str, Any, ItemEmbedding]
    image_work: OneShotWork[Any, Any, ItemEmbedding] | None


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointError(f"{path.parent}: no {path.name}") from e
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from e


def load_encoder(model: ResolvedModel, precision: Precision) -> Encoder:
    """Build the encoder for a checkpoint folder, chosen by its config's model_type."""
    config = read_json(model.path / "config.json")
    model_type = config.get("model_type", "")
    if model_type in TEXT_MODEL_TYPES:
        from ferrum.text.sentence import SentenceEncoder

        return SentenceEncoder(model, config, precision)
    if model_type in DUAL_MODEL_TYPES:
        from ferrum.text.dual import DualEncoder

        return DualEncoder(model, config, precision)
    if model_type in DECODER_MODEL_TYPES:
        from ferrum.text.decoder_sentence import DecoderSentenceEncoder

        return DecoderSentenceEncoder(model, config, precision)
    raise UnsupportedModelError(
        f"{model.name}: model_type {model_type!r} is not an embedding model ferrum runs "
        "(supported: BERT-family sentence-transformers models, CLIP, SigLIP, SigLIP2, "
        "Chinese-CLIP, decoder embedding models such as Qwen3-Embedding)"
    )
