"""Read safetensors checkpoints (one file or an indexed set of shards) tensor by tensor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ferrum.errors import CheckpointError

INDEX_NAME = "model.safetensors.index.json"


def safetensors_files(directory: Path) -> list[Path]:
    """The shard files of a checkpoint directory, checked against its index when there is one."""
    index = directory / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        files = sorted({directory / name for name in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(
                f"{directory}: shard(s) listed in {INDEX_NAME} are missing: {', '.join(missing)}"
            )
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{directory}: no *.safetensors files")
    return files


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield every tensor of the files, one at a time (memory-mapped, so one copy at most)."""
    for path in files:
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as e:  # safetensors raises its own error types for bad headers
            raise CheckpointError(f"{path}: cannot read safetensors header ({e})") from e
        with handle as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                try:
                    yield name, f.get_tensor(name)
                except Exception as e:
                    raise CheckpointError(f"{path}: tensor {name!r} is unreadable ({e})") from e
