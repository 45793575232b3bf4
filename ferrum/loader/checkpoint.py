"""An opened LLM checkpoint: its HF-style config, tokenizer, generation config and weights.

Hides whether the model came as a safetensors directory or a GGUF file: either way `config` has
the keys of the model's HF config.json and `weights()` yields tensors under HF parameter names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferrum.errors import CheckpointError
from ferrum.loader.resolve import ModelSource
from ferrum.loader.tokenizer import Tokenizer

DEFAULT_ROPE_THETA = 10_000.0  # transformers' default rope base when a config names none

if TYPE_CHECKING:
    import torch

    from ferrum.loader.gguf_reader import GGUFFile


@dataclass
class Checkpoint:
    """A model's files, opened: everything needed to build the model and load its weights."""

    source: ModelSource
    config: dict[str, Any]  # HF config.json-style (built from the metadata for a GGUF)
    tokenizer: Tokenizer
    generation_config: dict[str, Any]  # generation_config.json, or {} (GGUF has none)
    _reader: GGUFFile | None = field(default=None, repr=False)

    def weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF parameter name, tensor), one tensor at a time (float32 for GGUF)."""
        if self.source.kind == "gguf":
            from ferrum.loader.gguf import gguf_tensors

            assert self._reader is not None
            return gguf_tensors(self._reader, self.config, self.source.path)
        from ferrum.loader.safetensors import iter_safetensors, safetensors_files

        return iter_safetensors(safetensors_files(self.source.path))


def open_checkpoint(source: ModelSource) -> Checkpoint:
    """Open the checkpoint `source` points at (reading metadata only; weights stream later)."""
    checkpoint = _open_gguf(source) if source.kind == "gguf" else _open_dir(source)
    _normalize_rope(checkpoint.config)
    return checkpoint


def _normalize_rope(config: dict[str, Any]) -> None:
    """Give the config both spellings of its rope settings: `rope_theta` + `rope_scaling` (hub
    config.json files) and `rope_parameters` (what transformers 5 writes), whichever is missing."""
    params = config.get("rope_parameters")
    if isinstance(params, dict) and "rope_theta" not in config:
        config["rope_theta"] = params.get("rope_theta", DEFAULT_ROPE_THETA)
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        is_default = scaling.get("rope_type", "default") == "default"
        config.setdefault("rope_scaling", None if is_default else scaling)
    elif "rope_parameters" not in config:
        scaling = config.get("rope_scaling") or {"rope_type": "default"}
        theta = config.get("rope_theta", DEFAULT_ROPE_THETA)
        config["rope_parameters"] = {"rope_theta": theta, **scaling}


def _open_gguf(source: ModelSource) -> Checkpoint:
    from ferrum.loader.gguf import gguf_config, open_gguf

    reader = open_gguf(source.path)
    config = gguf_config(reader, source.path)
    try:
        tokenizer = Tokenizer.from_gguf(reader)
    except CheckpointError as e:
        raise CheckpointError(f"{source.path}: {e}") from e
    return Checkpoint(source, config, tokenizer, {}, _reader=reader)


def _open_dir(source: ModelSource) -> Checkpoint:
    path = source.path
    config = _read_config(path / "config.json")
    from ferrum.loader.safetensors import safetensors_files

    safetensors_files(path)  # fail now, not mid-load, on a missing shard
    generation: dict[str, Any] = {}
    if (path / "generation_config.json").exists():
        generation = _read_json_object(path / "generation_config.json")
    return Checkpoint(source, config, Tokenizer.from_dir(path), generation)


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path.parent}: no config.json")
    config = _read_json_object(path)
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures:
        raise CheckpointError(
            f"{path}: has no 'architectures' list, so the model class is unknown "
            '(add e.g. "architectures": ["LlamaForCausalLM"])'
        )
    return config
