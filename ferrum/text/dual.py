"""Image+text dual encoders (CLIP, SigLIP, SigLIP2, Chinese-CLIP): one space for both inputs.

Text goes through the model's tokenizer (CLIP: up to 77 tokens, padded per batch; SigLIP: always
padded to its fixed length; Chinese-CLIP: a BERT tower run packed, without padding), images
through `ferrum.vision.image` with the checkpoint's preprocessor_config.json (SigLIP2 NaFlex:
`ferrum.vision.naflex`, patches at the image's own aspect ratio). Each tower is a separate
batcher work, so text and images batch apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from ferrum.errors import CheckpointError
from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.chinese_clip import ChineseClipConfig, ChineseClipModel, chinese_clip_map_name
from ferrum.models.clip import (
    ClipConfig,
    ClipModel,
    TowerConfig,
    clip_map_name,
    clip_pool_index,
)
from ferrum.models.siglip import SiglipConfig, SiglipModel, siglip_map_name
from ferrum.models.siglip2 import Siglip2Config, Siglip2Model, siglip2_map_name
from ferrum.text.encoder import ItemEmbedding, Precision, read_json
from ferrum.text.resolve import ResolvedModel
from ferrum.text.tokenizer import TextTokenizer, TokenizedText, TokenizerOptions
from ferrum.text.vocab_tokenizer import tokenizer_from_dir
from ferrum.vision.image import ImagePreprocess, load_image, preprocess
from ferrum.vision.naflex import NaflexPatches, NaflexPreprocess, naflex_patches

ImageInput = str | Path | Image.Image
DualModel = ClipModel | SiglipModel | Siglip2Model | ChineseClipModel
DualConfig = ClipConfig | SiglipConfig | Siglip2Config | ChineseClipConfig
ModelT = TypeVar("ModelT", bound=torch.nn.Module)


class DualEncoder:
    """CLIP, SigLIP(2) or Chinese-CLIP weights with their text and image works for the batcher."""

    def __init__(self, model: ResolvedModel, config: dict[str, Any], precision: Precision) -> None:
        self.name = model.name
        self.precision = precision
        self.model_type = config["model_type"]
        cfg: DualConfig
        net: DualModel
        if self.model_type == "siglip2":
            cfg = Siglip2Config.from_dict(config)
            net = build(Siglip2Model, cfg, precision)
            map_name: Any = siglip2_map_name
            self.dims = cfg.projection_size
        elif self.model_type == "siglip":
            cfg = SiglipConfig.from_dict(config)
            net = build(SiglipModel, cfg, precision)
            map_name = siglip_map_name
            self.dims = cfg.projection_size
        elif self.model_type == "chinese_clip":
            cfg = ChineseClipConfig.from_dict(config)
            net = build(ChineseClipModel, cfg, precision)
            map_name = chinese_clip_map_name
            self.dims = cfg.projection_dim
        else:
            cfg = ClipConfig.from_dict(config)
            net = build(ClipModel, cfg, precision)
            map_name = clip_map_name
            self.dims = cfg.projection_dim
        files = safetensors_files(model.path)
        load_named_tensors(net, iter_safetensors(files), map_name, source=str(model.path))
        self.net = net.eval()
        self.config = cfg
        self.max_seq_length, options = text_options(model.path, cfg, self.model_type)
        if is_siglip2(model.path, self.model_type):
            self.tokenizer = siglip2_tokenizer(model.path, options)
        else:
            self.tokenizer = tokenizer_from_dir(model.path, options)
        self.normalize_default = True  # CLIP-like models compare unit vectors
        self.text_work = _TextWork(self)
        self.image_work: _ImageWork | _NaflexImageWork
        if isinstance(net, Siglip2Model):
            naflex = NaflexPreprocess.from_dir(model.path, net.config.vision.patch_size)
            self.image_work = _NaflexImageWork(self, naflex)
        else:
            self.image_work = _ImageWork(self, ImagePreprocess.from_dir(model.path))


def text_options(path: Path, cfg: DualConfig, model_type: str) -> tuple[int, TokenizerOptions]:
    """(max tokens per text, how to tokenize) for the model's text tower."""
    if isinstance(cfg, ChineseClipConfig):
        # BERT positions; the tokenizer's own limit wins where it is smaller (as transformers')
        limit = cfg.text.max_position_embeddings
        tok_config = path / "tokenizer_config.json"
        if tok_config.exists():
            limit = min(limit, int(read_json(tok_config).get("model_max_length", limit)))
        return limit, TokenizerOptions(limit)
    text = cfg.text
    siglip = model_type in ("siglip", "siglip2")
    limit = text.max_position_embeddings
    return limit, TokenizerOptions(limit, pad_to_max=siglip, pad_id=text.pad_token_id)


# Tokenizer classes of SigLIP2's Gemma vocabulary; fixed-resolution SigLIP2 checkpoints say
# model_type "siglip" and are told apart from SigLIP by these.
SIGLIP2_TOKENIZER_CLASSES = {"GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer"}


