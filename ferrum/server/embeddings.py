"""`POST /v1/embeddings`: texts, token ids and (for CLIP/SigLIP) images → vectors.

Token-id inputs are decoded with the model's own tokenizer (special tokens dropped) and embedded
as that text, so they pass through the same truncation and special tokens as a string would;
the usage counts the tokens the model read. `dimensions` keeps the first N components and
re-normalizes them (Matryoshka truncation); the vectors are otherwise what `Embedder.embed`
returns, normalized as the model's own pipeline does. Every item of a request joins the
Embedder's shared batches, so concurrent requests batch together.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ferrum.errors import InvalidInputError
from ferrum.server.media import load_image_url
from ferrum.server.protocol_embeddings import (
    EmbeddingData,
    EmbeddingInput,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ImagePart,
    TextPart,
)
from ferrum.server.state import server_state
from ferrum.server.streams import Deadline
from ferrum.text.embed import Embedder, l2_normalize

EMBEDDING_KIND = "embedding"
LITTLE_ENDIAN_F32 = np.dtype("<f4")  # what OpenAI's base64 encoding holds

router = APIRouter()


class ServedEmbedder:
    """What the embeddings router drives for a model of kind "embedding"."""

    def __init__(self, embedder: Embedder, allowed_media: Path | None = None) -> None:
        self.embedder = embedder
        self.allowed_media = allowed_media  # image files may be read from here (and below)
        self.max_model_len: int = embedder.encoder.max_seq_length  # shown by /v1/models

    @property
    def dims(self) -> int:
        return self.embedder.dims

    def decode(self, ids: list[int]) -> str:
        """The text of token ids, in the model's vocabulary (special tokens left out)."""
        backend = getattr(getattr(self.embedder.encoder, "tokenizer", None), "backend", None)
        if backend is None:
            raise InvalidInputError("this model takes text inputs only, not token ids")
        size = backend.get_vocab_size() if hasattr(backend, "get_vocab_size") else len(backend)
        bad = next((i for i in ids if not 0 <= i < size), None)
        if bad is not None:
            raise InvalidInputError(f"token id {bad} is outside the vocabulary (0 to {size - 1})")
        return backend.decode(ids, skip_special_tokens=True)

    async def health(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "max_model_len": self.max_model_len,
            "supports_images": self.embedder.supports_images,
        }

    def close(self) -> None:
        self.embedder.close()


@dataclass(frozen=True)
class _Item:
    """One input of a request, as the Embedder takes it."""

    kind: str  # "text" or "image"
    value: str  # the text, or the image's URL


@router.post("/v1/embeddings", response_model=None)
async def create_embeddings(body: EmbeddingRequest, request: Request) -> Response:
    state = server_state(request)
    served = state.models.get(body.model, EMBEDDING_KIND)
    handle: ServedEmbedder = served.handle
    if body.dimensions is not None and body.dimensions > handle.dims:
        raise InvalidInputError(
            f"dimensions={body.dimensions} is more than the {handle.dims} this model gives"
        )
    items = _items(body.input, handle)
    texts = [it.value for it in items if it.kind == "text"]
    urls = [it.value for it in items if it.kind == "image"]
    if urls and not handle.embedder.supports_images:
        raise InvalidInputError(
            f"the model {served.name!r} embeds text only; image inputs need an image+text model "
            "(CLIP, SigLIP)"
        )
    deadline = Deadline(state.config.request_timeout)
    images = await deadline.wait(run_in_threadpool(_load_images, urls, handle.allowed_media))
    result = await deadline.wait(handle.embedder.aembed(texts=texts, images=images))
    # The Embedder returns texts first, then images: put the rows back in request order.
    text_at, image_at = iter(range(len(texts))), iter(range(len(texts), len(items)))
    order = [next(text_at) if it.kind == "text" else next(image_at) for it in items]
    matrix = result.embeddings[order]  # (N, D) float32
    if body.dimensions is not None and body.dimensions < handle.dims:
        matrix = l2_normalize(matrix[:, : body.dimensions])
    tokens = result.total_tokens
    response = EmbeddingResponse(
        data=[
            EmbeddingData(index=i, embedding=_encode(row, body.encoding_format))
            for i, row in enumerate(matrix)
        ],
        model=served.name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
    return Response(response.model_dump_json(), media_type="application/json")


def _items(value: EmbeddingInput, handle: ServedEmbedder) -> list[_Item]:
    """The request's inputs in order; 400 for an empty input."""
    if isinstance(value, str):
        value = [value]
    if not value:
        raise InvalidInputError("input is empty: give a string, strings, token ids or images")
    if isinstance(value[0], int):
        return [_Item("text", handle.decode(value))]  # type: ignore[arg-type]
    items = []
    for i, entry in enumerate(value):
        if isinstance(entry, list):
            if not entry:
                raise InvalidInputError(f"input[{i}] is an empty list of token ids")
            items.append(_Item("text", handle.decode(entry)))
        elif isinstance(entry, ImagePart):
            items.append(_Item("image", entry.url))
        else:
            text = entry.text if isinstance(entry, TextPart) else entry
            if not text:
                raise InvalidInputError(f"input[{i}] is an empty string")
            items.append(_Item("text", text))
    return items


def _load_images(urls: list[str], allowed_media: Path | None) -> list[Image.Image]:
    return [load_image_url(url, allowed_media) for url in urls]


def _encode(row: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(row.astype(LITTLE_ENDIAN_F32).tobytes()).decode("ascii")
    return row.tolist()
