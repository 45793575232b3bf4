"""Sentence pooling: packed token states (N, D) → one vector per sequence (B, D).

The modes are sentence-transformers' (`1_Pooling/config.json`): mean, CLS, last token, max and
mean·sqrt(len); several enabled modes are concatenated in that library's order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ferrum.errors import CheckpointError, UnsupportedModelError

POOLING_CONFIG = "1_Pooling/config.json"


@dataclass(frozen=True)
class PoolingConfig:
    """Which pooling modes a sentence-transformers package enables."""

    cls_token: bool = False
    mean_tokens: bool = True
    max_tokens: bool = False
    mean_sqrt_len_tokens: bool = False
    last_token: bool = False

    @classmethod
    def from_file(cls, path: Path) -> PoolingConfig:
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: unreadable pooling config ({e})") from e
        if d.get("pooling_mode_weightedmean_tokens"):
            raise UnsupportedModelError(f"{path}: weighted-mean pooling is not supported")
        cfg = cls(
            cls_token=bool(d.get("pooling_mode_cls_token", False)),
            mean_tokens=bool(d.get("pooling_mode_mean_tokens", False)),
            max_tokens=bool(d.get("pooling_mode_max_tokens", False)),
            mean_sqrt_len_tokens=bool(d.get("pooling_mode_mean_sqrt_len_tokens", False)),
            last_token=bool(d.get("pooling_mode_lasttoken", False)),
        )
        if not cfg.modes():
            raise CheckpointError(f"{path}: no pooling mode is enabled")
        return cfg

    def modes(self) -> list[str]:
        """Enabled modes in sentence-transformers' concatenation order."""
        names = ["cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "last_token"]
        return [n for n in names if getattr(self, n)]


def pool(hidden: torch.Tensor, seq_lens: list[int], cfg: PoolingConfig) -> torch.Tensor:
    """(N, D) packed states of sequences with `seq_lens` tokens → (B, D·modes) float32."""
    hidden = hidden.float()
    device = hidden.device
    lens = torch.tensor(seq_lens, dtype=torch.int64, device=device)  # (B,)
    ends = torch.cumsum(lens, 0)  # (B,) one past each sequence's last token
    starts = ends - lens
    parts: list[torch.Tensor] = []
    for mode in cfg.modes():
        if mode == "cls_token":
            parts.append(hidden.index_select(0, starts))
        elif mode == "last_token":
            parts.append(hidden.index_select(0, ends - 1))
        elif mode == "max_tokens":
            parts.append(torch.segment_reduce(hidden, "max", lengths=lens, axis=0))
        else:
            sums = torch.segment_reduce(hidden, "sum", lengths=lens, axis=0)  # (B, D)
            denom = lens.to(hidden.dtype)[:, None]
            parts.append(sums / (denom if mode == "mean_tokens" else denom.sqrt()))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
