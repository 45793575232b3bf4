"""`ServedLLM`: what the chat and completions routers drive for a model of kind "llm".

It wraps the async engine with the pieces the HTTP layer needs beside generation: rendering a
conversation with the model's chat template, whether the model thinks in `<think>` blocks, the
text of single tokens (for logprobs), and the engine's health and statistics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ferrum.engine.async_engine import AsyncLLMEngine
from ferrum.engine.llm_engine import EngineStats
from ferrum.errors import EngineDeadError, FerrumError, InvalidInputError
from ferrum.outputs import RequestOutput
from ferrum.sampling_params import SamplingParams

if TYPE_CHECKING:
    from ferrum.llm import LLM

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOKEN_TEXT_CACHE = 1 << 16  # distinct token ids whose text is kept for logprobs
RESERVED_TEMPLATE_KWARGS = frozenset({"messages", "add_generation_prompt"})  # set by the server


@dataclass
class ChatPrompt:
    """A conversation rendered for the model."""

    token_ids: list[int]
    opens_reasoning: bool  # the template ended the prompt inside a <think> block


class ServedLLM:
    def __init__(
        self,
        engine: AsyncLLMEngine,
        tokenizer: Any,
        max_model_len: int,
        reasoning: bool | None = None,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        # A reasoning model has <think> and </think> in its vocabulary; its replies are split.
        self.reasoning = has_think_tokens(tokenizer) if reasoning is None else reasoning
        self.token_text = lru_cache(maxsize=TOKEN_TEXT_CACHE)(self._token_text)

    @classmethod
    def from_llm(cls, llm: LLM, max_waiting: int | None = None) -> ServedLLM:
        """Serve a loaded `LLM`; its engine is driven from a background thread from now on."""
        return cls(AsyncLLMEngine(llm.engine, max_waiting), llm.tokenizer, llm.engine.max_model_len)

    def render_chat(self, messages: list[dict], template_kwargs: dict | None) -> ChatPrompt:
        """Token ids of a conversation ending with the assistant's turn (as `LLM.render_chat`)."""
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise InvalidInputError(
                "this model has no chat template; use /v1/completions with a plain prompt"
            )
        kwargs = dict(template_kwargs or {})
        reserved = sorted(RESERVED_TEMPLATE_KWARGS & set(kwargs))
        if reserved:
            raise InvalidInputError(f"chat_template_kwargs may not set {', '.join(reserved)}")
        try:
            text = self.tokenizer.apply_chat_template(messages, True, **kwargs)
        except FerrumError:
            raise
        except Exception as e:  # a template tripping over the client's values is their input
            raise InvalidInputError(f"the chat template failed on these messages: {e}") from e
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        opens = self.reasoning and text.rstrip().endswith(THINK_OPEN)
        return ChatPrompt(ids, opens)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        return self.engine.generate(prompt, params, request_id)

    @property
    def is_alive(self) -> bool:
        return self.engine.is_alive

    async def stats(self) -> EngineStats:
        return await self.engine.stats()

    async def health(self) -> dict[str, Any]:
        """What /health reports for this model; raises EngineDeadError when the loop is gone."""
        if not self.is_alive:
            error = getattr(self.engine, "error", None)
            cause = f"after an error: {error}" if error is not None else "(shut down)"
            raise EngineDeadError(f"the engine loop has stopped {cause}")
        s = await self.stats()
        return {
            "num_running": s.num_running,
            "num_waiting": s.num_waiting,
            "kv_cache_usage": s.kv_cache_usage,
            "num_free_blocks": s.num_free_blocks,
            "num_blocks": s.num_blocks,
        }

    def close(self) -> None:
        self.engine.shutdown()


def has_think_tokens(tokenizer: Any) -> bool:
    token_to_id = getattr(tokenizer, "token_to_id", None)
    if token_to_id is None:
        return False
    return token_to_id(THINK_OPEN) is not None and token_to_id(THINK_CLOSE) is not None
