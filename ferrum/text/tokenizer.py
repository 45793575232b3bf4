"""Text → token ids for embedding models, through the `tokenizers` library and tokenizer.json.

Truncation follows sentence-transformers: the ids (special tokens included) are cut at the model's
max_seq_length, and whether that happened is reported so the result can count truncated inputs.
A checkpoint that ships only a SentencePiece model (SigLIP's spiece.model) is read through
transformers' tokenizer classes instead; no modeling code is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from ferrum.errors import CheckpointError, InvalidInputError


@dataclass(frozen=True)
class TokenizedText:
    """One input text as the model will see it."""

    ids: list[int]  # token ids, special tokens included, after truncation (and padding, if fixed)
    num_tokens: int  # real tokens (ids before any fixed-length padding)
    truncated: bool  # True when the text was longer than max_length and was cut


@dataclass(frozen=True)
class TokenizerOptions:
    """How a model wants its text tokenized."""

    max_length: int  # tokens, special tokens included
    lowercase: bool = False  # sentence-transformers' do_lower_case
    pad_to_max: bool = False  # SigLIP: always max_length ids, padded with pad_id
    pad_id: int = 0


class TextTokenizer:
    """Thread-compatible wrapper: one instance is used by the batcher's prepare thread."""

    def __init__(self, backend: Tokenizer | Any, options: TokenizerOptions) -> None:
        self.backend = backend
        self.options = options
        self._fast = isinstance(backend, Tokenizer)
        if self._fast:
            backend.no_padding()  # packaged tokenizer.json files often pin a fixed padding
            backend.enable_truncation(options.max_length)

    @classmethod
    def from_dir(cls, directory: Path, options: TokenizerOptions) -> TextTokenizer:
        path = directory / "tokenizer.json"
        if path.exists():
            try:
                return cls(Tokenizer.from_file(str(path)), options)
            except Exception as e:
                raise CheckpointError(f"{path}: unreadable tokenizer ({e})") from e
        if (directory / "spiece.model").exists() or (directory / "vocab.json").exists():
            from transformers import AutoTokenizer  # tokenizer classes only, for old checkpoints

            try:
                return cls(AutoTokenizer.from_pretrained(str(directory)), options)
            except Exception as e:
                raise CheckpointError(f"{directory}: cannot build the tokenizer ({e})") from e
        raise CheckpointError(f"{directory}: no tokenizer.json (nor spiece.model/vocab.json)")

    def encode(self, text: str) -> TokenizedText:
        if not isinstance(text, str):
            raise InvalidInputError(f"text inputs must be strings, got {type(text).__name__}")
        opts = self.options
        if opts.lowercase:
            text = text.lower()
        if self._fast:
            enc = self.backend.encode(text)
            ids, truncated = list(enc.ids), bool(enc.overflowing)
        else:
            full = self.backend(text, truncation=False)["input_ids"]
            ids = self.backend(text, truncation=True, max_length=opts.max_length)["input_ids"]
            truncated = len(full) > len(ids)
        num_tokens = len(ids)
        if opts.pad_to_max and len(ids) < opts.max_length:
            ids = ids + [opts.pad_id] * (opts.max_length - len(ids))
        return TokenizedText(ids, num_tokens, truncated)
