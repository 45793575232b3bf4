"""A tiny random-init Chinese-CLIP checkpoint laid out as OFA-Sys/chinese-clip-vit-base-patch16
is: ChineseCLIPModel weights, a WordPiece vocab.txt with tokenizer_config.json (no
tokenizer.json) and the legacy preprocessor_config.json (fixed-size resize, no center crop)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.text.conftest import CORPUS, TINY

CHINESE_CORPUS = [
    "一只猫的照片",
    "杰尼龟，妙蛙种子，小火龙，皮卡丘",
    "北京是中国的首都，上海是最大的城市。",
    "今天天气很好，我们去公园散步吧！",
] * 5
IMAGE_SIZE = 32  # pixels
PROJECTION_DIM = 16
# as the real checkpoint's file (scaled down): a fixed-size resize, an int crop_size, no crop
PREPROCESSOR = {
    "crop_size": IMAGE_SIZE,
    "do_center_crop": False,
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ChineseCLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
}


def wordpiece_vocab(path: Path) -> int:
    """vocab.txt (Chinese characters and English word pieces) + tokenizer_config.json."""
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(lowercase=True, handle_chinese_chars=True)
    tok.train_from_iterator(CORPUS + CHINESE_CORPUS, vocab_size=300, min_frequency=1)
    tok.save_model(str(path))  # writes vocab.txt
    (path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )
    return tok.get_vocab_size()


def make_tiny_chinese_clip(path: Path) -> Path:
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_vocab(path)
    config = transformers.ChineseCLIPConfig(
        text_config=dict(vocab_size=vocab, max_position_embeddings=64, **TINY),
        vision_config=dict(image_size=IMAGE_SIZE, patch_size=8, **TINY),
        projection_dim=PROJECTION_DIM,
    )
    model = transformers.ChineseCLIPModel(config).eval()
    torch.manual_seed(5)
    with torch.no_grad():  # a larger spread than transformers' init, so differences would show
        for name, p in model.named_parameters():
            norm = "LayerNorm" in name or "layer_norm" in name or "layrnorm" in name
            p.normal_(1.0 if norm and name.endswith("weight") else 0.0, 0.1 if norm else 0.2)
    model.save_pretrained(path, safe_serialization=True)
    (path / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return path
