"""Tensor parallelism on the CPU: two gloo processes must produce exactly what one process does.

Each TP engine starts one worker interpreter, so these tests cost a few seconds each; they share
one engine per model where they can.
"""

from __future__ import annotations

import pytest

from ferrum import LLM, SamplingParams
from ferrum.errors import DeviceError, InvalidInputError, ModelNotFoundError

GREEDY = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
PROMPTS = [[1, 2, 3, 4, 5], list(range(7, 47)), [9] * 17, [3]]


def _tokens(llm: LLM, prompts=PROMPTS, params=GREEDY) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in llm.generate(prompts, params)]


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_qwen3"])
def test_two_ranks_equal_one(arch, request):
    """Greedy output, mixed prompt lengths and chunked prefill (16-token budget): TP=2 == TP=1."""
    path = str(request.getfixturevalue(arch))
    options = dict(device="cpu", max_num_batched_tokens=16, kv_cache_memory="64MiB")
    with LLM(path, **options) as one:
        expected = _tokens(one)
        logprobs = one.generate([PROMPTS[1]], SamplingParams(max_tokens=4, logprobs=3))
    with LLM(path, tensor_parallel_size=2, **options) as two:
        assert _tokens(two) == expected
        # the whole vocabulary comes back: top logprobs agree to float32 rounding
        got = two.generate([PROMPTS[1]], SamplingParams(max_tokens=4, logprobs=3))
        a, b = logprobs[0].outputs[0].logprobs, got[0].outputs[0].logprobs
        assert [e.token_id for e in a] == [e.token_id for e in b]
        for x, y in zip(a, b):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
        # the KV cache of each rank holds half the heads: same block count as one process
        assert two.engine.runner.attention_layers[0].num_kv_heads == 1
        # seeded sampling goes through the same sampler on rank 0
        seeded = SamplingParams(max_tokens=12, temperature=0.8, seed=7)
        assert _tokens(two, PROMPTS[:2], seeded) == _tokens(two, PROMPTS[:2], seeded)


def test_overlapped_steps_across_ranks_equal_one_process(tiny_qwen3):
    """Overlapped steps under TP=2: the worker reads the sampled tokens that rank 0 broadcasts
    (greedy, and sampled: the worker must see rank 0's draws, not its own)."""
    path = str(tiny_qwen3)
    options = dict(device="cpu", max_num_batched_tokens=16, kv_cache_memory="64MiB")
    seeded = SamplingParams(max_tokens=12, temperature=0.8, seed=7)
    with LLM(path, **options) as one:
        expected = _tokens(one), _tokens(one, PROMPTS[:2], seeded)
    with LLM(path, tensor_parallel_size=2, async_scheduling=True, **options) as two:
        assert two.engine.overlap
        assert (_tokens(two), _tokens(two, PROMPTS[:2], seeded)) == expected


def test_random_weights_are_the_same_on_every_rank(tiny_llama):
    """Random init is drawn from the engine seed on each rank, so the shards fit together."""
    config = str(tiny_llama / "config.json")
    options = dict(device="cpu", random_weights=True, kv_cache_memory="64MiB")
    with LLM(config, **options) as one:
        expected = _tokens(one, PROMPTS[:2])
    with LLM(config, tensor_parallel_size=2, **options) as two:
        assert _tokens(two, PROMPTS[:2]) == expected


def test_a_worker_that_dies_is_reported_not_waited_for(tiny_llama):
    llm = LLM(str(tiny_llama), device="cpu", tensor_parallel_size=2, kv_cache_memory="64MiB")
    try:
        llm.engine.runner.workers.procs[0].kill()
        llm.engine.runner.workers.procs[0].wait()
        with pytest.raises(DeviceError, match="worker 1 stopped"):
            llm.generate(PROMPTS[:1], GREEDY)
    finally:
        llm.close()


def test_sizes_that_do_not_divide_the_heads_are_refused(tiny_llama):
    with pytest.raises(InvalidInputError, match="does not divide"):
        LLM(str(tiny_llama), device="cpu", tensor_parallel_size=3)


def test_quantization_with_tensor_parallel_is_refused(tiny_llama):
    with pytest.raises(InvalidInputError, match="quantization"):
        LLM(str(tiny_llama), device="cpu", tensor_parallel_size=2, quantization="int8")


def test_missing_model_fails_fast_and_stops_the_workers(tmp_path):
    with pytest.raises(ModelNotFoundError):
        LLM(str(tmp_path / "nope"), device="cpu", tensor_parallel_size=2)


def test_more_gpus_than_present_is_a_clear_error(tiny_llama):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    with pytest.raises(DeviceError):
        LLM(str(tiny_llama), device="cuda", tensor_parallel_size=2)


def test_run_command_with_two_ranks(tiny_llama):
    """`ferrum run MODEL --prompt … -tp 2` prints what one process prints."""
    from typer.testing import CliRunner

    from ferrum.commands import _register, app

    _register()
    args = ["run", str(tiny_llama), "--prompt", "hello world", "--max-tokens", "8"]
    args += ["--temperature", "0", "--device", "cpu"]
    runner = CliRunner()
    one = runner.invoke(app, args)
    two = runner.invoke(app, [*args, "--tensor-parallel-size", "2"])
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    assert two.stdout == one.stdout


def test_bench_with_two_ranks(tiny_llama, tmp_path):
    """`ferrum bench -tp 2` runs the offline workload and reports the size in its JSON."""
    import json

    from typer.testing import CliRunner

    from ferrum.commands import _register, app

    _register()
    out = tmp_path / "bench.json"
    args = ["bench", str(tiny_llama), "--device", "cpu", "--num-prompts", "4"]
    args += ["--input-len", "8", "--output-len", "4", "--concurrency", "2", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--tensor-parallel-size", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["engine"]["tensor_parallel_size"] == 2
    assert report["throughput"]["ferrum"]["summary"]["output_tok_s"]["median"] > 0
