"""`POST /v1/chat/completions`: a conversation through the chat template to the engine.

Streamed, a choice's chunks go: its role (`{"role": "assistant", "content": ""}`), its content
deltas (and `reasoning_content` deltas for a thinking model), an empty delta with its
finish_reason; then, under `stream_options.include_usage`, one chunk with no choices and the
usage; then `data: [DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from functools import partial

from fastapi import APIRouter, Request, Response

from ferrum.errors import InvalidInputError
from ferrum.outputs import CompletionOutput, RequestOutput
from ferrum.sampling_params import SamplingParams
from ferrum.server.llm_service import ChatPrompt, ServedLLM
from ferrum.server.logprobs import chat_logprobs
from ferrum.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatResponseMessage,
    Usage,
)
from ferrum.server.reasoning import ReasoningSplitter, split_reasoning
from ferrum.server.registry import LLM_KIND
from ferrum.server.sampling import sampling_params
from ferrum.server.sse import sse_response
from ferrum.server.state import server_state
from ferrum.server.streams import (
    CLIENT_CLOSED_REQUEST,
    Deadline,
    EngineStream,
    complete,
    merge,
    open_streams,
)

router = APIRouter()
_FREE_TOOL_CHOICES = (None, "none", "auto")  # forcing a tool call is not supported


def usage_of(output: RequestOutput) -> Usage:
    prompt = len(output.prompt_token_ids)
    completion = sum(len(c.token_ids) for c in output.outputs)
    return Usage.of(prompt, completion)


def _chat_params(body: ChatCompletionRequest) -> SamplingParams:
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidInputError("top_logprobs needs logprobs: true")
    if body.response_format is not None and body.response_format.type != "text":
        raise InvalidInputError(
            f"response_format {body.response_format.type!r} is not supported; only 'text'"
        )
    if body.tool_choice not in _FREE_TOOL_CHOICES:
        raise InvalidInputError("tool_choice other than 'none' or 'auto' is not supported")
    max_tokens = body.max_completion_tokens or body.max_tokens  # None: until the context is full
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return sampling_params(body, max_tokens, logprobs)


def _template_kwargs(body: ChatCompletionRequest) -> dict:
    kwargs = dict(body.chat_template_kwargs or {})
    if body.tools is not None:
        kwargs.setdefault("tools", body.tools)
    return kwargs


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    state = server_state(request)
    served = state.models.get(body.model, LLM_KIND)
    llm: ServedLLM = served.handle
    params = _chat_params(body)
    prompt = llm.render_chat([m.template_dict() for m in body.messages], _template_kwargs(body))
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    deadline = Deadline(state.config.request_timeout)
    observe = partial(request.app.state.metrics.observe, served.name)
    if body.stream:
        streams = await open_streams(llm, [prompt.token_ids], params, request_id, deadline, observe)
        chunks = _ChatChunks(llm, body, prompt, request_id, served.name)
        return sse_response(chunks.stream(streams))

    finals = await complete(request, llm, [prompt.token_ids], params, request_id, deadline, observe)
    if finals is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)  # nobody reads it; it was aborted
    (final,) = finals
    response = ChatCompletionResponse(
        id=request_id,
        object="chat.completion",
        created=int(time.time()),
        model=served.name,
        choices=[_choice(llm, body, prompt, c) for c in final.outputs],
        usage=usage_of(final),
    )
    return Response(response.model_dump_json(exclude_unset=True), media_type="application/json")


def _choice(
    llm: ServedLLM, body: ChatCompletionRequest, prompt: ChatPrompt, c: CompletionOutput
) -> ChatChoice:
    if llm.reasoning:
        reasoning, content = split_reasoning(c.text, prompt.opens_reasoning)
        message = ChatResponseMessage(
            role="assistant", content=content, reasoning_content=reasoning
        )
    else:
        message = ChatResponseMessage(role="assistant", content=c.text)
    logprobs = None
    if body.logprobs and c.logprobs is not None:
        logprobs = chat_logprobs(llm.token_text, c.logprobs, body.top_logprobs or 0)
    return ChatChoice(
        index=c.index, message=message, logprobs=logprobs, finish_reason=c.finish_reason
    )


class _ChatChunks:
    """The chunk stream of one streamed chat request."""

    def __init__(
        self,
        llm: ServedLLM,
        body: ChatCompletionRequest,
        prompt: ChatPrompt,
        request_id: str,
        model_name: str,
    ):
        self.llm = llm
        self.body = body
        self.request_id = request_id
        self.model_name = model_name
        self.created = int(time.time())
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.splitters = [
            ReasoningSplitter(prompt.opens_reasoning) if llm.reasoning else None
            for _ in range(body.n)
        ]

    def _chunk(self, choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        chunk = ChatCompletionChunk(
            id=self.request_id,
            object="chat.completion.chunk",
            created=self.created,
            model=self.model_name,
            choices=choices,
        )
        if self.include_usage:
            chunk.usage = usage  # null on every chunk but the last, as OpenAI does
        return chunk.model_dump_json(exclude_unset=True)

    def _choice(
        self,
        index: int,
        delta: ChatDelta,
        logprobs: ChatLogprobs | None = None,
        finish_reason: str | None = None,
    ) -> ChatChunkChoice:
        return ChatChunkChoice(
            index=index, delta=delta, logprobs=logprobs, finish_reason=finish_reason
        )

    async def stream(self, streams: list[EngineStream]) -> AsyncIterator[str]:
        for i in range(self.body.n):
            yield self._chunk([self._choice(i, ChatDelta(role="assistant", content=""))])
        final: RequestOutput | None = None
        done = [False] * self.body.n
        async for _, out in merge(streams):
            for c in out.outputs:
                if done[c.index]:
                    continue
                for chunk in self._deltas(c):
                    yield chunk
                done[c.index] = c.finished
            final = out
        if self.include_usage and final is not None:
            yield self._chunk([], usage_of(final))

    def _deltas(self, c: CompletionOutput) -> list[str]:
        reasoning, content = "", c.delta_text
        splitter = self.splitters[c.index]
        if splitter is not None:
            reasoning, content = splitter.feed(c.delta_text)
            if c.finished:
                tail_reasoning, tail_content = splitter.finish()
                reasoning, content = reasoning + tail_reasoning, content + tail_content
        logprobs = None
        if self.body.logprobs and c.delta_logprobs:
            k = self.body.top_logprobs or 0
            logprobs = chat_logprobs(self.llm.token_text, c.delta_logprobs, k)
        chunks = []
        if reasoning or content or logprobs is not None:
            delta = ChatDelta(reasoning_content=reasoning) if reasoning else ChatDelta()
            if content or not reasoning:
                delta.content = content
            chunks.append(self._chunk([self._choice(c.index, delta, logprobs)]))
        if c.finished:
            chunks.append(self._chunk([self._choice(c.index, ChatDelta(), None, c.finish_reason)]))
        return chunks
