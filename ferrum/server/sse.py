"""Server-sent events as OpenAI streams them: `data: {json}` per chunk, `data: [DONE]` last.

An error after the response has started cannot change its status any more, so it is sent as
an event of its own (`data: {"error": {...}}`) before the closing `[DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from ferrum.server.errors import as_api_error

DONE_EVENT = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def sse_events(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """JSON chunks as events; an exception becomes an error event. (Cancellation, i.e. the
    client leaving, is a BaseException and passes through: nobody is left to tell.)"""
    try:
        async for data in chunks:
            yield f"data: {data}\n\n"
    except Exception as e:
        yield as_api_error(e).sse_event()
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield DONE_EVENT


def sse_response(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        sse_events(chunks), media_type="text/event-stream", headers=SSE_HEADERS
    )
