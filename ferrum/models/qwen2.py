"""Qwen2 / Qwen2.5: the LLaMA decoder with a bias on the q/k/v projections.

`TransformerConfig.from_hf` sets `attention_bias` for this architecture (its config.json does not
say so), and sliding-window checkpoints are capped at their window; the module is LLaMA's.
"""

from __future__ import annotations

from ferrum.models.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    """LLaMA with q/k/v bias (config.attention_bias) and no o_proj bias."""
