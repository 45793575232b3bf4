"""BERT encoder (BERT, MiniLM, BGE, E5, GTE, …) over packed variable-length sequences.

Design note: a batch is *packed*, not padded. The tokens of all sequences are laid end to end as
one (N, D) matrix, so every linear layer (≈95% of the FLOPs at typical sentence lengths) computes
no pad token at all. Only attention needs the sequences apart: q/k/v are scattered into a
(B, H, T_max, Dh) layout, SDPA runs with a key-padding mask, and the result is gathered back to
(N, D). Batches come sorted by length, so the padding that attention sees is small.

The checkpoint names are transformers' `BertModel` names (optionally prefixed `bert.`); q, k and v
are fused into one (3D, D) matrix when loading so each layer runs one projection matmul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# transformers' activation names → the function that BERT-family checkpoints were trained with.
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


ROBERTA = ("roberta", "xlm-roberta")


@dataclass(frozen=True)
class BertConfig:
    """The fields of a transformers `BertConfig` that the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    position_offset: int = 0  # RoBERTa numbers positions from pad_token_id + 1

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            intermediate_size=d["intermediate_size"],
            max_position_embeddings=d.get("max_position_embeddings", 512),
            type_vocab_size=d.get("type_vocab_size", 2),
            layer_norm_eps=d.get("layer_norm_eps", 1e-12),
            hidden_act=d.get("hidden_act", "gelu"),
            pad_token_id=d.get("pad_token_id", 0) or 0,
            position_offset=(d.get("pad_token_id", 1) + 1) if d.get("model_type") in ROBERTA else 0,
        )


@dataclass(frozen=True)
class PackedLayout:
    """Where each packed token sits in a padded (B, T_max) grid, for attention."""

    seq_lens: list[int]  # tokens of each sequence, in packing order
    max_len: int  # T_max
    grid_index: torch.Tensor  # (N,) int64: b * T_max + t for each packed token
    key_mask: torch.Tensor | None  # (B, 1, 1, T_max) bool, True = real token; None if no padding

    @classmethod
    def build(cls, seq_lens: list[int], device: torch.device) -> PackedLayout:
        max_len = max(seq_lens)
        lens = torch.tensor(seq_lens, dtype=torch.int64)
        starts = torch.arange(len(seq_lens), dtype=torch.int64) * max_len
        # (N,) position of every packed token in the flattened padded grid
        grid_index = torch.repeat_interleave(starts, lens) + positions_of(seq_lens)
        key_mask = None
        if min(seq_lens) != max_len:
            key_mask = torch.arange(max_len)[None, :] < lens[:, None]  # (B, T_max)
            key_mask = key_mask[:, None, None, :].to(device)
        return cls(seq_lens, max_len, grid_index.to(device), key_mask)


def positions_of(seq_lens: list[int]) -> torch.Tensor:
    """(N,) position of each packed token inside its own sequence: 0..len-1 for each sequence."""
    lens = torch.tensor(seq_lens, dtype=torch.int64)
    total = int(lens.sum())
    seq_starts = torch.cumsum(lens, 0) - lens  # (B,)
    return torch.arange(total, dtype=torch.int64) - torch.repeat_interleave(seq_starts, lens)


def varlen_attention(qkv: torch.Tensor, layout: PackedLayout, num_heads: int) -> torch.Tensor:
    """Bidirectional attention of packed sequences: (N, 3D) fused q|k|v → (N, D)."""
    n, three_d = qkv.shape
    d = three_d // 3
    batch, t_max = len(layout.seq_lens), layout.max_len
    grid = qkv.new_zeros(batch * t_max, three_d)
    grid.index_copy_(0, layout.grid_index, qkv)
    # (B, T, 3, H, Dh) → three (B, H, T, Dh) views
    q, k, v = grid.view(batch, t_max, 3, num_heads, d // num_heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.key_mask)  # (B, H, T, Dh)
    out = out.transpose(1, 2).reshape(batch * t_max, d)
    return out.index_select(0, layout.grid_index)  # (N, D)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.position_offset = cfg.position_offset
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # Single-segment input: every token has type 0, so add that one row.
        x = self.word_embeddings(input_ids) + self.position_embeddings(
            positions + self.position_offset
        )  # (N, D)
        x = x + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class BertLayer(nn.Module):
    """One post-LayerNorm transformer block with a fused qkv projection."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.init_buffers()
        self.attn_out = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.intermediate = nn.Linear(d, cfg.intermediate_size)
        self.output = nn.Linear(cfg.intermediate_size, d)
        self.out_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def init_buffers(self) -> None:
        # Materializing a meta model makes new Parameter objects, so the loader hook that fuses
        # q/k/v is attached again here (the loader calls init_buffers after materializing).
        self.qkv.weight.weight_loader = _fused_qkv_loader  # type: ignore[attr-defined]
        self.qkv.bias.weight_loader = _fused_qkv_loader  # type: ignore[attr-defined]

    def forward(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        attn = varlen_attention(self.qkv(x), layout, self.num_heads)  # (N, D)
        x = self.attn_norm(x + self.attn_out(attn))
        return self.out_norm(x + self.output(self.act(self.intermediate(x))))


def _fused_qkv_loader(param: torch.Tensor, tensor: torch.Tensor, shard: str) -> None:
    """Copy the query/key/value checkpoint tensor into its third of the fused qkv parameter."""
    rows = param.shape[0] // 3
    offset = {"q": 0, "k": rows, "v": 2 * rows}[shard]
    with torch.no_grad():
        param[offset : offset + rows].copy_(tensor.to(param.dtype))


class BertModel(nn.Module):
    """Token ids of packed sequences → last hidden states (N, D); no pooler (pooling is the
    embedding pipeline's job)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, input_ids: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        device = input_ids.device
        layout = PackedLayout.build(seq_lens, device)
        x = self.embeddings(input_ids, positions_of(seq_lens).to(device))  # (N, D)
        for layer in self.layers:
            x = layer(x, layout)
        return x


_LAYER_NAMES = {
    "attention.self.query": ("qkv", "q"),
    "attention.self.key": ("qkv", "k"),
    "attention.self.value": ("qkv", "v"),
    "attention.output.dense": ("attn_out", None),
    "attention.output.LayerNorm": ("attn_norm", None),
    "intermediate.dense": ("intermediate", None),
    "output.dense": ("output", None),
    "output.LayerNorm": ("out_norm", None),
}


def bert_map_name(name: str) -> str | tuple[str, Any] | None:
    """transformers BertModel checkpoint name → our parameter name (None: not used here)."""
    for prefix in ("bert.", "roberta.", "model.", "0.auto_model."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
    if name.startswith("embeddings."):
        return None if name.endswith("position_ids") else name
    if not name.startswith("encoder.layer."):
        return None  # pooler, MLM/NSP heads
    rest = name[len("encoder.layer.") :]
    index, _, sub = rest.partition(".")
    module, _, kind = sub.rpartition(".")
    if module not in _LAYER_NAMES:
        return None
    ours, shard = _LAYER_NAMES[module]
    target = f"layers.{index}.{ours}.{kind}"
    return (target, shard) if shard else target
