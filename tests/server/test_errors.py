"""Bad input and limits over raw HTTP: OpenAI-shaped errors with the right status, never a 500."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from ferrum import LLM
from ferrum.errors import EngineDeadError
from ferrum.server.llm_service import ServedLLM
from ferrum.server.registry import LLM_KIND, ServedModel
from ferrum.server.state import ServerConfig, ServerState

from .conftest import MODEL_NAME, running_server, serve_llm

USER = [{"role": "user", "content": "hello"}]


def chat(**fields) -> dict:
    return {"model": MODEL_NAME, "messages": USER, "max_tokens": 4, **fields}


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture(scope="module")
def http(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", chat(messages=[]), "messages"),
        ("/v1/chat/completions", chat(messages="hello"), "messages"),
        ("/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "x"}]), None),
        ("/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), None),
        (
            "/v1/chat/completions",
            chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
            None,
        ),
        ("/v1/chat/completions", chat(temperature="hot"), "temperature"),
        ("/v1/chat/completions", chat(temperature=3), "temperature"),
        ("/v1/chat/completions", chat(top_p=0), "top_p"),
        ("/v1/chat/completions", chat(n=0), "n"),
        ("/v1/chat/completions", chat(max_tokens=0), "max_tokens"),
        ("/v1/chat/completions", chat(max_tokens=10_000), None),
        ("/v1/chat/completions", chat(seed=2**80), "seed"),
        ("/v1/chat/completions", chat(stop=[""]), None),
        ("/v1/chat/completions", chat(top_logprobs=3), None),
        ("/v1/chat/completions", chat(logprobs=True, top_logprobs=50), "top_logprobs"),
        ("/v1/chat/completions", chat(stream_options={"include_usage": True}), None),
        ("/v1/chat/completions", chat(response_format={"type": "json_object"}), None),
        ("/v1/chat/completions", chat(chat_template_kwargs={"add_generation_prompt": False}), None),
        ("/v1/chat/completions", chat(stream="maybe"), "stream"),
        ("/v1/completions", {"model": MODEL_NAME}, "prompt"),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": ""}, None),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": []}, None),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": [[]]}, None),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": [1, -5]}, None),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": [10**9]}, None),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": [5] * 300}, None),
        (
            "/v1/completions",
            {"model": MODEL_NAME, "prompt": "hi", "echo": True, "logprobs": 1},
            None,
        ),
        ("/v1/completions", {"model": MODEL_NAME, "prompt": {"text": "hi"}}, "prompt"),
    ],
)
def test_invalid_input_is_a_400(http, path, body, param):
    error = assert_error(http.post(path, json=body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_prompt_longer_than_the_context(http):
    r = http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": [5] * 300})
    assert "context" in assert_error(r, 400, "context_length_exceeded")["message"]


@pytest.mark.parametrize(
    "raw", [b'{"model": "tiny", "messages": [', b"not json", b"", b"[]", b"null", b"\xff\xfe"]
)
def test_malformed_bodies_are_400(http, raw):
    r = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400)


def test_unknown_model_route_and_method(http):
    error = assert_error(http.post("/v1/chat/completions", json=chat(model="gpt-9")), 404)
    assert error["code"] == "model_not_found" and "gpt-9" in error["message"]
    assert_error(http.post("/v1/completions", json={"model": "gpt-9", "prompt": "x"}), 404)
    assert_error(http.get("/v1/models/gpt-9"), 404)
    assert_error(http.get("/v1/nothing-here"), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_the_model_field_may_be_left_out(http):
    r = http.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == MODEL_NAME


def test_api_key_is_enforced(state):
    config = ServerConfig(api_key="s3cret")
    with running_server(ServerState(state.models, config)) as url:
        url_v1 = f"{url}/v1/chat/completions"
        assert_error(httpx.post(url_v1, json=chat()), 401, "invalid_api_key")
        wrong = {"Authorization": "Bearer nope"}
        assert_error(httpx.post(url_v1, json=chat(), headers=wrong), 401)
        assert_error(httpx.get(f"{url}/v1/models"), 401)
        right = {"Authorization": "Bearer s3cret"}
        assert httpx.post(url_v1, json=chat(), headers=right).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200  # probes need no key
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert sdk.models.list().data[0].id == MODEL_NAME
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="bad", max_retries=0).models.list()


def test_oversized_bodies_are_413(state):
    with running_server(ServerState(state.models, ServerConfig(max_body_size=1024))) as url:
        small = chat()
        assert httpx.post(f"{url}/v1/chat/completions", json=small).status_code == 200
        big = chat(messages=[{"role": "user", "content": "x" * 2000}])
        r = httpx.post(f"{url}/v1/chat/completions", json=big)
        assert_error(r, 413, "request_too_large")

        def chunked():  # no Content-Length: the limit is counted as the body arrives
            data = json.dumps(big).encode()
            for i in range(0, len(data), 256):
                yield data[i : i + 256]

        assert_error(httpx.post(f"{url}/v1/chat/completions", content=chunked()), 413)


def test_full_queue_is_503_with_retry_after(tiny_llama):
    llm = LLM(str(tiny_llama), device="cpu", max_num_seqs=1)
    state = serve_llm(llm, max_waiting=1)
    long = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 250, "ignore_eos": True}

    async def main(url: str) -> tuple[httpx.Response, list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            async with client.stream("POST", "/v1/completions", json={**long, "stream": True}) as r:
                assert r.status_code == 200  # running: the only sequence slot is taken
                queued = asyncio.ensure_future(client.post("/v1/completions", json=long))
                for _ in range(500):
                    if (await client.get("/health")).json()["models"][0]["num_waiting"] == 1:
                        break
                    await asyncio.sleep(0.005)
                refused = await client.post("/v1/completions", json=long)
                async for _ in r.aiter_lines():
                    pass
            return refused, [(await queued).status_code]

    try:
        with running_server(state) as url:
            refused, others = asyncio.run(main(url))
    finally:
        state.models.close_all()
    assert_error(refused, 503, "queue_full")
    assert int(refused.headers["Retry-After"]) >= 1
    assert others == [200]


def test_request_timeout_is_a_504_and_frees_blocks(state, served_llm):
    config = ServerConfig(request_timeout=0.05)
    body = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 250, "ignore_eos": True}
    with running_server(ServerState(state.models, config)) as url:
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        assert_error(r, 504)
        assert r.json()["error"]["type"] == "timeout_error"
    bm = served_llm.engine.block_manager
    deadline = time.monotonic() + 5
    while bm.num_free_blocks != bm.num_blocks:
        assert time.monotonic() < deadline, "the timed-out request still holds KV blocks"
        time.sleep(0.02)


class _FailsMidStream:
    """An engine whose requests fail after their second output (as if the loop died)."""

    def __init__(self, inner):
        self.inner = inner
        self.is_alive = True

    async def generate(self, prompt, params, request_id=None) -> AsyncIterator:
        outputs = self.inner.generate(prompt, params, request_id)
        try:
            for _ in range(2):
                yield await outputs.__anext__()
            raise EngineDeadError("the engine failed: injected fault")
        finally:
            await outputs.aclose()

    async def stats(self):
        return await self.inner.stats()


def test_error_mid_stream_is_an_sse_error_event(state):
    real: ServedLLM = state.models.get(MODEL_NAME, LLM_KIND).handle
    failing = ServedLLM(_FailsMidStream(real.engine), real.tokenizer, real.max_model_len)
    broken = ServerState()
    broken.models.add(ServedModel(MODEL_NAME, LLM_KIND, failing))
    body = chat(max_tokens=50, stream=True, ignore_eos=True)
    with running_server(broken) as url:
        r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.text.split("\n\n") if line]
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["code"] == "engine_dead" and "injected" in error["message"]
        assert set(error) == {"message", "type", "param", "code"}
        assert all("choices" in json.loads(e) for e in events[:-2])
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.APIError, match="injected"):
            for _ in sdk.chat.completions.create(
                model=MODEL_NAME, messages=USER, max_tokens=50, stream=True
            ):
                pass


def test_health_is_503_without_a_live_engine(tiny_llama):
    with running_server(ServerState()) as url:  # nothing loaded
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
    state = serve_llm(LLM(str(tiny_llama), device="cpu"))
    with running_server(state) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        state.models.close_all()  # the engine loop stops
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and "stopped" in r.json()["reason"]
        assert_error(httpx.post(f"{url}/v1/chat/completions", json=chat()), 503, "engine_dead")
