"""Sentence-transformers text models (BERT, RoBERTa/XLM-R families): tokenize, encode, pool.

The package layout is sentence-transformers': modules.json lists Transformer → Pooling →
(Normalize); `1_Pooling/config.json` names the pooling; sentence_bert_config.json the max
sequence length. A plain transformers checkpoint without those files gets mean pooling, as
sentence-transformers gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferrum.errors import CheckpointError, UnsupportedModelError
from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.bert import BertConfig, BertModel, bert_map_name
from ferrum.text.encoder import ItemEmbedding, Precision, read_json
from ferrum.text.pooling import PoolingConfig, pool
from ferrum.text.resolve import ResolvedModel
from ferrum.text.tokenizer import TextTokenizer, TokenizedText, TokenizerOptions

ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
ST_CONFIG = "sentence_bert_config.json"


class SentenceEncoder:
    """A sentence-transformers text model over a packed encoder (`net(ids, seq_lens)`): BERT
    family here, decoders in decoder_sentence.py; also the batcher's text work."""

    def __init__(self, model: ResolvedModel, config: dict[str, Any], precision: Precision) -> None:
        cfg = BertConfig.from_dict(config)
        net = load_bert(model.path, cfg, precision)
        self._setup(model, precision, net, net.config.hidden_size, max_seq_length(model.path, cfg))

    def _setup(
        self,
        model: ResolvedModel,
        precision: Precision,
        net: torch.nn.Module,
        hidden_size: int,
        max_seq_length: int,
    ) -> None:
        """What every packed sentence encoder holds: the network, its pooling and tokenizer."""
        path = model.path
        self.name = model.name
        self.precision = precision
        self.pooling, self.normalize_default = read_modules(path)
        self.net = net
        self.max_seq_length = max_seq_length
        st_config = path / ST_CONFIG
        lowercase = bool(read_json(st_config).get("do_lower_case")) if st_config.exists() else False
        self.tokenizer = TextTokenizer.from_dir(
            path, TokenizerOptions(self.max_seq_length, lowercase=lowercase)
        )
        self.dims = hidden_size * len(self.pooling.modes())
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


def read_modules(path: Path) -> tuple[PoolingConfig, bool]:
    """(pooling, whether the pipeline normalizes) from modules.json; defaults without it."""
    modules_file = path / "modules.json"
    if not modules_file.exists():
        return PoolingConfig(), False
    modules = read_json(modules_file)
    pooling: PoolingConfig | None = None
    normalize = False
    for module in modules:
        kind = module.get("type", "")
        if kind == ST_POOLING:
            pooling = PoolingConfig.from_file(path / module.get("path", "") / "config.json")
        elif kind == ST_NORMALIZE:
            normalize = True
        elif kind != ST_TRANSFORMER:
            raise UnsupportedModelError(
                f"{path}: sentence-transformers module {kind!r} is not supported "
                "(ferrum runs Transformer → Pooling → Normalize pipelines)"
            )
    if pooling is None:
        raise CheckpointError(f"{path}: modules.json has no Pooling module")
    return pooling, normalize


def max_seq_length(path: Path, cfg: BertConfig) -> int:
    """Tokens kept per text, special tokens included: sentence-transformers' setting, else the
    smaller of the tokenizer's and the position table's limits."""
    st_config = path / ST_CONFIG
    if st_config.exists():
        value = read_json(st_config).get("max_seq_length")
        if value:
            return int(value)
    limit = cfg.max_position_embeddings - cfg.position_offset
    tok_config = path / "tokenizer_config.json"
    if tok_config.exists():
        limit = min(limit, int(read_json(tok_config).get("model_max_length", limit)))
    return limit


def load_bert(path: Path, cfg: BertConfig, precision: Precision) -> BertModel:
    with torch.device("meta"):
        model = BertModel(cfg)
    materialize(model, precision.device, precision.weight_dtype)
    files = safetensors_files(path)
    load_named_tensors(model, iter_safetensors(files), bert_map_name, source=str(path))
    return model.eval()
