"""Build a LLaMA-family model from an HF config dict and a stream of named checkpoint tensors.

The model is built on the meta device (no memory, no init work), given storage on the target
device in the target dtype, then filled tensor by tensor; with no checkpoint it gets a random
init instead (for benchmarks that only need the shapes right).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ferrum.errors import CheckpointError
from ferrum.layers.linear import FusedLinear
from ferrum.layers.norm import RMSNorm
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models import model_class
from ferrum.models.config import TransformerConfig

RANDOM_INIT_STD = 0.02  # std of random weights (transformers' initializer_range default)


def build_model(
    hf_config: dict,
    weights: Iterable[tuple[str, torch.Tensor]] | None,
    device: torch.device,
    dtype: torch.dtype,
) -> nn.Module:
    """The model for `hf_config` on `device` in `dtype`, loaded from `weights` (HF tensor names),
    or randomly initialized when `weights` is None. CheckpointError for missing, unexpected or
    misshapen tensors; UnsupportedModelError for architectures ferrum does not run."""
    config = TransformerConfig.from_hf(hf_config)
    cls = model_class(config.architecture)
    with torch.device("meta"):
        model = cls(config)
    materialize(model, device, dtype)
    if weights is None:
        init_random(model)
    else:
        load_named_tensors(model, weights, model.map_name)
        _check_fused_shards(model)
    model.requires_grad_(False)
    return model.eval()


@torch.no_grad()
def init_random(model: nn.Module, std: float = RANDOM_INIT_STD) -> None:
    """Normal(0, std) matrices and embeddings, zero biases, unit norm weights."""
    for module in model.modules():
        if isinstance(module, RMSNorm):
            module.weight.fill_(1.0)
        elif isinstance(module, nn.Linear | nn.Embedding):
            module.weight.normal_(0.0, std)
            bias = getattr(module, "bias", None)
            if bias is not None:
                bias.zero_()


def _check_fused_shards(model: nn.Module) -> None:
    """A fused projection counts as loaded once any shard arrives; every shard must have."""
    missing = [
        f"{name}.{shard}"
        for name, module in model.named_modules()
        if isinstance(module, FusedLinear)
        for shard in module.missing_shards()
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        raise CheckpointError(
            f"checkpoint: {len(missing)} projection shard(s) missing from the checkpoint: {shown}"
        )
