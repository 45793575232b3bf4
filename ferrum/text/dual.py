"""Image+text dual encoders (CLIP, SigLIP): one embedding space for both kinds of input.

Text goes through the model's tokenizer (CLIP: up to 77 tokens, padded per batch; SigLIP: always
padded to its fixed length), images through `ferrum.vision.image` with the checkpoint's
preprocessor_config.json. Each tower is a separate batcher work, so text and images batch apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.clip import ClipConfig, ClipModel, clip_map_name, clip_pool_index
from ferrum.models.siglip import SiglipConfig, SiglipModel, siglip_map_name
from ferrum.text.encoder import ItemEmbedding, Precision
from ferrum.text.resolve import ResolvedModel
from ferrum.text.tokenizer import TextTokenizer, TokenizedText, TokenizerOptions
from ferrum.vision.image import ImagePreprocess, load_image, preprocess

ImageInput = str | Path | Image.Image


class DualEncoder:
    """CLIP or SigLIP weights with their text and image works for the batcher."""

    def __init__(self, model: ResolvedModel, config: dict[str, Any], precision: Precision) -> None:
        self.name = model.name
        self.precision = precision
        self.is_siglip = config["model_type"] == "siglip"
        if self.is_siglip:
            cfg: ClipConfig | SiglipConfig = SiglipConfig.from_dict(config)
            net: torch.nn.Module = build(SiglipModel, cfg, precision)
            map_name = siglip_map_name
            self.dims = cfg.projection_size
        else:
            cfg = ClipConfig.from_dict(config)
            net = build(ClipModel, cfg, precision)
            map_name = clip_map_name
            self.dims = cfg.projection_dim
        files = safetensors_files(model.path)
        load_named_tensors(net, iter_safetensors(files), map_name, source=str(model.path))
        self.net = net.eval()
        self.config = cfg
        text = cfg.text
        self.max_seq_length = text.max_position_embeddings
        options = TokenizerOptions(
            self.max_seq_length, pad_to_max=self.is_siglip, pad_id=text.pad_token_id
        )
        self.tokenizer = TextTokenizer.from_dir(model.path, options)
        self.normalize_default = True  # CLIP/SigLIP compare unit vectors
        self.text_work = _TextWork(self)
        self.image_work = _ImageWork(self, ImagePreprocess.from_dir(model.path))


class _TextWork:
    def __init__(self, enc: DualEncoder) -> None:
        self.enc = enc

    def prepare(self, text: str) -> TokenizedText:
        return self.enc.tokenizer.encode(text)

    def cost(self, item: TokenizedText) -> int:
        return len(item.ids)

    def run(self, batch: list[TokenizedText]) -> list[ItemEmbedding]:
        enc, device = self.enc, self.enc.precision.device
        width = max(len(t.ids) for t in batch)
        pad = enc.config.text.pad_token_id
        rows = [t.ids + [pad] * (width - len(t.ids)) for t in batch]
        ids = torch.tensor(rows, dtype=torch.int64, device=device)  # (B, T)
        with enc.precision.forward():
            if enc.is_siglip:
                out = enc.net.encode_text(ids)
            else:
                eos = enc.config.text.eos_token_id
                index = [clip_pool_index(t.ids, eos) for t in batch]
                out = enc.net.encode_text(ids, torch.tensor(index, device=device))
        vectors = out.float().cpu().numpy()  # (B, P)
        return [ItemEmbedding(v, t.num_tokens, t.truncated) for v, t in zip(vectors, batch)]


class _ImageWork:
    def __init__(self, enc: DualEncoder, pre: ImagePreprocess) -> None:
        self.enc = enc
        self.pre = pre

    def prepare(self, image: ImageInput) -> np.ndarray:
        return preprocess(load_image(image), self.pre)  # (3, H, W) float32

    def cost(self, pixels: np.ndarray) -> int:
        return 1

    def run(self, batch: list[np.ndarray]) -> list[ItemEmbedding]:
        enc = self.enc
        pixels = torch.from_numpy(np.stack(batch)).to(enc.precision.device)  # (B, 3, H, W)
        with enc.precision.forward():
            out = enc.net.encode_image(pixels.to(enc.precision.weight_dtype))
        return [ItemEmbedding(v, 0, False) for v in out.float().cpu().numpy()]


def build(cls: type, cfg: Any, precision: Precision) -> torch.nn.Module:
    with torch.device("meta"):
        net = cls(cfg)
    return materialize(net, precision.device, precision.weight_dtype)
