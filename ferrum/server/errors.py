"""Every error the server returns, in OpenAI's shape: `{"error": {message, type, param, code}}`.

Anything a client can send maps to a 4xx with a message saying what to fix: pydantic validation
(400, not FastAPI's 422), malformed JSON, unknown routes and methods, ferrum's own errors by their
`status_code`. A 500 is reserved for bugs and never carries a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferrum.errors import (
    EngineDeadError,
    FerrumError,
    InvalidInputError,
    ModelNotFoundError,
    PromptTooLongError,
    QueueFullError,
)

log = logging.getLogger("ferrum.server")

RETRY_AFTER_S = 1  # what a client told the queue is full should wait before retrying

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",  # as OpenAI answers an unknown model
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "server_error",
    504: "timeout_error",
}


class APIError(Exception):
    """An error response: status, OpenAI error fields, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}

    @property
    def type(self) -> str:
        if self.status >= 500 and self.status not in _TYPE_BY_STATUS:
            return "server_error"
        return _TYPE_BY_STATUS.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    def sse_event(self) -> str:
        return f"data: {json.dumps(self.body())}\n\n"


_CODES: tuple[tuple[type[FerrumError], str], ...] = (  # most specific first
    (PromptTooLongError, "context_length_exceeded"),
    (ModelNotFoundError, "model_not_found"),
    (QueueFullError, "queue_full"),
    (EngineDeadError, "engine_dead"),
    (InvalidInputError, "invalid_value"),
)


def from_ferrum(error: FerrumError) -> APIError:
    """The API error of one of ferrum's own errors (status from its class)."""
    code = next((c for cls, c in _CODES if isinstance(error, cls)), None)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if isinstance(error, QueueFullError) else None
    return APIError(error.status_code, str(error), code=code, headers=headers)


def as_api_error(error: BaseException) -> APIError:
    """Any exception as an API error; unexpected ones become an opaque 500 (and are logged)."""
    if isinstance(error, APIError):
        return error
    if isinstance(error, FerrumError):
        return from_ferrum(error)
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):  # distinct before Python 3.11
        return APIError(504, "the request took longer than the server's --request-timeout")
    log.error("internal error", exc_info=error)
    return APIError(500, "internal server error", code="internal_error")


def from_validation(error: RequestValidationError) -> APIError:
    """Pydantic's complaint, worded for a client, with the offending field as `param`.

    A value that fits no member of a union (`prompt`, message `content`) yields one error per
    member, located below the field by the member's type: those collapse into one message about
    the field, from the members that matched deepest."""
    errors = list(error.errors()) or [{"msg": "invalid request", "loc": (), "type": "value"}]
    if any(e.get("type") == "json_invalid" for e in errors):
        return APIError(400, "the request body is not valid JSON", code="invalid_json")
    locs = [[str(p) for p in e.get("loc", ()) if p != "body"] for e in errors]
    field = locs[0]
    if len(errors) > 1:
        field = _common_prefix(locs) or field
    deepest = max(len(loc) for loc in locs)
    messages = [str(e.get("msg", "")) for e, loc in zip(errors, locs) if len(loc) == deepest]
    message = " or ".join(dict.fromkeys(m.removeprefix("Value error, ") for m in messages))
    param = ".".join(field) or None
    kind = str(errors[0].get("type", ""))
    if kind == "missing":
        code = "missing_required_parameter"
    elif kind.endswith(("_type", "_parsing")):
        code = "invalid_type"
    else:
        code = "invalid_value"
    return APIError(400, f"{param}: {message}" if param else message, code=code, param=param)


def _common_prefix(locs: list[list[str]]) -> list[str]:
    prefix: list[str] = []
    for parts in zip(*locs):
        if len(set(parts)) != 1:
            break
        prefix.append(parts[0])
    return prefix


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, e: Exception) -> JSONResponse:
        return as_api_error(e).response()

    async def on_validation(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, RequestValidationError)
        return from_validation(e).response()

    async def on_http(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, StarletteHTTPException)
        if e.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif e.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(e.detail)
        error = APIError(e.status_code, message, headers=dict(e.headers or {}))
        return error.response()

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(FerrumError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_api_error)
