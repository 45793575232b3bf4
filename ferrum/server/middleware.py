"""ASGI middleware in front of every route: the API key and the request body size limit.

Both are plain ASGI (not Starlette's BaseHTTPMiddleware), so streamed responses and disconnect
messages pass through untouched.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferrum.server.errors import APIError

PROTECTED_PREFIX = "/v1/"  # the OpenAI API; /health and /metrics stay open for probes
_BODY_METHODS = {"POST", "PUT", "PATCH"}


async def _reply(scope: Scope, send: Send, error: APIError) -> None:
    await error.response()(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class APIKeyMiddleware:
    """Requests under /v1/ need `Authorization: Bearer KEY`; anything else is a 401."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            return await self.app(scope, receive, send)
        given = _header(scope, b"authorization") or b""
        if not hmac.compare_digest(given, self.expected):
            error = APIError(
                401,
                "missing or wrong API key: send the server's --api-key as "
                "'Authorization: Bearer KEY'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            return await _reply(scope, send, error)
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Reads a request body up to `max_bytes` (a 413 beyond it) and hands it on whole."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> APIError:
        return APIError(
            413,
            f"the request body is larger than the server's limit of {self.max_bytes} bytes "
            "(--max-body-size)",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _reply(scope, send, self._too_large())
        chunks: list[bytes] = []
        size = 0
        while True:  # a chunked body declares no length: count it as it arrives
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _reply(scope, send, self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            # the body once, then the real channel (which reports the client's disconnect)
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None
