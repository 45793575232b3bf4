"""Chinese-CLIP: a BERT text tower and a CLIP vision tower projected into one space.

The text tower is `ferrum.models.bert.BertModel` (packed sequences, no padding) and its embedding
is the [CLS] state — the first token of each sequence — through `text_projection`; the vision
tower is CLIP's `ClipVisionTransformer` unchanged. Checkpoint names are transformers'
`ChineseCLIPModel` names: `text_model.*` are BERT names, `vision_model.*` are CLIP's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ferrum.models.bert import BertConfig, BertModel, bert_map_name
from ferrum.models.clip import ClipVisionTransformer, TowerConfig, clip_map_name

TEXT_PREFIX = "text_model."
DEFAULT_PROJECTION_DIM = 512  # transformers' ChineseCLIPConfig default
# transformers' ChineseCLIP{Text,Vision}Config defaults, for keys a saved config leaves out
TEXT_DEFAULTS = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
)
VISION_DEFAULTS = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    patch_size=32,
)


@dataclass(frozen=True)
class ChineseClipConfig:
    text: BertConfig
    vision: TowerConfig
    projection_dim: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChineseClipConfig:
        return cls(
            text=BertConfig.from_dict({**TEXT_DEFAULTS, **d.get("text_config", {})}),
            vision=TowerConfig.from_dict(d.get("vision_config", {}), **VISION_DEFAULTS),
            projection_dim=d.get("projection_dim", DEFAULT_PROJECTION_DIM),
        )


class ChineseClipModel(nn.Module):
    """Both towers with their projections (embeddings are unnormalized)."""

    def __init__(self, cfg: ChineseClipConfig) -> None:
        super().__init__()
        self.config = cfg
        self.text_model = BertModel(cfg.text)
        self.vision_model = ClipVisionTransformer(cfg.vision)
        self.text_projection = nn.Linear(cfg.text.hidden_size, cfg.projection_dim, bias=False)
        self.visual_projection = nn.Linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.empty(()))

    def encode_text(self, input_ids: torch.Tensor, seq_lens: list[int]) -> torch.Tensor:
        """(N,) packed ids of sequences with `seq_lens` tokens → (B, P) from each [CLS] state."""
        hidden = self.text_model(input_ids, seq_lens)  # (N, D)
        lens = torch.tensor(seq_lens, dtype=torch.int64, device=hidden.device)
        starts = torch.cumsum(lens, 0) - lens  # (B,) index of each sequence's first token
        return self.text_projection(hidden.index_select(0, starts))  # (B, P)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values))  # (B, P)


def chinese_clip_map_name(name: str) -> str | tuple[str, Any] | None:
    """transformers ChineseCLIPModel checkpoint name → our parameter name (None: not used)."""
    if name.startswith(TEXT_PREFIX):
        mapped = bert_map_name(name[len(TEXT_PREFIX) :])
        if mapped is None:
            return None
        if isinstance(mapped, tuple):
            return (TEXT_PREFIX + mapped[0], mapped[1])
        return TEXT_PREFIX + mapped
    return clip_map_name(name)
