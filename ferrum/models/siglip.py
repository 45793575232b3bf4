"""SigLIP: CLIP's pre-LayerNorm towers with different pooling.

Text: fixed-length ids (padded to max_position_embeddings, no attention mask, as the model was
trained), the last position's state through a linear head. Vision: patch embeddings without a
class token, then a multi-head attention pooling head (a learned probe attends over the patches).
Parameter names are transformers' `SiglipModel` names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ferrum.models.clip import MLP, Encoder, TextEmbeddings, TowerConfig

SIGLIP_TEXT_DEFAULTS = {"hidden_act": "gelu_pytorch_tanh", "max_position_embeddings": 64}
SIGLIP_VISION_DEFAULTS = {"hidden_act": "gelu_pytorch_tanh", "patch_size": 16}


@dataclass(frozen=True)
class SiglipConfig:
    text: TowerConfig
    vision: TowerConfig
    projection_size: int  # text head output; equals the vision width

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SiglipConfig:
        text_d = d.get("text_config", {})
        text = TowerConfig.from_dict(text_d, **SIGLIP_TEXT_DEFAULTS)
        vision = TowerConfig.from_dict(d.get("vision_config", {}), **SIGLIP_VISION_DEFAULTS)
        return cls(text, vision, text_d.get("projection_size") or text.hidden_size)


class SiglipTextTransformer(nn.Module):
    def __init__(self, cfg: TowerConfig, projection_size: int) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = nn.Linear(cfg.hidden_size, projection_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) fixed-length ids → (B, P) from the last position ("sticky" EOS)."""
        x = self.final_layer_norm(self.encoder(self.embeddings(input_ids)))  # (B, T, D)
        return self.head(x[:, -1])


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.position_embedding = nn.Embedding((cfg.image_size // cfg.patch_size) ** 2, d)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, P, D)
        return patches + self.position_embedding.weight


class AttentionPoolingHead(nn.Module):
    """A learned probe attends over all patch states; its output is the image embedding."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.probe = nn.Parameter(torch.empty(1, 1, d))
        self.attention = nn.MultiheadAttention(d, cfg.num_attention_heads, batch_first=True)
        self.layernorm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
        h = self.attention(probe, x, x, need_weights=False)[0]
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]  # (B, D)


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = AttentionPoolingHead(cfg)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.post_layernorm(self.encoder(self.embeddings(pixel_values)))  # (B, P, D)
        return self.head(x)


class SiglipModel(nn.Module):
    """Both towers; their outputs are the (unnormalized) embeddings."""

    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.config = cfg
        self.text_model = SiglipTextTransformer(cfg.text, cfg.projection_size)
        self.vision_model = SiglipVisionTransformer(cfg.vision)
        self.logit_scale = nn.Parameter(torch.empty(1))
        self.logit_bias = nn.Parameter(torch.empty(1))

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_model(input_ids)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values)


def siglip_map_name(name: str) -> str | None:
    return None if name.endswith("position_ids") else name
