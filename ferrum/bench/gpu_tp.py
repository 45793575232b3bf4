"""Tensor parallelism on one host's GPUs, in one run: TP=1 against TP=N on the same workloads.

    python -m ferrum.bench.gpu_tp [--model llama3.1:8b] [--sizes 1,2] [--out DIR] [--quick]

For each size: the engine (random weights of the real architecture, bf16, CUDA graphs) loads, then
decode-1 (128-token prompt, 256 greedy tokens, EOS ignored, median of 3) and 64 concurrent 1024-in
/ 512-out requests run, as in ferrum.bench.gpu_fastpath. Greedy tokens of the first decode-1 prompt
are compared with TP=1's (bf16: a different reduction order may flip a near-tie, so the length of
the common prefix is reported, not asserted). For TP=N the same engine then runs decode-1 and the
64 requests again with overlapped steps (`async_scheduling`, where rank 0 broadcasts each step's
sampled tokens), and says whether its greedy tokens are unchanged. Then the all-reduce cost: one
all-reduce of a (batch, hidden) bf16 tensor timed across the GPUs in a CUDA graph of
`calls_per_step` of them (2 per layer + 1 for the embedding), at batch 1 and 64 — the communication
time of one decode step. Every figure goes to DIR/gpu_tp.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from ferrum.bench.gpu_fastpath import concurrent64, ferrum_decode1

DECODE_PROMPT, DECODE_CHECK = 128, 64
ALLREDUCE_REPEATS = 20


def _decode_tokens(llm, vocab: int) -> list[int]:
    from ferrum import SamplingParams

    rng = random.Random(11)
    prompt = [rng.randrange(vocab) for _ in range(DECODE_PROMPT)]
    params = SamplingParams(temperature=0, max_tokens=DECODE_CHECK, ignore_eos=True)
    return list(llm.generate([prompt], params)[0].outputs[0].token_ids)


def engine_figures(model: str, size: int, quick: bool) -> dict:
    from ferrum import LLM

    start = time.perf_counter()
    llm = LLM(
        model,
        random_weights=True,
        device="cuda",
        dtype="bfloat16",
        tensor_parallel_size=size,
        max_num_seqs=64,
        max_model_len=4096,
    )
    load_s = time.perf_counter() - start
    vocab = llm.engine.vocab_size
    try:
        tokens = _decode_tokens(llm, vocab)
        out = {
            "tensor_parallel_size": size,
            "load_s": load_s,
            "kv_blocks": llm.engine.block_manager.num_blocks,
            "decode1_tok_s": ferrum_decode1(llm, vocab),
            "greedy_tokens": tokens,
        }
        if not quick:
            out["conc64"] = concurrent64(llm, vocab)
        if size > 1:  # the same engine with overlapped steps (rank 0 broadcasts its samples)
            llm.engine.overlap = True
            llm.engine.block_manager.reset_prefix_cache()  # the prompt computed as the first time
            out["overlapped_tokens_equal"] = _decode_tokens(llm, vocab) == tokens
            out["decode1_tok_s_overlapped"] = ferrum_decode1(llm, vocab)
            if not quick:
                out["conc64_tok_s_overlapped"] = concurrent64(llm, vocab)["tok_s"]
            llm.engine.overlap = False
    finally:
        llm.close()
        del llm
        gc.collect()
        torch.cuda.empty_cache()
    return out


def fp32_tokens(model: str, size: int) -> list[list[int]]:
    """Greedy tokens of a few prompts in float32, where TP=N must equal TP=1 (eager steps: one
    engine of graphs a run, see ferrum.parallel.comm.destroy_group)."""
    from ferrum import LLM, SamplingParams

    rng = random.Random(12)
    with LLM(
        model, random_weights=True, device="cuda", dtype="float32", tensor_parallel_size=size,
        max_model_len=1024, enforce_eager=True,
    ) as llm:  # fmt: skip
        vocab = llm.engine.vocab_size
        prompts = [[rng.randrange(vocab) for _ in range(n)] for n in (5, 77, 300)]
        params = SamplingParams(temperature=0, max_tokens=DECODE_CHECK, ignore_eos=True)
        outs = llm.generate(prompts, params)
    del llm
    gc.collect()
    torch.cuda.empty_cache()
    return [list(o.outputs[0].token_ids) for o in outs]


def _allreduce_rank(rank: int, world: int, port: int, hidden: int, calls: int, queue) -> None:
    from ferrum.parallel.comm import all_reduce, destroy_group, init_group

    device = torch.device(f"cuda:{rank}")
    init_group(rank, world, port, device)
    result = {}
    try:
        for batch in (1, 64):
            x = torch.randn(batch, hidden, device=device, dtype=torch.bfloat16)
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):
                for _ in range(3):
                    all_reduce(x)  # warm-up outside the graph
            torch.cuda.current_stream(device).wait_stream(stream)
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(calls):
                    all_reduce(x)
            times = []
            for _ in range(ALLREDUCE_REPEATS):
                all_reduce(torch.zeros(1, device=device))  # a barrier
                torch.cuda.synchronize(device)
                t = time.perf_counter()
                graph.replay()
                torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t)
            step_ms = statistics.median(times) * 1e3
            result[f"batch{batch}"] = {"step_ms": step_ms, "per_call_us": step_ms * 1e3 / calls}
            del graph
    finally:
        if rank == 0:
            queue.put(result)
        destroy_group()


def allreduce_cost(world: int, hidden: int, calls: int) -> dict:
    import torch.multiprocessing as mp

    from ferrum.parallel.comm import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    port = free_port()
    procs = [
        ctx.Process(target=_allreduce_rank, args=(r, world, port, hidden, calls, queue))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.is_alive():
            p.kill()
    result = queue.get() if not queue.empty() else {"error": "all-reduce timing failed"}
    result["calls_per_step"] = calls
    return result


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama3.1:8b")
    parser.add_argument("--sizes", default="1,2")
    parser.add_argument("--out", default=".")
    parser.add_argument("--quick", action="store_true", help="decode-1 only")
    parser.add_argument(
        "--parity-model", default="qwen3:0.6b", help="float32 greedy TP=N vs TP=1 ('' skips)"
    )
    args = parser.parse_args()
    from ferrum.engine.loading import random_config
    from ferrum.models.config import TransformerConfig

    config = TransformerConfig.from_hf(random_config(args.model))
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict = {
        "model": args.model,
        "random_weights": True,
        "gpu": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())),
        "runs": [],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.parity_model:
        ref = None
        for size in sizes:
            tokens = fp32_tokens(args.parity_model, size)
            ref = ref or tokens
            results[f"fp32_greedy_equal_tp{size}"] = tokens == ref
            print(f"fp32 greedy TP={size} equals TP={sizes[0]}: {tokens == ref}", flush=True)
    for size in sizes:
        print(f"… TP={size}", file=sys.stderr, flush=True)
        run = engine_figures(args.model, size, args.quick)
        results["runs"].append(run)
        print(json.dumps({k: v for k, v in run.items() if k != "greedy_tokens"}), flush=True)
        (out / "gpu_tp.json").write_text(json.dumps(results, indent=1))
    base = results["runs"][0]
    for run in results["runs"]:
        run["greedy_common_prefix"] = common_prefix(run["greedy_tokens"], base["greedy_tokens"])
        run["decode1_ratio"] = run["decode1_tok_s"] / base["decode1_tok_s"]
        if "conc64" in run:
            run["conc64_ratio"] = run["conc64"]["tok_s"] / base["conc64"]["tok_s"]
    calls = 2 * config.num_layers + 1
    for size in sizes:
        if size > 1:
            results[f"allreduce_tp{size}"] = allreduce_cost(size, config.hidden_size, calls)
    (out / "gpu_tp.json").write_text(json.dumps(results, indent=1))
    for run in results["runs"]:
        line = {k: v for k, v in run.items() if k != "greedy_tokens"}
        print(json.dumps(line))
    for key, value in results.items():
        if key.startswith(("allreduce", "fp32")):
            print(key, json.dumps(value))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
