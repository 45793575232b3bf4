"""The server through the official openai SDK: what a client gets equals the offline engine on
the same weights (and, for logprobs, transformers' forward pass)."""

from __future__ import annotations

import asyncio
import copy
import time

import httpx
import openai
import pytest
import torch

from ferrum import SamplingParams

from .conftest import MODEL_NAME

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "The quick brown fox"},
]
IGNORE_EOS = {"ignore_eos": True}  # vLLM's extension, sent through the SDK's extra_body


@pytest.fixture(scope="module")
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)


def greedy(max_tokens: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, **kw)


def engine_idle(base_url: str, timeout_s: float = 5.0) -> dict:
    """/health's view of the model once nothing runs or waits."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = httpx.get(f"{base_url}/health").json()["models"][0]
        if info["num_running"] == 0 and info["num_waiting"] == 0:
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"requests still in the engine: {info}")
        time.sleep(0.02)


def test_models_endpoint_lists_the_served_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME


def test_greedy_chat_equals_offline_chat(client, reference_llm):
    offline = reference_llm.chat(MESSAGES, greedy(12))[0]
    r = client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, temperature=0, max_tokens=12
    )
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == offline.outputs[0].text
    assert r.choices[0].finish_reason == offline.outputs[0].finish_reason
    assert r.usage.prompt_tokens == len(offline.prompt_token_ids)
    assert r.usage.completion_tokens == len(offline.outputs[0].token_ids)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_content_parts_and_every_role(client, reference_llm):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Paris is"},
        {"role": "assistant", "content": "the capital"},
        {"role": "tool", "content": "42", "tool_call_id": "call-1"},
        {"role": "user", "content": "of France"},
    ]
    as_parts = [
        {
            **m,
            "content": [
                {"type": "text", "text": m["content"][:3]},
                {"type": "text", "text": m["content"][3:]},
            ],
        }
        for m in conversation
    ]
    offline = reference_llm.chat(conversation, greedy(10))[0]
    r = client.chat.completions.create(
        model=MODEL_NAME, messages=as_parts, temperature=0, max_tokens=10
    )
    assert r.choices[0].message.content == offline.outputs[0].text
    assert r.usage.prompt_tokens == len(offline.prompt_token_ids)


def test_streamed_chat_format_and_usage(client, reference_llm):
    offline = reference_llm.chat(MESSAGES, greedy(16, ignore_eos=True))[0]
    stream = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=IGNORE_EOS,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == offline.outputs[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert [f for f in finishes if f] == ["length"] and finishes[-1] == "length"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == len(offline.prompt_token_ids)
    assert len({c.id for c in chunks}) == 1


def test_n_choices_with_a_seed_equal_offline(client, reference_llm):
    params = SamplingParams(n=3, temperature=1.0, seed=11, max_tokens=10, ignore_eos=True)
    offline = reference_llm.chat(MESSAGES, params)[0]
    expected = [c.text for c in offline.outputs]
    assert len(set(expected)) > 1  # sampling really differs between the choices
    kw = dict(model=MODEL_NAME, messages=MESSAGES, n=3, seed=11, max_tokens=10)
    r = client.chat.completions.create(**kw, extra_body=IGNORE_EOS)
    assert [c.message.content for c in sorted(r.choices, key=lambda c: c.index)] == expected
    assert r.usage.completion_tokens == 30
    texts = ["", "", ""]
    for chunk in client.chat.completions.create(**kw, stream=True, extra_body=IGNORE_EOS):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == expected


def test_sampling_fields_map_onto_the_engine(client, reference_llm):
    fields = dict(
        temperature=0.8,
        top_p=0.9,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=0.3,
        max_tokens=12,
    )
    extra = dict(top_k=20, min_p=0.02, repetition_penalty=1.2, ignore_eos=True)
    offline = reference_llm.chat(MESSAGES, SamplingParams(**fields, **extra))[0]
    r = client.chat.completions.create(
        model=MODEL_NAME, messages=MESSAGES, extra_body=extra, **fields
    )
    assert r.choices[0].message.content == offline.outputs[0].text
    plain = reference_llm.chat(MESSAGES, SamplingParams(temperature=0.8, seed=3, max_tokens=12))
    assert plain[0].outputs[0].text != offline.outputs[0].text  # the fields did matter


def test_chat_template_kwargs_reach_the_template(state, reference_llm):
    from ferrum.server.llm_service import ServedLLM
    from ferrum.server.registry import LLM_KIND, ServedModel
    from ferrum.server.state import ServerState

    from .conftest import running_server

    real = state.models.get(MODEL_NAME, LLM_KIND).handle
    tokenizer = copy.copy(real.tokenizer)
    tokenizer.chat_template += (  # what Qwen3 does when thinking is switched off
        "{% if enable_thinking is defined and not enable_thinking %}"
        "<think>\n\n</think>\n\n{% endif %}"
    )
    custom = ServerState()
    custom.models.add(ServedModel("t", LLM_KIND, ServedLLM(real.engine, tokenizer, 256)))
    with running_server(custom) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for thinking in (True, False):
            text = tokenizer.apply_chat_template(MESSAGES, True, enable_thinking=thinking)
            ids = tokenizer.encode(text, add_special_tokens=False)
            offline = reference_llm.generate([ids], greedy(6))[0]
            r = sdk.chat.completions.create(
                model="t",
                messages=MESSAGES,
                temperature=0,
                max_tokens=6,
                extra_body={"chat_template_kwargs": {"enable_thinking": thinking}},
            )
            assert r.usage.prompt_tokens == len(ids)
            assert r.choices[0].message.content == offline.outputs[0].text


def test_chat_logprobs_equal_transformers(client, reference_llm, tiny_llama):
    import transformers

    r = client.chat.completions.create(
        model=MODEL_NAME,
        messages=MESSAGES,
        temperature=0,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        extra_body=IGNORE_EOS,
    )
    prompt = reference_llm.render_chat(MESSAGES)
    offline = reference_llm.generate([prompt], greedy(6, ignore_eos=True))[0].outputs[0]
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    with torch.no_grad():
        logits = model(torch.tensor([prompt + offline.token_ids])).logits[0].float()
    ref = logits[len(prompt) - 1 : -1].log_softmax(-1)  # (6, V): the distribution of each step
    tok = reference_llm.tokenizer
    content = r.choices[0].logprobs.content
    assert len(content) == 6
    for step, (entry, token_id) in enumerate(zip(content, offline.token_ids)):
        text = tok.decode([token_id], skip_special_tokens=False)
        assert entry.token == text and entry.bytes == list(text.encode())
        assert entry.logprob == pytest.approx(ref[step, token_id].item(), abs=1e-4)
        top_v, top_i = ref[step].topk(3)
        assert [t.token for t in entry.top_logprobs] == [
            tok.decode([i], skip_special_tokens=False) for i in top_i.tolist()
        ]
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx(top_v.tolist(), abs=1e-4)


def test_stop_strings_cut_the_reply(client, reference_llm):
    full = reference_llm.chat(MESSAGES, greedy(24, ignore_eos=True))[0].outputs[0].text
    stop = full[6:8]
    expected = full[: full.find(stop)]
    for stop_arg in (stop, [stop, "never-seen-zq"]):
        r = client.chat.completions.create(
            model=MODEL_NAME,
            messages=MESSAGES,
            temperature=0,
            max_tokens=24,
            stop=stop_arg,
            extra_body=IGNORE_EOS,
        )
        assert r.choices[0].message.content == expected
        assert r.choices[0].finish_reason == "stop"


def test_completion_prompt_forms_equal_offline(client, reference_llm):
    ids = reference_llm.tokenizer.encode("Paris is")
    forms = [
        ("The quick brown fox", ["The quick brown fox"]),
        (["The quick brown fox", "Paris is"], ["The quick brown fox", "Paris is"]),
        (ids, [ids]),
        ([ids, ids[:2]], [ids, ids[:2]]),
    ]
    for prompt, prompts in forms:
        offline = reference_llm.generate(prompts, greedy(8))
        r = client.completions.create(model=MODEL_NAME, prompt=prompt, max_tokens=8, temperature=0)
        choices = sorted(r.choices, key=lambda c: c.index)
        assert [c.text for c in choices] == [o.outputs[0].text for o in offline]
        assert r.usage.prompt_tokens == sum(len(o.prompt_token_ids) for o in offline)
        assert r.usage.completion_tokens == sum(len(o.outputs[0].token_ids) for o in offline)


def test_completion_echo_and_logprobs(client, reference_llm):
    prompt = "Paris is the capital"
    offline = reference_llm.generate([prompt], greedy(8, ignore_eos=True, logprobs=2))[0]
    echoed = client.completions.create(
        model=MODEL_NAME,
        prompt=prompt,
        max_tokens=8,
        temperature=0,
        echo=True,
        extra_body=IGNORE_EOS,
    )
    assert echoed.choices[0].text == prompt + offline.outputs[0].text
    r = client.completions.create(
        model=MODEL_NAME,
        prompt=prompt,
        max_tokens=8,
        temperature=0,
        logprobs=2,
        extra_body=IGNORE_EOS,
    )
    lp = r.choices[0].logprobs
    expected = offline.outputs[0].logprobs
    tok = reference_llm.tokenizer
    assert lp.tokens == [tok.decode([e.token_id], skip_special_tokens=False) for e in expected]
    assert lp.token_logprobs == pytest.approx([e.logprob for e in expected], abs=1e-5)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    for top, e in zip(lp.top_logprobs, expected):
        assert len(top) <= 2 and max(top.values()) == pytest.approx(e.top[0][1], abs=1e-5)


def test_streamed_completions_equal_non_streamed(client):
    kw = dict(
        model=MODEL_NAME,
        prompt=["The quick", "Paris"],
        n=2,
        seed=5,
        max_tokens=8,
        extra_body=IGNORE_EOS,
    )
    whole = client.completions.create(**kw)
    texts = [""] * 4
    chunks = list(
        client.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in sorted(whole.choices, key=lambda c: c.index)]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 32


def test_64_concurrent_streams_complete_and_free_every_block(base_url, reference_llm):
    conversations = [[{"role": "user", "content": f"Story number {i}: the fox"}] for i in range(64)]
    offline = reference_llm.chat(conversations, greedy(16))

    async def one(aclient: openai.AsyncOpenAI, messages) -> tuple[str, object]:
        stream = await aclient.chat.completions.create(
            model=MODEL_NAME,
            messages=messages,
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            usage = chunk.usage or usage
        return text, usage

    async def main():
        aclient = openai.AsyncOpenAI(
            base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60
        )
        async with aclient:
            return await asyncio.gather(*(one(aclient, m) for m in conversations))

    results = asyncio.run(main())
    for (text, usage), off in zip(results, offline):
        assert text == off.outputs[0].text
        assert usage.prompt_tokens == len(off.prompt_token_ids)
        assert usage.completion_tokens == len(off.outputs[0].token_ids)
    info = engine_idle(base_url)
    assert info["num_free_blocks"] == info["num_blocks"]


@pytest.mark.parametrize("prompt", ["hi", ["hi", "the fox", "Paris"]])
def test_disconnect_mid_stream_aborts_and_frees_blocks(base_url, served_llm, prompt):
    engine = served_llm.engine
    before = engine.generation_tokens_total
    body = {
        "model": MODEL_NAME,
        "prompt": prompt,
        "max_tokens": 240,
        "ignore_eos": True,
        "stream": True,
    }
    with (
        httpx.Client(base_url=base_url) as http,
        http.stream("POST", "/v1/completions", json=body) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    # the connection is closed: the request must stop long before its 240 tokens
    info = engine_idle(base_url)
    assert info["num_free_blocks"] == info["num_blocks"]
    assert engine.generation_tokens_total - before < 240


def test_disconnect_before_a_non_streamed_reply_aborts(base_url, served_llm):
    engine = served_llm.engine
    before = engine.generation_tokens_total
    body = {"model": MODEL_NAME, "prompt": "hi", "max_tokens": 240, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(f"{base_url}/v1/completions", json=body, timeout=httpx.Timeout(5, read=0.1))
    info = engine_idle(base_url)
    assert info["num_free_blocks"] == info["num_blocks"]
    assert engine.generation_tokens_total - before < 240


def test_health_and_metrics(base_url, client, served_llm):
    client.chat.completions.create(model=MODEL_NAME, messages=MESSAGES, max_tokens=4)
    health = httpx.get(f"{base_url}/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok"
    assert {"num_running", "num_waiting", "kv_cache_usage"} <= set(body["models"][0])
    metrics = httpx.get(f"{base_url}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    values = {}
    for line in metrics.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    label = f'{{model_name="{MODEL_NAME}"}}'
    for gauge in (
        "ferrum_num_requests_running",
        "ferrum_num_requests_waiting",
        "ferrum_kv_cache_usage_perc",
        "ferrum_prefix_cache_hit_rate",
        "ferrum_num_preemptions_total",
    ):
        assert gauge + label in values
    engine = served_llm.engine
    assert values["ferrum_prompt_tokens_total" + label] == engine.prompt_tokens_total
    assert values["ferrum_generation_tokens_total" + label] == engine.generation_tokens_total
    for histogram in (
        "ferrum_time_to_first_token_seconds",
        "ferrum_time_per_output_token_seconds",
        "ferrum_e2e_request_latency_seconds",
    ):
        assert values[f"{histogram}_count{label}"] >= 1
        assert values[f"{histogram}_sum{label}"] > 0
