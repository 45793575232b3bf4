"""Deterministic random weights from names and shapes alone.

Reference fixtures for models whose reference implementation lives in another environment
(Qwen3-TTS: `qwen-tts` pins transformers 4.57) are made there from these weights, and the tests
rebuild the very same tensors here from the fixture's `{name: shape}` table: no weights are
committed, and both sides see identical values whatever order their modules initialize in.
Uses only torch's CPU generator, whose stream is stable across torch versions.
"""

from __future__ import annotations

import hashlib
import math

import torch

WEIGHT_STD = 0.02  # like transformers' initializer_range
NORM_STD = 0.1  # spread of norm scales around 1


def _seed(name: str, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def is_norm_scale(name: str, shape: tuple[int, ...]) -> bool:
    lowered = name.lower()
    return len(shape) == 1 and lowered.endswith("weight") and "norm" in lowered


def seeded_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """One float32 tensor that depends only on (seed, name, shape)."""
    generator = torch.Generator().manual_seed(_seed(name, seed))
    values = torch.randn(shape, generator=generator, dtype=torch.float32)
    if is_norm_scale(name, shape):
        return 1.0 + NORM_STD * values
    return WEIGHT_STD * values


def seeded_state_dict(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    """`{name: tensor}` for every floating-point entry of `shapes` (a state dict's shapes)."""
    return {name: seeded_tensor(name, tuple(shape), seed) for name, shape in shapes.items()}


def apply_rule(name: str, tensor: torch.Tensor, rules: list[dict]) -> torch.Tensor:
    """A fixture's override rules for one tensor (the first rule whose suffix matches wins):
    where plain random normals make no sense (usage counts, gains), both the fixture script and
    the test apply the same rule."""
    for rule in rules:
        if not name.endswith(rule["suffix"]):
            continue
        if rule["op"] == "abs_affine":
            return tensor.abs() * rule["scale"] + rule["shift"]
        if rule["op"] == "fill":
            return torch.full_like(tensor, rule["value"])
        if rule["op"] == "affine":
            return tensor * rule["scale"] + rule["shift"]
        if rule["op"] == "unit_gain" and tensor.ndim >= rule["min_ndim"]:
            fan_in = math.prod(tensor.shape[1:])
            return tensor * rule["gain"] / (WEIGHT_STD * math.sqrt(fan_in))
        return tensor
    return tensor
