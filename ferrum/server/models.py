"""`GET /v1/models` and `GET /v1/models/{id}`: the served models, every kind."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ferrum.errors import ModelNotFoundError
from ferrum.server.protocol import ModelCard, ModelList
from ferrum.server.registry import ServedModel
from ferrum.server.state import server_state

router = APIRouter()


def _card(model: ServedModel) -> ModelCard:
    return ModelCard(
        id=model.name,
        created=model.created,
        max_model_len=getattr(model.handle, "max_model_len", None),
        kind=model.kind,
    )


@router.get("/v1/models", response_model_exclude_none=True)
async def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(m) for m in server_state(request).models.models()])


@router.get("/v1/models/{model_id:path}", response_model_exclude_none=True)
async def retrieve_model(model_id: str, request: Request) -> ModelCard:
    for model in server_state(request).models.models():
        if model_id == model.name or model_id in model.aliases:
            return _card(model)
    raise ModelNotFoundError(f"the model {model_id!r} does not exist here")
