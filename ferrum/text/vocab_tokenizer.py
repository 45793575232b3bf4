"""A text tokenizer for checkpoints that ship a WordPiece vocab.txt but no tokenizer.json.

Chinese-CLIP (like older BERT checkpoints) has only vocab.txt and tokenizer_config.json.
transformers' tokenizer classes turn those into a `tokenizers` pipeline (lower-casing, Chinese
characters split apart, [CLS] … [SEP]) as its processor would; ferrum then runs that pipeline
itself through `TextTokenizer`, exactly as it runs a tokenizer.json.
"""

from __future__ import annotations

from pathlib import Path

from ferrum.errors import CheckpointError
from ferrum.text.tokenizer import TextTokenizer, TokenizerOptions

TOKENIZER_JSON = "tokenizer.json"
WORDPIECE_VOCAB = "vocab.txt"


def tokenizer_from_dir(directory: Path, options: TokenizerOptions) -> TextTokenizer:
    """tokenizer.json when there is one, else the pipeline transformers builds from vocab.txt."""
    if (directory / TOKENIZER_JSON).exists() or not (directory / WORDPIECE_VOCAB).exists():
        return TextTokenizer.from_dir(directory, options)
    from transformers import AutoTokenizer  # tokenizer classes only, no modeling code

    try:
        built = AutoTokenizer.from_pretrained(str(directory))
    except Exception as e:
        raise CheckpointError(
            f"{directory}: cannot build the tokenizer from vocab.txt ({e})"
        ) from e
    return TextTokenizer(getattr(built, "backend_tokenizer", built), options)
