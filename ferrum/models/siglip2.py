"""SigLIP2 NaFlex: SigLIP's towers, with a vision tower that reads images at their own aspect ratio.

The text tower is SigLIP's unchanged. The vision tower takes each image as a variable number of
flattened patches (a linear patch embedding instead of a convolution) on an (h, w) patch grid;
the learned square grid of position embeddings is resized to (h, w) per image by bilinear
interpolation with antialiasing. A batch pads every image's patches to the longest and a
key mask keeps padding out of the encoder's attention and out of the pooling head, so an image's
embedding does not depend on what it was batched with.

Fixed-resolution SigLIP2 checkpoints are plain SigLIP models (`ferrum.models.siglip`).
Parameter names are transformers' `Siglip2Model` names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ferrum.models.clip import Encoder, EncoderLayer, TowerConfig
from ferrum.models.siglip import (
    SIGLIP_TEXT_DEFAULTS,
    SIGLIP_VISION_DEFAULTS,
    AttentionPoolingHead,
    SiglipTextTransformer,
    siglip_map_name,
)

DEFAULT_NUM_PATCHES = 256  # position-embedding grid size (16 × 16 patches)


@dataclass(frozen=True)
class Siglip2Config:
    text: TowerConfig
    vision: TowerConfig
    num_patches: int  # learned position embeddings: a square grid of this many patches
    projection_size: int  # text head output; equals the vision width

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Siglip2Config:
        text_d, vision_d = d.get("text_config", {}), d.get("vision_config", {})
        text = TowerConfig.from_dict(text_d, **SIGLIP_TEXT_DEFAULTS)
        vision = TowerConfig.from_dict(vision_d, **SIGLIP_VISION_DEFAULTS)
        num_patches = int(vision_d.get("num_patches") or DEFAULT_NUM_PATCHES)
        return cls(text, vision, num_patches, text_d.get("projection_size") or text.hidden_size)


class Siglip2VisionEmbeddings(nn.Module):
    def __init__(self, cfg: TowerConfig, num_patches: int) -> None:
        super().__init__()
        d, p = cfg.hidden_size, cfg.patch_size
        self.grid_size = math.isqrt(num_patches)
        self.patch_embedding = nn.Linear(cfg.num_channels * p * p, d)
        self.position_embedding = nn.Embedding(num_patches, d)

    def forward(self, patches: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """(B, N, p*p*C) flattened patches, each image's (h, w) grid → (B, N, D)."""
        x = self.patch_embedding(patches)  # (B, N, D)
        resized = {shape: self.resized_positions(*shape) for shape in set(spatial_shapes)}
        positions = torch.zeros_like(x)  # padding patches get none: they are masked out anyway
        for i, (h, w) in enumerate(spatial_shapes):
            positions[i, : h * w] = resized[h, w].to(x.dtype)
        return x + positions

    def resized_positions(self, height: int, width: int) -> torch.Tensor:
        """The (g, g) grid of position embeddings resized to (height, width) → (h*w, D)."""
        g = self.grid_size
        grid = self.position_embedding.weight.reshape(g, g, -1).permute(2, 0, 1)  # (D, g, g)
        resized = F.interpolate(
            grid[None].float(),
            size=(height, width),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )  # (1, D, h, w)
        return resized[0].flatten(1).T  # (h*w, D)


def masked_layer(layer: EncoderLayer, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A pre-LayerNorm block whose attention sees only real patches: `mask` (B, 1, 1, N), or
    None when the batch has no padding."""
    attn = layer.self_attn
    b, n, d = x.shape
    h = attn.num_heads
    y = layer.layer_norm1(x)

    def heads(z: torch.Tensor) -> torch.Tensor:
        return z.view(b, n, h, d // h).transpose(1, 2)  # (B, H, N, Dh)

    q, k, v = heads(attn.q_proj(y)), heads(attn.k_proj(y)), heads(attn.v_proj(y))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, N, Dh)
    x = x + attn.out_proj(out.transpose(1, 2).reshape(b, n, d))
    return x + layer.mlp(layer.layer_norm2(x))


def masked_pool(
    head: AttentionPoolingHead, x: torch.Tensor, valid: torch.Tensor | None
) -> torch.Tensor:
    """The probe attends over real patches only: `valid` (B, N) bool, or None → (B, D)."""
    probe = head.probe.expand(x.shape[0], -1, -1)  # (B, 1, D)
    padding = None if valid is None else ~valid
    h = head.attention(probe, x, x, key_padding_mask=padding, need_weights=False)[0]
    h = h + head.mlp(head.layernorm(h))
    return h[:, 0]


class Siglip2VisionTransformer(nn.Module):
    def __init__(self, cfg: TowerConfig, num_patches: int) -> None:
        super().__init__()
        self.embeddings = Siglip2VisionEmbeddings(cfg, num_patches)
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = AttentionPoolingHead(cfg)

    def forward(
        self, patches: torch.Tensor, valid: torch.Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """(B, N, p*p*C) patches padded per batch, (B, N) bool real-patch mask → (B, D)."""
        x = self.embeddings(patches, spatial_shapes)  # (B, N, D)
        # no mask when nothing is padded: SDPA then keeps its fastest (flash) kernels
        keep = None if bool(valid.all()) else valid
        mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, N)
        for layer in self.encoder.layers:
            x = masked_layer(cast(EncoderLayer, layer), x, mask)
        return masked_pool(self.head, self.post_layernorm(x), keep)


class Siglip2Model(nn.Module):
    """Both towers; their outputs are the (unnormalized) embeddings."""

    def __init__(self, cfg: Siglip2Config) -> None:
        super().__init__()
        self.config = cfg
        self.text_model = SiglipTextTransformer(cfg.text, cfg.projection_size)
        self.vision_model = Siglip2VisionTransformer(cfg.vision, cfg.num_patches)
        self.logit_scale = nn.Parameter(torch.empty(1))
        self.logit_bias = nn.Parameter(torch.empty(1))

    def encode_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_model(input_ids)  # (B, P)

    def encode_image(
        self, patches: torch.Tensor, valid: torch.Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        return self.vision_model(patches, valid, spatial_shapes)  # (B, D)


siglip2_map_name = siglip_map_name  # checkpoint names are ours; position_ids are skipped
