"""`GET /health`: 200 only while every served model is loaded and its engine loop alive.

The body carries each model's queue depth and KV cache usage, so a load balancer or an operator
sees how busy the server is; anything else is a 503 with the reason.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ferrum.errors import FerrumError
from ferrum.server.state import server_state

HEALTH_TIMEOUT_S = 10.0  # longer than any engine step; an engine slower than this is stuck

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    models = server_state(request).models.models()
    if not models:
        return JSONResponse({"status": "unavailable", "reason": "no model loaded"}, 503)
    report: list[dict[str, Any]] = []
    for model in models:
        try:
            info = await asyncio.wait_for(model.handle.health(), HEALTH_TIMEOUT_S)
        except (TimeoutError, asyncio.TimeoutError):
            reason = f"{model.name}: the engine did not answer within {HEALTH_TIMEOUT_S:.0f} s"
            return JSONResponse({"status": "unavailable", "reason": reason}, 503)
        except FerrumError as e:
            return JSONResponse({"status": "unavailable", "reason": f"{model.name}: {e}"}, 503)
        report.append({"name": model.name, "kind": model.kind, **info})
    return JSONResponse({"status": "ok", "models": report})
