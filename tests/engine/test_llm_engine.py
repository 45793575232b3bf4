"""The engine end to end on tiny random models: parity with transformers, batching, preemption,
prefix caching, stopping, seeds, streaming and cancellation."""

from __future__ import annotations

import pytest
import torch

from ferrum import LLM, SamplingParams
from ferrum.errors import InvalidInputError, PromptTooLongError

PROMPTS = [
    "The quick brown fox",
    "Paris is the capital of",
    "def main():",
    "héllo wörld 🌍 and more text to make this prompt a good deal longer than the others",
]


def hf_greedy(path, prompt_ids: list[int], n: int) -> list[int]:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = model.generate(
        torch.tensor([prompt_ids]),
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
    )
    return out[0, len(prompt_ids) :].tolist()


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_qwen3"])
def model_path(request):
    return request.getfixturevalue(request.param)


# every test runs with steps one after the other and with overlapped steps (the next step
# launched before the host reads the last one's tokens: the GPU default, forced here on CPU)
@pytest.fixture(scope="module", params=[False, True], ids=["sync", "overlap"])
def llm(model_path, request):
    return LLM(
        str(model_path),
        device="cpu",
        dtype="float32",
        block_size=4,
        max_num_batched_tokens=64,
        async_scheduling=request.param,
    )


GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)


def test_greedy_batch_matches_transformers(llm, model_path):
    outs = llm.generate(PROMPTS, GREEDY)
    for prompt, out in zip(PROMPTS, outs):
        ids = llm.tokenizer.encode(prompt)
        assert out.prompt_token_ids == ids
        assert out.outputs[0].token_ids == hf_greedy(model_path, ids, 16), prompt
        assert out.outputs[0].finish_reason == "length"


def test_batch_equals_one_by_one(llm):
    batched = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY)]
    single = [llm.generate([p], GREEDY)[0].outputs[0].token_ids for p in PROMPTS]
    assert batched == single


def test_preemption_under_tiny_kv_budget_changes_nothing(model_path, llm):
    expected = [o.outputs[0].token_ids for o in llm.generate(PROMPTS * 2, GREEDY)]
    per_block = llm.engine.runner.kv_bytes_per_block
    small = LLM(
        str(model_path),
        device="cpu",
        dtype="float32",
        block_size=4,
        kv_cache_memory=per_block * 24,
        max_num_batched_tokens=64,
        async_scheduling=llm.engine.overlap,
    )
    outs = small.generate(PROMPTS * 2, GREEDY)
    assert small.engine.stats().num_preemptions > 0
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert small.engine.block_manager.num_free_blocks == small.engine.block_manager.num_blocks


@pytest.mark.parametrize("overlap", [False, True], ids=["sync", "overlap"])
def test_prefix_caching_on_and_off_identical(model_path, overlap):
    shared = "The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
    prompts = [shared + s for s in ("one", "two", "three")]
    results = []
    for on in (True, False):
        llm = LLM(
            str(model_path), device="cpu", dtype="float32", block_size=4,
            enable_prefix_caching=on, async_scheduling=overlap,
        )  # fmt: skip
        outs = []
        for p in prompts:  # one by one, so later prompts can hit the cache
            outs.append(llm.generate([p], GREEDY)[0])
        results.append([o.outputs[0].token_ids for o in outs])
        hits = llm.engine.stats().prefix_cache_hits
        assert (hits > 0) == on
        if on:
            assert outs[2].metrics.num_cached_tokens > 0
    assert results[0] == results[1]


def test_stop_string_is_never_leaked_while_streaming(llm):
    full = llm.generate(["Paris is the capital of"], GREEDY)[0].outputs[0].text
    assert len(full) > 6
    stop = full[3:6]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, stop=[stop])
    deltas = [o.outputs[0].delta_text for o in llm.stream("Paris is the capital of", params)]
    text = "".join(deltas)
    assert stop not in text
    assert text == full[: full.index(stop)]
    final = llm.generate(["Paris is the capital of"], params)[0].outputs[0]
    assert final.finish_reason == "stop" and final.stop_reason == stop and final.text == text
    with_stop = SamplingParams(
        temperature=0, max_tokens=16, ignore_eos=True, stop=[stop], include_stop_str_in_output=True
    )
    assert llm.generate(["Paris is the capital of"], with_stop)[0].outputs[0].text.endswith(stop)


