"""Splitting a reasoning model's reply into its thinking (`reasoning_content`) and its answer.

Reasoning models write `<think> … </think>` before the answer; some chat templates open the block
in the prompt, so the reply holds only the closing tag. The splitter works on streamed text
deltas: a tag may arrive cut across deltas, so a tail that could still become a tag is held back
until the next delta (or the end) decides it. Whitespace right after either tag is dropped, as
the templates put a newline there that belongs to neither part.
"""

from __future__ import annotations

from ferrum.server.llm_service import THINK_CLOSE, THINK_OPEN

_START, _REASONING, _CONTENT = "start", "reasoning", "content"


def _partial_tag_len(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ReasoningSplitter:
    """Feed text deltas; get (reasoning delta, content delta) back."""

    def __init__(self, in_reasoning: bool = False):
        self._mode = _REASONING if in_reasoning else _START
        self._held = ""
        self._strip = in_reasoning  # drop leading whitespace of the next part
        self.thought = in_reasoning  # whether the reply has a think block at all

    def feed(self, text: str) -> tuple[str, str]:
        buf, self._held = self._held + text, ""
        reasoning, content = "", ""
        while buf:
            if self._mode == _START:
                stripped = buf.lstrip()
                if stripped.startswith(THINK_OPEN):
                    buf, self._mode, self._strip = stripped[len(THINK_OPEN) :], _REASONING, True
                    self.thought = True
                elif THINK_OPEN.startswith(stripped):  # empty or a cut-off "<thi"
                    self._held = buf
                    break
                else:
                    self._mode = _CONTENT
            elif self._mode == _REASONING:
                end = buf.find(THINK_CLOSE)
                if end >= 0:
                    reasoning += self._take(buf[:end])
                    buf, self._mode, self._strip = buf[end + len(THINK_CLOSE) :], _CONTENT, True
                else:
                    keep = _partial_tag_len(buf, THINK_CLOSE)
                    reasoning += self._take(buf[: len(buf) - keep])
                    self._held = buf[len(buf) - keep :]
                    break
            else:
                content += self._take(buf)
                break
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """The held-back tail at the end of the reply (it never became a tag)."""
        held, self._held = self._held, ""
        if self._mode == _REASONING:
            return self._take(held), ""
        return "", self._take(held) if self._mode == _CONTENT else held.strip()

    def _take(self, text: str) -> str:
        if self._strip:
            text = text.lstrip()
            self._strip = not text
        return text


def split_reasoning(text: str, in_reasoning: bool = False) -> tuple[str | None, str]:
    """A whole reply split into (reasoning or None when there was no think block, answer)."""
    splitter = ReasoningSplitter(in_reasoning)
    reasoning, content = splitter.feed(text)
    tail_reasoning, tail_content = splitter.finish()
    reasoning += tail_reasoning
    return (reasoning if splitter.thought else None), content + tail_content
