"""The code predictor: a small decoder that fills in codebooks 1..Q-1 of one frame.

For each frame it reads two inputs, the talker's last hidden state and the embedding of the
frame's codebook-0 token, then predicts codebook 1; each predicted code is embedded (one embedding
table per codebook) and fed back for the next, each codebook with its own head. The sequence is
at most Q long and starts afresh every frame, so its cache never outlives one frame.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ferrum.models.qwen3_tts.config import DecoderConfig
from ferrum.models.qwen3_tts.decoder import Decoder

CodePicker = Callable[[Tensor], Tensor]  # logits (B, V) -> codes (B,)


class CodePredictorModel(Decoder):
    """The decoder plus the embeddings of codebooks 1..Q-1 (in the talker's width)."""

    def __init__(self, config: DecoderConfig, embedding_dim: int) -> None:
        super().__init__(config)
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(config.vocab_size, embedding_dim)
            for _ in range(config.num_code_groups - 1)
        )


class CodePredictor(nn.Module):
    """Weight names as the checkpoint's `talker.code_predictor.*`."""

    def __init__(self, config: DecoderConfig, talker_hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.model = CodePredictorModel(config, talker_hidden_size)
        self.lm_head = nn.ModuleList(
            nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            for _ in range(config.num_code_groups - 1)
        )
        # The 1.7B talker is wider than its code predictor; the 0.6B one is not.
        self.small_to_mtp_projection: nn.Module = (
            nn.Linear(talker_hidden_size, config.hidden_size, bias=True)
            if talker_hidden_size != config.hidden_size
            else nn.Identity()
        )

    def predict(self, talker_hidden: Tensor, first_code_embed: Tensor, pick: CodePicker) -> Tensor:
        """talker_hidden, first_code_embed (B, talker hidden) -> codes of codebooks 1..Q-1
        (B, Q-1), each chosen from its logits by `pick`."""
        b = talker_hidden.shape[0]
        device = talker_hidden.device
        x = torch.stack((talker_hidden, first_code_embed), dim=1)  # (B, 2, talker hidden)
        positions = torch.arange(2, device=device).expand(b, 2)
        valid = torch.ones(b, 2, dtype=torch.bool, device=device)
        hidden, cache = self.model(self.small_to_mtp_projection(x), positions, valid, None)
        codes = [pick(self.lm_head[0](hidden[:, -1]))]
        one = torch.ones(b, 1, dtype=torch.bool, device=device)
        for step in range(1, len(self.lm_head)):
            x = self.model.codec_embedding[step - 1](codes[-1])[:, None]  # (B, 1, talker hidden)
            at = torch.full((b, 1), step + 1, device=device)
            hidden, cache = self.model(self.small_to_mtp_projection(x), at, one, cache)
            codes.append(pick(self.lm_head[step](hidden[:, -1])))
        return torch.stack(codes, dim=1)
