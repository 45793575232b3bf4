"""From an OpenAI request's fields to the engine's `SamplingParams` (OpenAI's defaults), with
the checks that span several fields. Range errors from `SamplingParams` itself are 400s too."""

from __future__ import annotations

from ferrum.errors import InvalidInputError
from ferrum.sampling_params import SamplingParams
from ferrum.server.protocol import SamplingFields

DEFAULT_TEMPERATURE = 1.0  # OpenAI's default
DEFAULT_TOP_P = 1.0


def check_common(body: SamplingFields) -> None:
    if body.stream_options is not None and not body.stream:
        raise InvalidInputError("stream_options is only allowed when stream is true")
    if body.logit_bias:
        raise InvalidInputError("logit_bias is not supported by this server")


def sampling_params(
    body: SamplingFields, max_tokens: int | None, logprobs: int | None
) -> SamplingParams:
    """The engine's options for `body`; `max_tokens` None = until the context is full."""
    check_common(body)
    return SamplingParams(
        n=body.n,
        temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
        top_p=DEFAULT_TOP_P if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        min_p=body.min_p or 0.0,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        seed=body.seed,
        stop=body.stop,
        stop_token_ids=body.stop_token_ids,
        ignore_eos=body.ignore_eos,
        max_tokens=max_tokens,
        logprobs=logprobs,
        include_stop_str_in_output=body.include_stop_str_in_output,
        skip_special_tokens=body.skip_special_tokens,
    )
