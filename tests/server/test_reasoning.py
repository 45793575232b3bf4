"""The thinking split: streamed deltas cut anywhere give what a regex over the whole reply gives,
and a reasoning model's replies reach the client as `reasoning_content` + `content`."""

from __future__ import annotations

import random
import re
import time

import httpx
import openai
import pytest

from ferrum.outputs import CompletionOutput, RequestMetrics, RequestOutput
from ferrum.server.llm_service import ServedLLM
from ferrum.server.reasoning import ReasoningSplitter, split_reasoning
from ferrum.server.registry import LLM_KIND, ServedModel
from ferrum.server.state import ServerState

from .conftest import MODEL_NAME, running_server

REPLIES = [
    "<think>\nThe user greets me.\n</think>\n\nHello there!",
    "  <think>short</think>answer with </think> inside",
    "<think>\nnever finished thinking",
    "no thinking at all, <think> later is content",
    "<thin is not a tag",
    "",
]


def reference(text: str, opened: bool) -> tuple[str | None, str]:
    """The split by regex over the whole reply."""
    if opened:
        text = "<think>" + text
    m = re.fullmatch(r"\s*<think>\s*(.*?)(?:</think>\s*(.*))?", text, re.S)
    if m is None:
        return None, text
    return m.group(1), m.group(2) or ""


def split_streamed(text: str, opened: bool, cuts: list[int]) -> tuple[str, str]:
    splitter = ReasoningSplitter(opened)
    reasoning, content = "", ""
    for a, b in zip([0, *cuts], [*cuts, len(text)]):
        r, c = splitter.feed(text[a:b])
        reasoning, content = reasoning + r, content + c
    r, c = splitter.finish()
    return reasoning + r, content + c


# (reply, whether the template opened the think block); an opened block has no second <think>
CASES = [(t, False) for t in REPLIES] + [(t, True) for t in REPLIES if "<think>" not in t]


@pytest.mark.parametrize(("text", "opened"), CASES)
def test_streamed_split_equals_the_whole_split(text, opened):
    expected = reference(text, opened)
    assert split_reasoning(text, opened) == expected
    rng = random.Random(0)
    for _ in range(200):
        cuts = sorted(
            rng.sample(range(1, len(text)), min(max(len(text) - 1, 0), rng.randint(0, 8)))
        )
        assert split_streamed(text, opened, cuts) == (expected[0] or "", expected[1])
    assert split_streamed(text, opened, list(range(1, len(text)))) == (
        expected[0] or "",
        expected[1],
    )


class _ScriptedEngine:
    """Replies with fixed text deltas (what a reasoning model would write)."""

    is_alive = True

    def __init__(self, deltas: list[str]):
        self.deltas = deltas

    async def generate(self, prompt, params, request_id=None):
        metrics = RequestMetrics(arrival_time=time.perf_counter())
        text = ""
        for i, delta in enumerate(self.deltas):
            text += delta
            last = i == len(self.deltas) - 1
            completion = CompletionOutput(
                index=0,
                text=text,
                token_ids=list(range(i + 1)),
                finish_reason="stop" if last else None,
                delta_text=delta,
                delta_token_ids=[i],
            )
            yield RequestOutput(request_id, None, list(prompt), [completion], last, metrics)


def test_reasoning_content_reaches_the_client(state):
    reply = ["<th", "ink>\nI", " should gr", "eet.\n</thi", "nk>\n\nHel", "lo!"]
    tokenizer = state.models.get(MODEL_NAME, LLM_KIND).handle.tokenizer
    thinker = ServedLLM(_ScriptedEngine(reply), tokenizer, 256, reasoning=True)
    served = ServerState()
    served.models.add(ServedModel("thinker", LLM_KIND, thinker))
    messages = [{"role": "user", "content": "hi"}]
    with running_server(served) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        r = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "thinker", "messages": messages}
        ).json()
        message = r["choices"][0]["message"]
        assert message["reasoning_content"] == "I should greet.\n"
        assert message["content"] == "Hello!"
        reasoning, content = "", ""
        for chunk in sdk.chat.completions.create(model="thinker", messages=messages, stream=True):
            for choice in chunk.choices:
                extra = choice.delta.model_extra or {}
                reasoning += extra.get("reasoning_content") or ""
                content += choice.delta.content or ""
        assert (reasoning, content) == ("I should greet.\n", "Hello!")