def is_siglip2(path: Path, model_type: str) -> bool:
    """A SigLIP2 checkpoint: NaFlex ("siglip2"), or a fixed-resolution one with a Gemma vocab."""
    if model_type == "siglip2":
        return True
    tok_config = path / "tokenizer_config.json"
    if model_type != "siglip" or not tok_config.exists():
        return False
    return read_json(tok_config).get("tokenizer_class") in SIGLIP2_TOKENIZER_CLASSES


def siglip2_tokenizer(path: Path, options: TokenizerOptions) -> TextTokenizer:
    """SigLIP2 text as the model was trained on it: transformers' Gemma pipeline (whose EOS
    follows tokenizer_config's add_eos_token), lowercased, padded with the tokenizer's own <pad>
    (the configs' pad_token_id, 1, is <eos> in this vocabulary)."""
    from transformers import AutoTokenizer  # tokenizer classes only, no modeling code

    try:
        built = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: cannot build the SigLIP2 tokenizer ({e})") from e
    pad_id = built.pad_token_id if built.pad_token_id is not None else options.pad_id
    return TextTokenizer(built.backend_tokenizer, replace(options, lowercase=True, pad_id=pad_id))


class _TextWork:
    def __init__(self, enc: DualEncoder) -> None:
        self.enc = enc

    def prepare(self, text: str) -> TokenizedText:
        return self.enc.tokenizer.encode(text)

    def cost(self, item: TokenizedText) -> int:
        return len(item.ids)

    def run(self, batch: list[TokenizedText]) -> list[ItemEmbedding]:
        enc = self.enc
        with enc.precision.forward():
            if isinstance(enc.net, ChineseClipModel):
                out = _packed_text(enc.net, batch, enc.precision.device)
            else:
                out = _padded_text(enc, batch)
        vectors = out.float().cpu().numpy()  # (B, P)
        return [ItemEmbedding(v, t.num_tokens, t.truncated) for v, t in zip(vectors, batch)]


def _packed_text(
    net: ChineseClipModel, batch: list[TokenizedText], device: torch.device
) -> torch.Tensor:
    """Chinese-CLIP: all sequences end to end, no padding (the BERT tower's packed layout)."""
    seq_lens = [len(t.ids) for t in batch]
    flat = np.fromiter((i for t in batch for i in t.ids), dtype=np.int64, count=sum(seq_lens))
    ids = torch.from_numpy(flat).to(device)  # (N,)
    return net.encode_text(ids, seq_lens)  # (B, P)


def _padded_text(enc: DualEncoder, batch: list[TokenizedText]) -> torch.Tensor:
    """CLIP / SigLIP: right-padded (B, T) ids; causal or fixed-length, so no mask is needed."""
    device, net = enc.precision.device, enc.net
    text = enc.config.text  # a TowerConfig: CLIP or SigLIP
    width = max(len(t.ids) for t in batch)
    pad = text.pad_token_id
    rows = [t.ids + [pad] * (width - len(t.ids)) for t in batch]
    ids = torch.tensor(rows, dtype=torch.int64, device=device)  # (B, T)
    if isinstance(net, SiglipModel | Siglip2Model):
        return net.encode_text(ids)
    assert isinstance(net, ClipModel) and isinstance(text, TowerConfig)
    index = [clip_pool_index(t.ids, text.eos_token_id) for t in batch]
    return net.encode_text(ids, torch.tensor(index, device=device))


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
        net = enc.net
        assert not isinstance(net, Siglip2Model)
        with enc.precision.forward():
            out = net.encode_image(pixels.to(enc.precision.weight_dtype))
        return [ItemEmbedding(v, 0, False) for v in out.float().cpu().numpy()]


class _NaflexImageWork:
    """SigLIP2 NaFlex: images of different patch counts share a batch, padded to the longest."""

    def __init__(self, enc: DualEncoder, pre: NaflexPreprocess) -> None:
        self.enc = enc
        self.pre = pre

    def prepare(self, image: ImageInput) -> NaflexPatches:
        return naflex_patches(load_image(image), self.pre)

    def cost(self, item: NaflexPatches) -> int:
        return 1

    def run(self, batch: list[NaflexPatches]) -> list[ItemEmbedding]:
        enc, net = self.enc, self.enc.net
        assert isinstance(net, Siglip2Model)
        longest = max(item.num_patches for item in batch)
        patches = np.zeros((len(batch), longest, batch[0].patches.shape[1]), dtype=np.float32)
        valid = np.zeros((len(batch), longest), dtype=bool)
        for i, item in enumerate(batch):
            patches[i, : item.num_patches] = item.patches
            valid[i, : item.num_patches] = True
        device = enc.precision.device
        x = torch.from_numpy(patches).to(device, enc.precision.weight_dtype)  # (B, N, p*p*C)
        mask = torch.from_numpy(valid).to(device)  # (B, N)
        with enc.precision.forward():
            out = net.encode_image(x, mask, [item.grid for item in batch])
        return [ItemEmbedding(v, 0, False) for v in out.float().cpu().numpy()]


def build(cls: Callable[[Any], ModelT], cfg: Any, precision: Precision) -> ModelT:
    with torch.device("meta"):
        net = cls(cfg)
    materialize(net, precision.device, precision.weight_dtype)
    return net
