"""Tiny random-init embedding checkpoints (BERT in sentence-transformers layout, CLIP, SigLIP),
saved by transformers itself so ferrum reads exactly what real checkpoints look like."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from .st_layout import write_modules

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A photo of a cat sitting on a red sofa.",
    "Embeddings map sentences into a vector space where similar meanings are close.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "héllo wörld naïve café",
] * 10
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights with a larger spread than transformers' init, so differences would show."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or "layernorm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
            else:
                p.normal_(0, 0.2)


def make_tiny_bert(
    path: Path, pooling: str = "mean_tokens", normalize: bool = True, max_seq_length: int = 24
) -> Path:
    """A sentence-transformers folder: BertModel + WordPiece tokenizer + Pooling (+ Normalize)."""
    import transformers
    from tokenizers import BertWordPieceTokenizer, processors

    path.mkdir(parents=True, exist_ok=True)
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(CORPUS, vocab_size=200, min_frequency=1)
    # As in real BERT tokenizer.json files: [CLS] text [SEP] (set after training fills the vocab)
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {"tokenizer_class": "BertTokenizer", "model_max_length": 64, "do_lower_case": True}
        )
    )
    config = transformers.BertConfig(
        vocab_size=tok.get_vocab_size(), max_position_embeddings=64, **TINY
    )
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    _randomize(model, seed=1)
    model.save_pretrained(path, safe_serialization=True)
    write_modules(path, normalize)
    modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "lasttoken"]
    pool_cfg = {"word_embedding_dimension": 32}
    pool_cfg.update({f"pooling_mode_{m}": m == pooling for m in modes})
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pool_cfg))
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
    )
    return path


def clip_tokenizer(path: Path):
    """transformers' CLIPTokenizer over a byte-level vocabulary (every byte, alone and
    word-final), saved as tokenizer.json: ids 0 = <|startoftext|>, 1 = <|endoftext|>."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    tok.save_pretrained(path)
    return tok


def make_tiny_clip(path: Path) -> Path:
    import transformers
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path.mkdir(parents=True, exist_ok=True)
    tok = clip_tokenizer(path)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            max_position_embeddings=77,
            eos_token_id=1,
            pad_token_id=1,
            bos_token_id=0,
            **TINY,
        ),
        vision_config=dict(image_size=32, patch_size=8, **TINY),
        projection_dim=16,
    )
    model = transformers.CLIPModel(config).eval()
    _randomize(model, seed=2)
    model.save_pretrained(path, safe_serialization=True)
    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(path)
    return path


SIGLIP_TEXT_LEN = 16  # tokens: SigLIP pads every text to this length


def make_tiny_siglip(path: Path) -> Path:
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        CORPUS, trainers.WordPieceTrainer(vocab_size=150, special_tokens=["<pad>", "</s>", "<unk>"])
    )
    # SigLIP appends </s> to every text ("sticky" EOS) and pads with id 1 as well.
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tok.save(str(path / "tokenizer.json"))
    config = transformers.SiglipConfig(
        text_config=dict(
            vocab_size=tok.get_vocab_size(),
            max_position_embeddings=SIGLIP_TEXT_LEN,
            pad_token_id=1,
            eos_token_id=1,
            **TINY,
        ),
        vision_config=dict(image_size=32, patch_size=8, **TINY),
    )
    model = transformers.SiglipModel(config).eval()
    _randomize(model, seed=3)
    model.save_pretrained(path, safe_serialization=True)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    return make_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


def sample_images(tmp_path: Path) -> list[Path]:
    """Real photos from scikit-learn when it is installed, plus Pillow-made odd cases: a tall
    grayscale image, a transparent PNG and a tiny image smaller than the crop."""
    from PIL import Image, ImageDraw

    paths: list[Path] = []
    try:
        import sklearn

        folder = Path(sklearn.__file__).parent / "datasets" / "images"
        paths += [folder / "china.jpg", folder / "flower.jpg"]
    except ImportError:
        pass
    gray = Image.linear_gradient("L").resize((40, 90))
    gray.save(tmp_path / "gray.png")
    rgba = Image.new("RGBA", (70, 50), (200, 30, 60, 128))
    ImageDraw.Draw(rgba).ellipse((10, 5, 60, 45), fill=(20, 200, 90, 255))
    rgba.save(tmp_path / "alpha.png")
    Image.new("RGB", (20, 12), (5, 100, 250)).save(tmp_path / "small.png")
    return paths + [tmp_path / "gray.png", tmp_path / "alpha.png", tmp_path / "small.png"]
