"""Token logprobs in the two OpenAI formats: chat (`content: [{token, logprob, bytes,
top_logprobs}]`) and completions (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).

A token's text is its own decoding (special tokens included); a token that is part of a
multi-byte character decodes to U+FFFD, as in vLLM.
"""

from __future__ import annotations

from collections.abc import Callable

from ferrum.outputs import TokenLogprob
from ferrum.server.protocol import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob

TokenText = Callable[[int], str]


def _top(token_text: TokenText, entry: TokenLogprob, k: int) -> list[TopLogprob]:
    return [
        TopLogprob(token=(t := token_text(i)), logprob=lp, bytes=list(t.encode()))
        for i, lp in entry.top[:k]
    ]


def chat_logprobs(token_text: TokenText, entries: list[TokenLogprob], k: int) -> ChatLogprobs:
    content = []
    for e in entries:
        text = token_text(e.token_id)
        content.append(
            ChatTokenLogprob(
                token=text,
                logprob=e.logprob,
                bytes=list(text.encode()),
                top_logprobs=_top(token_text, e, k),
            )
        )
    return ChatLogprobs(content=content)


def _top_dict(token_text: TokenText, entry: TokenLogprob, k: int) -> dict[str, float]:
    # Distinct ids can share a text (e.g. halves of characters, both U+FFFD): keep the best.
    top: dict[str, float] = {}
    for i, lp in entry.top[:k]:
        top.setdefault(token_text(i), lp)
    return top


def completion_logprobs(
    token_text: TokenText, entries: list[TokenLogprob], k: int, offset: int
) -> CompletionLogprobs:
    """`offset`: where the first token's text starts in the choice's text."""
    tokens: list[str] = []
    token_logprobs: list[float | None] = []
    top_logprobs: list[dict[str, float] | None] = []
    text_offset: list[int] = []
    for e in entries:
        text = token_text(e.token_id)
        tokens.append(text)
        token_logprobs.append(e.logprob)
        top_logprobs.append(_top_dict(token_text, e, k) if k else None)
        text_offset.append(offset)
        offset += len(text)
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=token_logprobs,
        top_logprobs=top_logprobs,
        text_offset=text_offset,
    )
