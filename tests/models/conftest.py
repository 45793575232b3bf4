"""Tiny random HF checkpoints of each LLM variant, and a minimal paged-cache driver for our models.

Every variant is a 2-layer, hidden-64 model built with transformers (the reference), given random
weights everywhere (norms and biases too, so a mis-mapped tensor shows), saved as safetensors and
loaded back through ferrum's own reader and `build_model`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from ferrum.layers.attention import Attention, build_metadata  # noqa: E402
from ferrum.loader.safetensors import iter_safetensors, safetensors_files  # noqa: E402
from ferrum.models.build import build_model  # noqa: E402

VOCAB = 300
WEIGHT_STD = 0.08  # larger than HF's 0.02 so attention patterns and logits are far from uniform
NORM_JITTER = 0.2  # norm weights 1 + N(0, 0.2): a norm loaded into the wrong place shows up
BIAS_STD = 0.1
SEED = 1234

BASE = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
    "rope_theta": 500000.0,
}
YARN_ROPE = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 64,
    "rope_theta": 10000.0,
}

# name -> (transformers config class, overrides of BASE)
VARIANTS: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", {}),
    "llama-llama3-rope": ("LlamaConfig", {"rope_parameters": LLAMA3_ROPE}),
    "llama-tied": ("LlamaConfig", {"tie_word_embeddings": True}),
    "llama-mha": ("LlamaConfig", {"num_key_value_heads": 4}),
    "llama-biases": ("LlamaConfig", {"attention_bias": True, "mlp_bias": True}),
    "mistral": ("MistralConfig", {"head_dim": 32, "sliding_window": 4096}),
    "qwen2": ("Qwen2Config", {"num_key_value_heads": 1}),
    "qwen2-yarn": ("Qwen2Config", {"rope_parameters": YARN_ROPE}),
    "qwen3": ("Qwen3Config", {"head_dim": 32}),
    "qwen3-tied": ("Qwen3Config", {"head_dim": 24, "tie_word_embeddings": True}),
}


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int) -> None:
    """Random weights for every parameter, not HF's init (which leaves norms at 1, biases 0)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if "norm" in name:
            p.copy_(1.0 + NORM_JITTER * noise)
        elif name.endswith("bias"):
            p.copy_(BIAS_STD * noise)
        else:
            p.copy_(WEIGHT_STD * noise)


@dataclass
class Checkpoint:
    """A saved tiny HF model and the transformers model it came from."""

    name: str
    path: Path
    hf_model: torch.nn.Module

    @property
    def hf_config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def tensors(self):
        return iter_safetensors(safetensors_files(self.path))

    def load(self) -> torch.nn.Module:
        return build_model(self.hf_config, self.tensors(), torch.device("cpu"), torch.float32)


def make_checkpoint(name: str, root: Path) -> Checkpoint:
    class_name, overrides = VARIANTS[name]
    config = getattr(transformers, class_name)(**{**BASE, **overrides})
    torch.manual_seed(SEED)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    randomize(model, SEED)
    model.eval()
    path = root / name
    model.save_pretrained(path)
    return Checkpoint(name, path, model)


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def checkpoint(request, tmp_path_factory) -> Checkpoint:
    return make_checkpoint(request.param, tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory) -> Checkpoint:
    return make_checkpoint("llama", tmp_path_factory.mktemp("ckpt"))


class PagedDriver:
    """What the engine's model runner does, reduced to the bone: allocate cache blocks from a
    shuffled free list (so block tables are never contiguous), build the metadata, run one
    forward over the flat batch, and split the logits back per sequence."""

    def __init__(self, model: torch.nn.Module, block_size: int = 4, num_blocks: int = 64) -> None:
        self.model, self.block_size = model, block_size
        config = model.config
        for module in model.modules():
            if isinstance(module, Attention):
                # NaN in every unwritten slot: any read outside a sequence's context shows
                shape = (2, num_blocks, block_size, config.num_kv_heads, config.head_dim)
                module.kv_cache = torch.full(shape, float("nan"))
        self.free = list(range(num_blocks))
        random.Random(3).shuffle(self.free)
        self.tables: dict[int, list[int]] = {}
        self.lengths: dict[int, int] = {}

    def step(self, work: list[tuple[int, list[int]]]) -> list[torch.Tensor]:
        """One forward: each (seq id, new tokens) pair; returns (len(new), vocab) logits each."""
        ids, positions, query_lens, context_lens, tables = [], [], [], [], []
        for seq, tokens in work:
            start = self.lengths.get(seq, 0)
            end = start + len(tokens)
            table = self.tables.setdefault(seq, [])
            while len(table) * self.block_size < end:
                table.append(self.free.pop())
            self.lengths[seq] = end
            ids += tokens
            positions += range(start, end)
            query_lens.append(len(tokens))
            context_lens.append(end)
            tables.append(list(table))
        meta = build_metadata(
            query_lens, context_lens, tables, self.block_size, torch.device("cpu")
        )
        with torch.inference_mode():
            hidden = self.model(torch.tensor(ids), torch.tensor(positions), meta)
            logits = self.model.compute_logits(hidden)
        return list(logits.split(query_lens))


@pytest.fixture
def paged_driver() -> type[PagedDriver]:
    return PagedDriver
