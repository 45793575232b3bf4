"""Decoder embedding models (Qwen3-Embedding and kin): a causal LM's last hidden state as the
sentence vector, packaged by sentence-transformers (modules.json, `1_Pooling` with
`pooling_mode_lasttoken`, Normalize).

The text is tokenized as the checkpoint's tokenizer.json says (Qwen3-Embedding's appends
<|endoftext|>, the token whose state is read); any instruction prefix is the caller's to add.
Over-long texts are cut at the model's max sequence length and counted, as the BERT path does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ferrum.errors import UnsupportedModelError
from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.config import TransformerConfig
from ferrum.text.decoder import CausalDecoder, decoder_config, decoder_map_name
from ferrum.text.encoder import Precision, read_json
from ferrum.text.resolve import ResolvedModel
from ferrum.text.sentence import ST_CONFIG, SentenceEncoder

MODULES_FILE = "modules.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


class DecoderSentenceEncoder(SentenceEncoder):
    """A decoder-only sentence embedding model: the packed pipeline of SentenceEncoder over a
    causal decoder."""

    def __init__(self, model: ResolvedModel, config: dict[str, Any], precision: Precision) -> None:
        path = model.path
        if not (path / MODULES_FILE).exists():
            raise UnsupportedModelError(
                f"{model.name}: a {config.get('model_type')} decoder without a "
                f"sentence-transformers {MODULES_FILE} is a language model, not an embedding "
                "model; use one packaged for embeddings, e.g. -m qwen3-embedding"
            )
        cfg = decoder_config(config)
        net = load_decoder(path, cfg, precision)
        self._setup(model, precision, net, cfg.hidden_size, max_seq_length(path, cfg))


def max_seq_length(path: Path, cfg: TransformerConfig) -> int:
    """Tokens kept per text, special tokens included: sentence-transformers' setting, else the
    tokenizer's limit; never past the positions the model was built for."""
    limit = cfg.max_position_embeddings
    if (path / ST_CONFIG).exists():
        value = read_json(path / ST_CONFIG).get("max_seq_length")
        if value:
            return min(int(value), limit)
    if (path / TOKENIZER_CONFIG).exists():
        limit = min(limit, int(read_json(path / TOKENIZER_CONFIG).get("model_max_length", limit)))
    return limit


def load_decoder(path: Path, cfg: TransformerConfig, precision: Precision) -> CausalDecoder:
    with torch.device("meta"):
        net = CausalDecoder(cfg)
    materialize(net, precision.device, precision.weight_dtype)
    files = safetensors_files(path)
    load_named_tensors(net, iter_safetensors(files), decoder_map_name, source=str(path))
    return net.eval()
