"""The models a server serves, by name and kind.

A modality plugs into the server with a kind (`llm` now; `embedding`, `transcription`, `speech`
later), a handle object its router knows how to drive, and its own router. Routers look their
model up here by the request's `model` field and kind, so an unknown name is a 404 in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferrum.errors import InvalidInputError, ModelNotFoundError

LLM_KIND = "llm"


@dataclass
class ServedModel:
    """One model the server answers for."""

    name: str  # what clients put in `model`
    kind: str  # which routers serve it: "llm", "embedding", "transcription", "speech"
    handle: Any  # the object the kind's router drives (ServedLLM for "llm")
    aliases: tuple[str, ...] = ()  # other names accepted in requests (e.g. the model spec)
    created: int = field(default_factory=lambda: int(time.time()))
    close: Callable[[], None] | None = None  # releases the handle's resources at shutdown


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}

    def add(self, model: ServedModel) -> None:
        for name in (model.name, *model.aliases):
            if name in self._models and self._models[name] is not model:
                raise InvalidInputError(f"two served models are both named {name!r}")
        self._models[model.name] = model
        for alias in model.aliases:
            self._models.setdefault(alias, model)

    def models(self, kind: str | None = None) -> list[ServedModel]:
        """Each served model once, in the order added."""
        unique = list({id(m): m for m in self._models.values()}.values())
        return [m for m in unique if kind is None or m.kind == kind]

    def get(self, name: str | None, kind: str) -> ServedModel:
        """The model a request names; with no name, the only model of that kind."""
        if name is None or name == "":
            candidates = self.models(kind)
            if len(candidates) == 1:
                return candidates[0]
            raise InvalidInputError("`model` is required: name one of the served models")
        model = self._models.get(name)
        if model is None or model.kind != kind:
            served = ", ".join(m.name for m in self.models(kind)) or "none"
            raise ModelNotFoundError(
                f"the model {name!r} does not exist here; served {kind} models: {served}"
            )
        return model

    def close_all(self) -> None:
        for model in self.models():
            if model.close is not None:
                model.close()
