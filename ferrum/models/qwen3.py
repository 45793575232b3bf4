"""Qwen3 (dense): the LLaMA decoder with a per-head RMSNorm on q and k before rope.

Its head_dim is explicit (often not hidden_size / num_heads) and there is no q/k/v bias unless
the config asks for one; `TransformerConfig.from_hf` sets `qk_norm` for this architecture and the
LLaMA module adds the `q_norm` / `k_norm` weights it loads from the checkpoint.
"""

from __future__ import annotations

from ferrum.models.llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    """LLaMA with q_norm/k_norm (config.qk_norm) and an explicit head_dim."""
