"""A transformers model that shares a ferrum model's weights (no copy), for parity checks and
baselines "on the same weights".

ferrum fuses q/k/v and gate/up into one matrix each; transformers keeps them apart. Each HF
parameter becomes a view of the rows of ferrum's fused tensor (`FusedLinear.shard_rows`), so
both models read the same memory: an 8B model costs its weights once, and random weights are
identical by construction.
"""

from __future__ import annotations

import torch
from torch import nn

from ferrum.layers.linear import FusedLinear

# ferrum fused projection -> HF names of its shards, in shard order
_SHARD_NAMES: dict[str, dict[object, str]] = {
    "qkv_proj": {"q": "q_proj", "k": "k_proj", "v": "v_proj"},
    "gate_up_proj": {0: "gate_proj", 1: "up_proj"},
}


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's parameters under HF names, fused ones split into row views."""
    state: dict[str, torch.Tensor] = {}
    fused = {name: m for name, m in model.named_modules() if isinstance(m, FusedLinear)}
    for name, param in model.named_parameters():
        module_name, _, leaf = name.rpartition(".")
        module = fused.get(module_name)
        if module is None:
            state[name] = param.detach()
            continue
        parent, _, fused_name = module_name.rpartition(".")
        for shard, (start, rows) in module.shard_rows.items():
            hf_name = _SHARD_NAMES[fused_name][shard]
            state[f"{parent}.{hf_name}.{leaf}"] = param.detach().narrow(0, start, rows)
    return state


def hf_twin(model: nn.Module, hf_config: dict, attn_implementation: str = "sdpa") -> nn.Module:
    """A transformers CausalLM over the same weights as `model` (a ferrum LLaMA-family model
    built from `hf_config`), on the same device and in the same dtype."""
    import transformers

    param = next(model.parameters())
    options = {k: v for k, v in hf_config.items() if k not in ("model_type", "architectures")}
    cfg = transformers.AutoConfig.for_model(hf_config["model_type"], **options)
    with torch.device("meta"):
        hf = transformers.AutoModelForCausalLM.from_config(
            cfg, dtype=param.dtype, attn_implementation=attn_implementation
        )
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False, assign=True)
    tied = bool(hf_config.get("tie_word_embeddings"))
    if unexpected or [m for m in missing if not (tied and m == "lm_head.weight")]:
        raise RuntimeError(f"weights do not line up: missing {missing}, unexpected {unexpected}")
    if tied:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    # computed buffers (the rope table) were built on the meta device: rebuild them for real
    with torch.device(param.device):
        hf.model.rotary_emb = type(hf.model.rotary_emb)(hf.config)
    return hf.eval()
