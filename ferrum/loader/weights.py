"""Put named checkpoint tensors into a model built on the meta device.

The model is built under `torch.device("meta")` (no memory), then given uninitialized storage on the
target device in the target dtype, and each checkpoint tensor is cast and copied into its parameter
as it is read: the weights exist once in memory, never twice.

A model says how checkpoint names map onto its parameters with `map_name(name)`, returning the
parameter name (or None to skip the tensor). A parameter that is a fusion of several checkpoint
tensors (q/k/v into one qkv matrix) carries a `weight_loader(param, tensor, shard_id)` attribute;
`map_name` then returns `(param_name, shard_id)`. Buffers that are computed rather than loaded
(rotary tables) are rebuilt by each module's `init_buffers()` after the storage is allocated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ferrum.errors import CheckpointError

NameMap = Callable[[str], "str | tuple[str, Any] | None"]


ARENA_ALIGN = 256  # bytes: where each parameter starts in the arena (cudaMalloc's alignment)


def materialize(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Give a meta-device model real (uninitialized) storage and rebuild its computed buffers.

    Every parameter becomes a view of one allocation (an arena), made directly in `dtype` (its
    floating-point parameters; others keep theirs). `to_empty()` would give a float32 meta model
    float32 storage first, one allocation per tensor, and cast after: twice a bf16 model's
    memory at the peak (an 8B model needed 32 GB to load into 16), its weights left scattered
    over the freed float32 blocks."""
    unique: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for p in module._parameters.values():
            if p is not None:
                unique.setdefault(id(p), p)  # a tied parameter once
    layout: list[tuple[int, nn.Parameter, torch.dtype, int]] = []
    total = 0
    for key, p in unique.items():
        dt = dtype if p.is_floating_point() else p.dtype
        layout.append((key, p, dt, total))
        size = p.numel() * dt.itemsize
        total += -(-size // ARENA_ALIGN) * ARENA_ALIGN
    arena = torch.empty(total, dtype=torch.uint8, device=device)
    new: dict[int, nn.Parameter] = {}
    for key, p, dt, offset in layout:
        view = arena[offset : offset + p.numel() * dt.itemsize].view(dt).view(p.shape)
        param = nn.Parameter(view, requires_grad=p.requires_grad)
        param.__dict__.update(p.__dict__)  # the loaders (weight_loader) come along
        new[key] = param
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                module._parameters[name] = new[id(p)]
        for name, b in module._buffers.items():
            if b is not None:
                module._buffers[name] = torch.empty_like(b, device=device)
    for module in model.modules():
        init = getattr(module, "init_buffers", None)
        if callable(init):
            init()
    return model


def load_named_tensors(
    model: nn.Module,
    weights: Iterable[tuple[str, torch.Tensor]],
    map_name: NameMap | None = None,
    *,
    source: str = "checkpoint",
    optional: Callable[[str], bool] | None = None,
) -> None:
    """Copy every tensor of `weights` into `model` (already materialized); raise CheckpointError
    for a shape mismatch or for parameters the checkpoint never provided."""
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    loaded: set[str] = set()
    for name, tensor in weights:
        target = map_name(name) if map_name else name
        if target is None:
            continue
        shard: Any = None
        if isinstance(target, tuple):
            target, shard = target
        param = params.get(target)
        if param is None:
            raise CheckpointError(
                f"{source}: tensor {name!r} has no place in the model ({target!r})"
            )
        loader = getattr(param, "weight_loader", None)
        if loader is not None:
            loader(param, tensor, shard)
        else:
            if tuple(param.shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                    f"the model expects {tuple(param.shape)} for {target!r}"
                )
            with torch.no_grad():
                param.copy_(tensor.to(param.dtype))
        loaded.add(target)
    missing = [n for n, _ in model.named_parameters() if n not in loaded]
    if optional is not None:
        missing = [n for n in missing if not optional(n)]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise CheckpointError(
            f"{source}: {len(missing)} weight(s) missing from the checkpoint: {shown}"
        )
