"""CLIP: a causal text transformer and a ViT image transformer projected into one space.

Parameter names are transformers' `CLIPModel` names, so the checkpoint maps onto the model as is
(only the computed `position_ids` buffers are skipped). The pre-LayerNorm block here is shared
with SigLIP, whose towers differ only in pooling and heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


@dataclass(frozen=True)
class TowerConfig:
    """One tower (text or vision) of a CLIP-like model."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"
    vocab_size: int = 0  # text only
    max_position_embeddings: int = 77  # text only: tokens
    eos_token_id: int = 2  # text only; 2 marks old CLIP configs (pool at argmax of the ids)
    pad_token_id: int = 1  # text only
    image_size: int = 224  # vision only: pixels
    patch_size: int = 32  # vision only: pixels
    num_channels: int = 3  # vision only

    @classmethod
    def from_dict(cls, d: dict[str, Any], **defaults: Any) -> TowerConfig:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if d.get(k) is not None}
        return cls(**{**defaults, **fields})


@dataclass(frozen=True)
class ClipConfig:
    text: TowerConfig
    vision: TowerConfig
    projection_dim: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipConfig:
        return cls(
            text=TowerConfig.from_dict(d.get("text_config", {})),
            vision=TowerConfig.from_dict(d.get("vision_config", {})),
            projection_dim=d.get("projection_dim", 512),
        )


class Attention(nn.Module):
    def __init__(self, d: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        b, t, d = x.shape
        h = self.num_heads

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)  # (B, H, T, Dh)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, H, T, Dh)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderLayer(nn.Module):
    """Pre-LayerNorm transformer block (CLIP and SigLIP)."""

    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = Attention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, causal=causal)
        return x


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        return self.token_embedding(input_ids) + self.position_embedding.weight[:t]  # (B, T, D)


class ClipTextTransformer(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
        """(B, T) ids right-padded with anything → (B, D) state at each row's `pool_index`.
        Attention is causal, so pad tokens after a sequence never reach its real tokens."""
        x = self.encoder(self.embeddings(input_ids), causal=True)
        x = self.final_layer_norm(x)  # (B, T, D)
        return x[torch.arange(x.shape[0], device=x.device), pool_index]


class ClipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.class_embedding = nn.Parameter(torch.empty(d))
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, d, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        num_patches = (cfg.image_size // cfg.patch_size) ** 2
        self.position_embedding = nn.Embedding(num_patches + 1, d)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, P, D)
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)  # (B, 1, D)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight  # (B, 1+P, D)


class ClipVisionTransformer(nn.Module):
    def __init__(self, cfg: TowerConfig) -> None:
        super().__init__()
        self.embeddings = ClipVisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)  # sic
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalized pixels → (B, D) pooled class-token state."""
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return self.post_layernorm(x[:, 0])


class ClipModel(nn.Module):
    """Text and image towers with their projections (embeddings are unnormalized)."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.config = cfg
        self.text_model = ClipTextTransformer(cfg.text)
        self.vision_model = ClipVisionTransformer(cfg.vision)
        self.text_projection = nn.Linear(cfg.text.hidden_size, cfg.projection_dim, bias=False)
        self.visual_projection = nn.Linear(cfg.vision.hidden_size, cfg.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.empty(()))

    def encode_text(self, input_ids: torch.Tensor, pool_index: torch.Tensor) -> torch.Tensor:
        return self.text_projection(self.text_model(input_ids, pool_index))  # (B, P)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual_projection(self.vision_model(pixel_values))  # (B, P)


def clip_map_name(name: str) -> str | None:
    """Checkpoint names are ours already; computed position ids are not loaded."""
    return None if name.endswith("position_ids") else name


def clip_pool_index(ids: list[int], eos_token_id: int) -> int:
    """Where CLIP reads a sequence's embedding: the first EOS token, or (configs from before
    transformers fixed eos_token_id, which say 2) the highest id, which is EOS in CLIP's vocab."""
    if eos_token_id == 2:
        return max(range(len(ids)), key=lambda i: (ids[i], -i))
    return ids.index(eos_token_id) if eos_token_id in ids else len(ids) - 1
