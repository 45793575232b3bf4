"""What an app serves and under which limits; shared by the routers through `request.app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.requests import Request

from ferrum.server.registry import ModelRegistry

MIB = 1 << 20
DEFAULT_MAX_BODY_BYTES = 16 * MIB  # room for long prompts; audio uploads may want more


@dataclass
class ServerConfig:
    """Limits and access of one server (the `ferrum serve` flags that are not engine options)."""

    api_key: str | None = None  # clients must send `Authorization: Bearer KEY` under /v1/
    request_timeout: float | None = None  # seconds a request may take in all; None = no limit
    max_body_size: int = DEFAULT_MAX_BODY_BYTES  # bytes; larger request bodies get a 413


@dataclass
class ServerState:
    """The served models and the server's limits. An app reads it, never owns it: whoever
    loaded the models closes them (`models.close_all()`) after the server stops."""

    models: ModelRegistry = field(default_factory=ModelRegistry)
    config: ServerConfig = field(default_factory=ServerConfig)


def server_state(request: Request) -> ServerState:
    return request.app.state.server
