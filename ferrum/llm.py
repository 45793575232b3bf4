"""The offline Python API: `LLM(spec).generate(prompts, SamplingParams(...))`, as in vLLM."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields

from ferrum.config import EngineConfig, parse_size
from ferrum.engine.loading import load_engine
from ferrum.errors import InvalidInputError
from ferrum.outputs import RequestOutput
from ferrum.sampling_params import SamplingParams

Message = dict
Conversation = list[Message]


def engine_config(**options) -> EngineConfig:
    """EngineConfig from keyword options (unknown names are an error, sizes may be strings)."""
    names = {f.name for f in fields(EngineConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise InvalidInputError(f"unknown engine option(s): {', '.join(unknown)}")
    if isinstance(options.get("kv_cache_memory"), str):
        options["kv_cache_memory"] = parse_size(options["kv_cache_memory"])
    return EngineConfig(**options)


class LLM:
    """A local model with a batching engine.

    >>> llm = LLM("smollm2")
    >>> out = llm.generate(["The capital of France is"], SamplingParams(max_tokens=8))
    >>> out[0].outputs[0].text
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        random_weights: bool = False,
        **engine_options,
    ):
        self.engine, self.load_report = load_engine(
            model, engine_config(**engine_options), device, dtype, random_weights
        )

    def close(self) -> None:
        """Stop the tensor-parallel workers, if any; the model's memory goes with the object."""
        self.engine.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[list[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Run every prompt to completion, batched; outputs come back in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)
        if isinstance(sampling_params, Sequence):
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise InvalidInputError("give one SamplingParams, or one per prompt")
        else:
            params = [sampling_params or SamplingParams()] * len(prompts)
        ids = [self.engine.add_request(None, p, sp, stream=False) for p, sp in zip(prompts, params)]
        final: dict[str, RequestOutput] = {}
        try:
            while self.engine.has_unfinished_requests():
                for out in self.engine.step():
                    if out.finished:
                        final[out.request_id] = out
        finally:
            for rid in ids:
                if rid not in final:
                    self.engine.abort_request(rid)
        return [final[rid] for rid in ids]

    def chat(
        self,
        conversations: Conversation | list[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        chat_template_kwargs: dict | None = None,
    ) -> list[RequestOutput]:
        """Apply the model's chat template to each conversation and generate replies."""
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]  # type: ignore[list-item]
        prompts = [self.render_chat(c, chat_template_kwargs) for c in conversations]
        return self.generate(prompts, sampling_params)

    def render_chat(
        self, conversation: Conversation, chat_template_kwargs: dict | None = None
    ) -> list[int]:
        """Token ids of a conversation under the chat template, ending with the assistant turn.
        (Templates write their own special tokens, so none are added again.)"""
        text = self.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, **(chat_template_kwargs or {})
        )
        return self.tokenizer.encode(text, add_special_tokens=False)

    def stream(
        self, prompt: str | list[int], sampling_params: SamplingParams | None = None
    ) -> Iterator[RequestOutput]:
        """Generate one request, yielding an output (with deltas) after every step that changed
        it. Closing the iterator early aborts the request and frees its blocks."""
        rid = self.engine.add_request(None, prompt, sampling_params)
        done = False
        try:
            while not done:
                for out in self.engine.step():
                    if out.request_id == rid:
                        done = out.finished
                        yield out
        finally:
            if not done:
                self.engine.abort_request(rid)
