"""The talker: the decoder that turns the prompt (text and codec embeddings, summed position by
position) into codebook 0 of each 12.5 Hz speech frame, with the code predictor that completes
each frame. Weight names are the checkpoint's `talker.*`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferrum.models.qwen3_tts.code_predictor import CodePredictor
from ferrum.models.qwen3_tts.config import TalkerConfig
from ferrum.models.qwen3_tts.decoder import Decoder


class TalkerModel(Decoder):
    """The decoder plus its two input tables: codec tokens (talker width) and text tokens (the
    text model's width, projected by `Talker.text_projection`)."""

    def __init__(self, config: TalkerConfig) -> None:
        super().__init__(config.decoder)
        self.codec_embedding = nn.Embedding(config.decoder.vocab_size, config.decoder.hidden_size)
        self.text_embedding = nn.Embedding(config.text_vocab_size, config.text_hidden_size)


class TextProjection(nn.Module):
    """Two-layer SiLU MLP from the text width to the talker width (the reference's ResizeMLP)."""

    def __init__(self, input_size: int, inner_size: int, output_size: int) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(input_size, inner_size, bias=True)
        self.linear_fc2 = nn.Linear(inner_size, output_size, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_fc2(F.silu(self.linear_fc1(x)))


class Talker(nn.Module):
    def __init__(self, config: TalkerConfig) -> None:
        super().__init__()
        self.config = config
        hidden = config.decoder.hidden_size
        self.model = TalkerModel(config)
        self.text_projection = TextProjection(
            config.text_hidden_size, config.text_hidden_size, hidden
        )
        self.codec_head = nn.Linear(hidden, config.decoder.vocab_size, bias=False)
        self.code_predictor = CodePredictor(config.code_predictor, hidden)

    def embed_text(self, ids: Tensor) -> Tensor:
        """Text token ids (...,) -> projected embeddings (..., hidden)."""
        return self.text_projection(self.model.text_embedding(ids))

    def embed_codec(self, ids: Tensor) -> Tensor:
        """Codec token ids (...,) -> embeddings (..., hidden)."""
        return self.model.codec_embedding(ids)

    def embed_frame(self, codes: Tensor) -> Tensor:
        """All Q codes of frames (B, Q) -> the summed embedding the talker reads (B, hidden)."""
        tables = self.code_predictor.model.codec_embedding
        parts = [self.embed_codec(codes[:, 0])]
        parts += [tables[i](codes[:, i + 1]) for i in range(len(tables))]
        return torch.stack(parts, dim=1).sum(1)
