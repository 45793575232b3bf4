"""The app factory: `create_app(state)` builds the FastAPI app for whatever `state` serves.

A modality plugs in by registering its models in `state.models` under its kind and passing its
router here (`create_app(state, extra_routers=[embeddings.router])`); the error shape, API key,
body limit, /health and /metrics come with the app for every modality alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI

import ferrum
from ferrum.server import chat, completions, health, metrics, models
from ferrum.server.errors import install_error_handlers
from ferrum.server.middleware import APIKeyMiddleware, BodySizeLimitMiddleware
from ferrum.server.state import ServerState

LLM_ROUTERS: tuple[APIRouter, ...] = (chat.router, completions.router)
COMMON_ROUTERS: tuple[APIRouter, ...] = (models.router, health.router, metrics.router)


def create_app(state: ServerState, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """An OpenAI-compatible app over `state`'s models. The app does not own the models:
    close them (`state.models.close_all()`) after the server stops."""
    app = FastAPI(title="ferrum", version=ferrum.__version__, docs_url=None, redoc_url=None)
    app.state.server = state
    app.state.metrics = metrics.ServerMetrics()
    install_error_handlers(app)
    for router in (*COMMON_ROUTERS, *LLM_ROUTERS, *extra_routers):
        app.include_router(router)
    # the last added middleware runs first: the key is checked before any body is read
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=state.config.max_body_size)
    if state.config.api_key:
        app.add_middleware(APIKeyMiddleware, api_key=state.config.api_key)
    return app