def test_stop_token_ids_and_eos(llm):
    ids = llm.generate(["def main():"], GREEDY)[0].outputs[0].token_ids
    stop_at = ids[5]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, stop_token_ids=[stop_at])
    out = llm.generate(["def main():"], params)[0].outputs[0]
    assert out.token_ids == ids[: ids.index(stop_at) + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop_at


def test_seed_gives_same_output_whatever_the_batch(llm):
    p = SamplingParams(temperature=1.0, seed=1234, max_tokens=12, ignore_eos=True)
    alone = llm.generate(["The quick brown fox"], p)[0].outputs[0].token_ids
    others = SamplingParams(temperature=1.0, max_tokens=12, ignore_eos=True)
    batch = llm.generate(["The quick brown fox", *PROMPTS], [p] + [others] * len(PROMPTS))
    assert batch[0].outputs[0].token_ids == alone
    other_seed = SamplingParams(temperature=1.0, seed=99, max_tokens=12, ignore_eos=True)
    assert llm.generate(["The quick brown fox"], other_seed)[0].outputs[0].token_ids != alone


def test_n_completions_and_logprobs(llm):
    p = SamplingParams(n=3, temperature=1.0, seed=5, max_tokens=6, ignore_eos=True, logprobs=3)
    out = llm.generate(["The quick brown fox"], p)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1
    for c in out.outputs:
        assert len(c.logprobs) == 6
        for tok, lp in zip(c.token_ids, c.logprobs):
            assert lp.token_id == tok and lp.logprob <= 0 and len(lp.top) == 3
            assert lp.top[0][1] >= lp.logprob - 1e-6


def test_streaming_deltas_join_to_final_text(llm):
    params = SamplingParams(temperature=0.8, seed=3, max_tokens=24, ignore_eos=True)
    outs = list(llm.stream("héllo wörld 🌍", params))
    joined = "".join(o.outputs[0].delta_text for o in outs)
    assert joined == outs[-1].outputs[0].text
    assert outs[-1].finished and sum(len(o.outputs[0].delta_token_ids) for o in outs) == 24


def test_text_decoded_once_at_the_end_equals_the_streamed_text(llm):
    """generate() decodes each completion once when it finishes (no stop string to watch for);
    the text must be what the token-by-token detokenizer streams, multi-byte characters too."""
    for seed in range(4):
        params = SamplingParams(temperature=1.0, seed=seed, max_tokens=20, ignore_eos=True)
        streamed = list(llm.stream("héllo wörld 🌍", params))[-1].outputs[0]
        final = llm.generate(["héllo wörld 🌍"], params)[0].outputs[0]
        assert final.token_ids == streamed.token_ids
        assert final.text == streamed.text


def test_closing_a_stream_aborts_and_frees_blocks(llm):
    bm = llm.engine.block_manager
    stream = llm.stream("The quick brown fox", SamplingParams(max_tokens=50, ignore_eos=True))
    next(stream)
    next(stream)
    assert bm.num_free_blocks < bm.num_blocks
    stream.close()
    assert bm.num_free_blocks == bm.num_blocks
    assert not llm.engine.has_unfinished_requests()


def test_abort_request_frees_blocks(llm):
    engine = llm.engine
    rid = engine.add_request(None, "The quick brown fox", SamplingParams(max_tokens=30))
    engine.step()
    out = engine.abort_request(rid)
    assert out.finished and out.outputs[0].finish_reason == "abort"
    assert engine.block_manager.num_free_blocks == engine.block_manager.num_blocks


def test_bad_inputs_give_clear_errors(llm):
    limit = llm.engine.max_model_len
    with pytest.raises(PromptTooLongError, match="context"):
        llm.generate([[5] * limit], GREEDY)
    with pytest.raises(PromptTooLongError, match="requested"):
        llm.generate([[5] * 10], SamplingParams(max_tokens=limit))
    with pytest.raises(InvalidInputError, match="empty"):
        llm.generate([""], GREEDY)
    with pytest.raises(InvalidInputError, match="token ids"):
        llm.generate([[10**9]], GREEDY)
    with pytest.raises(InvalidInputError):
        SamplingParams(top_p=0)
    with pytest.raises(InvalidInputError, match="unknown engine option"):
        LLM("x", bogus=1)
    assert not llm.engine.has_unfinished_requests()


def test_chat_uses_the_template(llm):
    conv = [{"role": "user", "content": "hi"}]
    ids = llm.render_chat(conv)
    assert llm.tokenizer.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    out = llm.chat(conv, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
    assert out.prompt_token_ids == ids and len(out.outputs[0].token_ids) == 4


def test_weight_only_quantization_is_an_engine_option(model_path):
    from ferrum.quantization import Int8Linear

    q = LLM(str(model_path), device="cpu", quantization="int8")
    assert any(isinstance(m, Int8Linear) for m in q.engine.model.modules())
    out = q.generate(["The quick brown fox"], GREEDY)[0]
    assert len(out.outputs[0].token_ids) == 16
    with pytest.raises(InvalidInputError, match="quantization"):
        LLM(str(model_path), device="cpu", quantization="int3")


def test_overlapped_steps_give_the_same_outputs(model_path):
    """Every way a sequence ends, with and without overlap: length (held out of scheduling
    with its last token in flight), the context limit, stop tokens mid-batch, stop strings,
    penalties (which make the engine wait for the tokens), n > 1 with logprobs."""
    sync, overlap = (
        LLM(str(model_path), device="cpu", dtype="float32", block_size=4, max_model_len=90,
            max_num_batched_tokens=24, async_scheduling=mode)
        for mode in (False, True)
    )  # fmt: skip
    assert overlap.engine.overlap and not sync.engine.overlap
    greedy = sync.generate(PROMPTS, GREEDY)
    stop_at = greedy[1].outputs[0].token_ids[3]
    text = greedy[2].outputs[0].text
    params = [
        SamplingParams(temperature=0, max_tokens=5, ignore_eos=True),
        SamplingParams(temperature=0, max_tokens=30, ignore_eos=True, stop_token_ids=[stop_at]),
        SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, stop=[text[4:7]]),
        SamplingParams(
            temperature=0, max_tokens=None, ignore_eos=True
        ),  # runs into the 90-token context
        SamplingParams(temperature=0, max_tokens=9, ignore_eos=True, repetition_penalty=1.3),
        SamplingParams(n=2, temperature=1.0, seed=7, max_tokens=7, logprobs=2, ignore_eos=True),
    ]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[2], PROMPTS[1], PROMPTS[0], PROMPTS[3]]

    def result(llm):
        outs = llm.generate(prompts, params)
        ends = [
            [(c.token_ids, c.text, c.finish_reason, c.stop_reason) for c in o.outputs] for o in outs
        ]
        # logprobs: the steps group the sequences differently, so float sums may differ a little
        lps = [lp.logprob for o in outs for c in o.outputs for lp in c.logprobs or []]
        return ends, lps

    expected, expected_lps = result(sync)
    assert expected[1][0][2] == "stop" and expected[2][0][2] == "stop"
    assert expected[3][0][2] == "length"
    assert len(expected[3][0][0]) + len(sync.tokenizer.encode(prompts[3])) == 90
    got, lps = result(overlap)
    assert got == expected
    assert lps == pytest.approx(expected_lps, abs=1e-4) and len(lps) == 14
    streamed = [o.outputs[0].delta_token_ids for o in overlap.stream(prompts[1], params[1])]
    assert [t for d in streamed for t in d] == expected[1][0][0]
    bm = overlap.engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks and not overlap.engine.has_unfinished_requests()


def test_async_scheduling_flag(tiny_llama):
    """`--async-scheduling` reaches the engine (forced on here, on CPU) and prints what
    `--no-async-scheduling` prints."""
    from typer.testing import CliRunner

    from ferrum.commands import _register, app
    from ferrum.commands.options import engine_options

    options = engine_options(8, 64, None, None, 0.9, True, async_scheduling=True)
    assert LLM(str(tiny_llama), device="cpu", **options).engine.overlap
    _register()
    args = ["run", str(tiny_llama), "--prompt", "hello world", "--max-tokens", "12"]
    args += ["--temperature", "0", "--device", "cpu"]
    runner = CliRunner()
    on = runner.invoke(app, [*args, "--async-scheduling"])
    off = runner.invoke(app, [*args, "--no-async-scheduling"])
    assert on.exit_code == 0 and off.exit_code == 0, on.output + off.output
    assert on.stdout == off.stdout and on.stdout.strip()
