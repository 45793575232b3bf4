"""Tiny random-init decoder embedding checkpoints (Qwen3 / Qwen2) packaged as
sentence-transformers folders the way Qwen3-Embedding is: the bare `*Model` weights, a byte-level
BPE tokenizer.json that appends <|endoftext|>, modules.json with last-token pooling (+ Normalize).
Saved by transformers itself, so ferrum reads what real checkpoints look like."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.text.conftest import CORPUS

from .st_layout import write_modules

EOS = "<|endoftext|>"
HIDDEN = 32
MAX_POSITIONS = 64  # tokens: the tiny model's rope table
DECODER_TINY = dict(
    hidden_size=HIDDEN,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, as Qwen3-Embedding has
    max_position_embeddings=MAX_POSITIONS,
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights with a larger spread than transformers' init, so differences would show."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0, 0.2)


def bpe_tokenizer(path: Path, padding_side: str) -> int:
    """A byte-level BPE tokenizer.json whose post-processor appends EOS (Qwen3-Embedding's);
    returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A {EOS}", special_tokens=[(EOS, eos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=EOS,
        padding_side=padding_side,
        model_max_length=MAX_POSITIONS,
    )
    fast.save_pretrained(path)
    return tok.get_vocab_size()


def write_sentence_transformers_files(
    path: Path, normalize: bool, max_seq_length: int | None
) -> None:
    write_modules(path, normalize)
    pooling = {"word_embedding_dimension": HIDDEN, "pooling_mode_lasttoken": True}
    pooling.update({f"pooling_mode_{m}": False for m in ("cls_token", "mean_tokens", "max_tokens")})
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    if max_seq_length is not None:
        (path / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False})
        )


def make_tiny_decoder_embedder(
    path: Path,
    family: str = "qwen3",
    padding_side: str = "left",
    normalize: bool = True,
    max_seq_length: int | None = 24,
    sentence_transformers: bool = True,
) -> Path:
    """A Qwen3 (or Qwen2) embedding folder: `family` picks the transformers model class."""
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    vocab = bpe_tokenizer(path, padding_side)
    if family == "qwen3":
        config = transformers.Qwen3Config(vocab_size=vocab, head_dim=16, **DECODER_TINY)
        model = transformers.Qwen3Model(config)
    else:  # Qwen2: q/k/v biases, no q/k norm; saved with its causal-LM head, `model.` names
        config = transformers.Qwen2Config(vocab_size=vocab, **DECODER_TINY)
        model = transformers.Qwen2ForCausalLM(config)
    _randomize(model.eval(), seed=7)
    model.save_pretrained(path, safe_serialization=True)
    if sentence_transformers:
        write_sentence_transformers_files(path, normalize, max_seq_length)
    return path
