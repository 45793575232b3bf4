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

import numpy as np
import torch

from ferrum.errors import UnsupportedModelError
from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.config import TransformerConfig
from ferrum.text.decoder import CausalDecoder, decoder_config, decoder_map_name
from ferrum.text.encoder import ItemEmbedding, Precision, read_json
from ferrum.text.pooling import pool
from ferrum.text.resolve import ResolvedModel
from ferrum.text.sentence import read_modules
from ferrum.text.tokenizer import TextTokenizer, TokenizedText, TokenizerOptions

MODULES_FILE = "modules.json"
ST_CONFIG = "sentence_bert_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"


class DecoderSentenceEncoder:
    """A decoder-only sentence embedding model; also the batcher's text work."""

    def __init__(self, model: ResolvedModel, config: dict[str, Any], precision: Precision) -> None:
        path = model.path
        if not (path / MODULES_FILE).exists():
            raise UnsupportedModelError(
                f"{model.name}: a {config.get('model_type')} decoder without a "
                f"sentence-transformers {MODULES_FILE} is a language model, not an embedding "
                "model; use one packaged for embeddings, e.g. -m qwen3-embedding"
            )
        self.name = model.name
        self.precision = precision
        self.pooling, self.normalize_default = read_modules(path)
        cfg = decoder_config(config)
        self.net = load_decoder(path, cfg, precision)
        self.max_seq_length = max_seq_length(path, cfg)
        st_config = path / ST_CONFIG
        lowercase = bool(read_json(st_config).get("do_lower_case")) if st_config.exists() else False
        self.tokenizer = TextTokenizer.from_dir(
            path, TokenizerOptions(self.max_seq_length, lowercase=lowercase)
        )
        self.dims = cfg.hidden_size * len(self.pooling.modes())
        self.text_work = self
        self.image_work = None

    # ----- OneShotWork ------------------------------------------------------------------------
    def prepare(self, text: str) -> TokenizedText:
        return self.tokenizer.encode(text)

    def cost(self, item: TokenizedText) -> int:
        return len(item.ids)

    def run(self, batch: list[TokenizedText]) -> list[ItemEmbedding]:
        """One packed forward: all sequences end to end, no padding."""
        seq_lens = [len(t.ids) for t in batch]
        flat = np.fromiter((i for t in batch for i in t.ids), dtype=np.int64, count=sum(seq_lens))
        ids = torch.from_numpy(flat).to(self.precision.device)  # (N,)
        with self.precision.forward():
            hidden = self.net(ids, seq_lens)  # (N, D)
            pooled = pool(hidden, seq_lens, self.pooling)  # (B, D') float32
        vectors = pooled.cpu().numpy()
        return [ItemEmbedding(v, t.num_tokens, t.truncated) for v, t in zip(vectors, batch)]


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
