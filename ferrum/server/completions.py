"""`POST /v1/completions`: raw prompts (a string, strings, token ids or lists of them).

Choice `i * n + j` is completion j of prompt i. With `echo` each choice's text starts with its
prompt (streamed: in the choice's first chunk). Prompt logprobs are not computed, so `echo` with
`logprobs` is refused rather than answered with made-up values.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from functools import partial

from fastapi import APIRouter, Request, Response

from ferrum.errors import InvalidInputError
from ferrum.outputs import CompletionOutput, RequestOutput
from ferrum.server.llm_service import ServedLLM
from ferrum.server.logprobs import completion_logprobs
from ferrum.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    Usage,
)
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


def _prompts(body: CompletionRequest) -> list[str | list[int]]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidInputError("prompt is empty: give a string, strings, or token ids")
    if isinstance(prompt[0], int):
        return [prompt]  # type: ignore[list-item]
    return list(prompt)  # type: ignore[arg-type]


def _check(body: CompletionRequest) -> None:
    if body.suffix:
        raise InvalidInputError("suffix (insertion) is not supported by this server")
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidInputError("best_of is not supported (leave it unset or equal to n)")
    if body.echo and body.logprobs is not None:
        raise InvalidInputError(
            "echo with logprobs would need prompt logprobs, which this server does not compute"
        )


def _usage(finals: list[RequestOutput]) -> Usage:
    prompt = sum(len(f.prompt_token_ids) for f in finals)
    completion = sum(len(c.token_ids) for f in finals for c in f.outputs)
    return Usage.of(prompt, completion)


@router.post("/v1/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    state = server_state(request)
    served = state.models.get(body.model, LLM_KIND)
    llm: ServedLLM = served.handle
    _check(body)
    prompts = _prompts(body)
    params = sampling_params(body, body.max_tokens, body.logprobs)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    deadline = Deadline(state.config.request_timeout)
    observe = partial(request.app.state.metrics.observe, served.name)
    if body.stream:
        streams = await open_streams(llm, prompts, params, request_id, deadline, observe)
        chunks = _CompletionChunks(llm, body, prompts, request_id, served.name)
        return sse_response(chunks.stream(streams))

    finals = await complete(request, llm, prompts, params, request_id, deadline, observe)
    if finals is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    choices = []
    for i, final in enumerate(finals):
        echo = _prompt_text(llm, prompts[i]) if body.echo else ""
        for c in final.outputs:
            logprobs = None
            if body.logprobs is not None and c.logprobs is not None:
                logprobs = completion_logprobs(llm.token_text, c.logprobs, body.logprobs, len(echo))
            choices.append(
                CompletionChoice(
                    index=i * body.n + c.index,
                    text=echo + c.text,
                    logprobs=logprobs,
                    finish_reason=c.finish_reason,
                )
            )
    response = CompletionResponse(
        id=request_id,
        object="text_completion",
        created=int(time.time()),
        model=served.name,
        choices=choices,
        usage=_usage(finals),
    )
    return Response(response.model_dump_json(exclude_unset=True), media_type="application/json")


def _prompt_text(llm: ServedLLM, prompt: str | list[int]) -> str:
    return prompt if isinstance(prompt, str) else llm.decode(prompt)


class _CompletionChunks:
    """The chunk stream of one streamed completions request."""

    def __init__(
        self,
        llm: ServedLLM,
        body: CompletionRequest,
        prompts: list[str | list[int]],
        request_id: str,
        model_name: str,
    ):
        self.llm = llm
        self.body = body
        self.prompts = prompts
        self.request_id = request_id
        self.model_name = model_name
        self.created = int(time.time())
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        total = len(prompts) * body.n
        self.started = [False] * total  # whether the choice's first chunk (echo) went out
        self.done = [False] * total
        self.offsets = [0] * total  # text offset of the choice's next token (logprobs)

    def _chunk(self, choices: list[CompletionChoice], usage: Usage | None = None) -> str:
        chunk = CompletionResponse(
            id=self.request_id,
            object="text_completion",
            created=self.created,
            model=self.model_name,
            choices=choices,
        )
        if self.include_usage:
            chunk.usage = usage
        return chunk.model_dump_json(exclude_unset=True)

    async def stream(self, streams: list[EngineStream]) -> AsyncIterator[str]:
        finals: dict[int, RequestOutput] = {}
        async for prompt_index, out in merge(streams):
            for c in out.outputs:
                for chunk in self._deltas(prompt_index, c):
                    yield chunk
            finals[prompt_index] = out
        if self.include_usage:
            yield self._chunk([], _usage([finals[i] for i in sorted(finals)]))

    def _deltas(self, prompt_index: int, c: CompletionOutput) -> list[str]:
        index = prompt_index * self.body.n + c.index
        if self.done[index]:
            return []
        text = c.delta_text
        if not self.started[index]:
            self.started[index] = True
            if self.body.echo:
                text = _prompt_text(self.llm, self.prompts[prompt_index]) + text
        logprobs: CompletionLogprobs | None = None
        if self.body.logprobs is not None and c.delta_logprobs:
            logprobs = completion_logprobs(
                self.llm.token_text, c.delta_logprobs, self.body.logprobs, self.offsets[index]
            )
            self.offsets[index] = logprobs.text_offset[-1] + len(logprobs.tokens[-1])
        chunks = []
        if text or logprobs is not None:
            choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=None)
            chunks.append(self._chunk([choice]))
        if c.finished:
            self.done[index] = True
            choice = CompletionChoice(
                index=index, text="", logprobs=None, finish_reason=c.finish_reason
            )
            chunks.append(self._chunk([choice]))
        return chunks
