"""The LLM architectures ferrum runs, looked up lazily by the HF `architectures` name.

A model module is imported only when its architecture is asked for, so listing what is supported
costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ferrum.errors import UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn

# HF architecture name -> "module:class" of the nn.Module that runs it.
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "ferrum.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "ferrum.models.llama:LlamaForCausalLM",
    "Qwen2ForCausalLM": "ferrum.models.qwen2:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "ferrum.models.qwen3:Qwen3ForCausalLM",
}


def model_class(architecture: str) -> type[nn.Module]:
    """The model class for an HF architecture name; UnsupportedModelError if there is none."""
    target = ARCHITECTURES.get(architecture)
    if target is None:
        raise UnsupportedModelError(
            f"architecture {architecture!r} is not supported; supported: "
            f"{', '.join(sorted(ARCHITECTURES))}"
        )
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)
