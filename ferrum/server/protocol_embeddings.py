"""The OpenAI wire format of `POST /v1/embeddings`: pydantic request and response types.

`input` takes OpenAI's forms (a string, strings, token ids, lists of token ids) and, for
image+text models, content parts in the chat API's shape, which may be mixed with strings:
`[{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}, "a cat"]`.
Ranges are checked here (a violation is a 400); what depends on the model (image support, the
number of dimensions, the vocabulary) is checked by the router.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from ferrum.server.protocol import OpenAIModel

MAX_INPUTS = 2048  # items per request, as OpenAI allows


class ImageURL(OpenAIModel):
    url: str  # a data URL (data:image/...;base64,...) or a file path under --allowed-local-media


class TextPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ImagePart(OpenAIModel):
    type: Literal["image_url"]
    image_url: ImageURL | str  # the object form (OpenAI's chat parts) or the bare URL (vLLM's)

    @property
    def url(self) -> str:
        return self.image_url if isinstance(self.image_url, str) else self.image_url.url


InputItem = str | TextPart | ImagePart
# tried in this order: one text, one token-id list, token-id lists, then texts and parts
EmbeddingInput = str | list[int] | list[list[int]] | list[InputItem]


class EmbeddingRequest(OpenAIModel):
    model: str | None = None  # optional here: with one embedding model served, it is the default
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _bounded(cls, value: EmbeddingInput) -> EmbeddingInput:
        is_batch = isinstance(value, list) and value and not isinstance(value[0], int)
        if is_batch and len(value) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs are allowed per request")
        return value


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32 values


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
