"""The embedding pipeline: `Embedder(spec).embed(texts=[...], images=[...])`.

An Embedder owns one loaded encoder and a batcher per input kind. It is thread-safe: any number
of threads (or an asyncio router, through `aembed`) may submit at once, and their items share
batches. Normalization is applied per call, after batching, so callers with different settings
still share forwards.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ferrum.batching import Batcher, BatchPolicy
from ferrum.errors import InvalidInputError
from ferrum.text.encoder import Encoder, ItemEmbedding, Precision, load_encoder
from ferrum.text.resolve import resolve_model

# cost = tokens; on a 2-core CPU 2,048-token batches ran faster than 8,192 (cache-sized)
TEXT_POLICY = BatchPolicy(max_batch_cost=2048, max_batch_items=512)
# cost = images; preprocessed images are released a few at a time so decoding overlaps forwards
IMAGE_POLICY = BatchPolicy(max_batch_cost=32, max_batch_items=32, release_every=4)
# a GPU wants far larger batches to fill its units (CPU-sized ones ran at 0.56x transformers)
GPU_TEXT_POLICY = BatchPolicy(max_batch_cost=32768, max_batch_items=1024)
GPU_IMAGE_POLICY = BatchPolicy(max_batch_cost=128, max_batch_items=128, release_every=16)
NORM_EPS = 1e-12  # floor on a vector's norm, as torch.nn.functional.normalize uses


@dataclass(frozen=True)
class EmbeddingResult:
    """Embeddings of one call, texts first then images, each in input order."""

    embeddings: np.ndarray  # (N, D) float32
    model: str  # the model's hub id or folder
    dims: int  # D
    kinds: tuple[str, ...]  # "text" or "image" for each row
    token_counts: tuple[int, ...]  # tokens read for each row (0 for images)
    truncated: int  # texts cut at the model's max sequence length
    normalized: bool  # rows are unit vectors

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)

    @property
    def tensor(self) -> torch.Tensor:
        """The same matrix as a torch tensor (shares memory)."""
        return torch.from_numpy(self.embeddings)

    def similarity(self) -> np.ndarray:
        """(N, N) cosine similarity of every row against every row (text against image too)."""
        unit = l2_normalize(self.embeddings)
        return unit @ unit.T


class Embedder:
    """Text (and, for CLIP/SigLIP, image) embeddings from one model."""

    def __init__(
        self,
        spec: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        text_policy: BatchPolicy | None = None,
        image_policy: BatchPolicy | None = None,
    ) -> None:
        self.precision = Precision.choose(device, dtype)
        self.encoder: Encoder = load_encoder(resolve_model(spec), self.precision)
        gpu = self.precision.device.type == "cuda"
        self._policies = {
            "text": text_policy or (GPU_TEXT_POLICY if gpu else TEXT_POLICY),
            "image": image_policy or (GPU_IMAGE_POLICY if gpu else IMAGE_POLICY),
        }
        self._batchers: dict[str, Batcher[Any, Any, ItemEmbedding]] = {}
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.encoder.name

    @property
    def dims(self) -> int:
        return self.encoder.dims

    @property
    def supports_images(self) -> bool:
        return self.encoder.image_work is not None

    # ----- per-item submission (what a server router calls) -----------------------------------
    def submit_texts(self, texts: Sequence[str]) -> list[Future[ItemEmbedding]]:
        return self._batcher("text").submit_many(texts)

    def submit_images(self, images: Sequence[Any]) -> list[Future[ItemEmbedding]]:
        if not self.supports_images:
            raise InvalidInputError(
                f"{self.model_name} embeds text only; for images use an image+text model, "
                "e.g. -m clip-vit-b32 or -m siglip-base"
            )
        return self._batcher("image").submit_many(images)

    # ----- whole calls ------------------------------------------------------------------------
    def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Any] | None = None,
        normalize: bool | None = None,
    ) -> EmbeddingResult:
        """Embed texts and images (paths or PIL images); `normalize=None` follows the model
        (sentence-transformers' Normalize module; always for CLIP/SigLIP)."""
        futures = self._submit(texts, images)
        items: list[ItemEmbedding] = []
        try:
            items = [f.result() for f, _ in futures]
        except BaseException:
            for f, _ in futures:
                f.cancel()
            raise
        return self._result(items, [kind for _, kind in futures], normalize)

    async def aembed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Any] | None = None,
        normalize: bool | None = None,
    ) -> EmbeddingResult:
        """asyncio form of `embed`; cancelling the awaiting task cancels items not yet run."""
        futures = self._submit(texts, images)
        wrapped = [asyncio.wrap_future(f) for f, _ in futures]
        try:
            items = list(await asyncio.gather(*wrapped))
        except BaseException:
            for w in wrapped:
                w.cancel()
            raise
        return self._result(items, [kind for _, kind in futures], normalize)

    def close(self) -> None:
        with self._lock:
            for batcher in self._batchers.values():
                batcher.close()
            self._batchers.clear()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- internals --------------------------------------------------------------------------
    def _submit(
        self, texts: Sequence[str] | None, images: Sequence[Any] | None
    ) -> list[tuple[Future[ItemEmbedding], str]]:
        texts, images = list(texts or []), list(images or [])
        if not texts and not images:
            raise InvalidInputError("nothing to embed: give at least one text or image")
        for t in texts:
            if not isinstance(t, str):
                raise InvalidInputError(f"text inputs must be strings, got {type(t).__name__}")
        image_futures = self.submit_images(images) if images else []
        text_futures = self.submit_texts(texts) if texts else []
        return [(f, "text") for f in text_futures] + [(f, "image") for f in image_futures]

    def _result(
        self, items: list[ItemEmbedding], kinds: list[str], normalize: bool | None
    ) -> EmbeddingResult:
        normalize = self.encoder.normalize_default if normalize is None else normalize
        matrix = np.stack([it.vector for it in items]).astype(np.float32, copy=False)
        if normalize:
            matrix = l2_normalize(matrix)
        return EmbeddingResult(
            embeddings=matrix,
            model=self.model_name,
            dims=matrix.shape[1],
            kinds=tuple(kinds),
            token_counts=tuple(it.num_tokens for it in items),
            truncated=sum(it.truncated for it in items),
            normalized=normalize,
        )

    def _batcher(self, kind: str) -> Batcher[Any, Any, ItemEmbedding]:
        with self._lock:
            if kind not in self._batchers:
                work = self.encoder.text_work if kind == "text" else self.encoder.image_work
                assert work is not None
                name = f"embed-{kind}"
                self._batchers[kind] = Batcher(work, self._policies[kind], name=name)
            return self._batchers[kind]


def l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, NORM_EPS)).astype(np.float32, copy=False)
