"""The text tokenizer of a Qwen3-TTS checkpoint (Qwen2's byte-level BPE).

The checkpoints ship it either as `tokenizer.json` or in the older layout (`vocab.json`,
`merges.txt`, and the special tokens in `tokenizer_config.json`'s `added_tokens_decoder`); the
second is rebuilt here the way transformers' Qwen2 converter builds it: NFC normalisation, Qwen2's
split pattern, byte-level alphabet.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from ferrum.errors import CheckpointError
from ferrum.loader.tokenizer import PRE_TOKENIZER_SPLITS


def load_text_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer of the checkpoint folder `path`."""
    file = path / "tokenizer.json"
    try:
        if file.exists():
            return Tokenizer.from_file(str(file))
        return _from_vocab_and_merges(path)
    except CheckpointError:
        raise
    except Exception as e:  # tokenizers raises plain Exceptions for malformed files
        raise CheckpointError(f"{path}: the text tokenizer cannot be read ({e})") from e


def _from_vocab_and_merges(path: Path) -> Tokenizer:
    vocab, merges = path / "vocab.json", path / "merges.txt"
    if not (vocab.exists() and merges.exists()):
        raise CheckpointError(
            f"{path}: no text tokenizer (expected tokenizer.json, or vocab.json and merges.txt)"
        )
    model = models.BPE.from_file(str(vocab), str(merges))
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_SPLITS["qwen2"]), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    added = sorted((int(i), spec) for i, spec in (config.get("added_tokens_decoder") or {}).items())
    for index, spec in added:
        token = AddedToken(
            spec["content"],
            single_word=spec.get("single_word", False),
            lstrip=spec.get("lstrip", False),
            rstrip=spec.get("rstrip", False),
            normalized=spec.get("normalized", False),
            special=spec.get("special", True),
        )
        tokenizer.add_special_tokens([token]) if token.special else tokenizer.add_tokens([token])
        if tokenizer.token_to_id(spec["content"]) != index:
            raise CheckpointError(
                f"{config_file}: added token {spec['content']!r} should have id {index}"
            )
    return tokenizer
