"""Where a decode step's time goes on one GPU: the kernels of a graph replay, and the host work
around it.

    python -m ferrum.bench.gpu_profile [--models qwen3:0.6b,llama3.1:8b] [--batches 1,64]
                                       [--out DIR]

For each model (random weights of the real architecture, bf16, CUDA graphs):
1. kernels: a torch.profiler trace of REPLAYS graph replays at each batch size (context of
   CONTEXT tokens). Per kernel name: launches and microseconds per step; the sum over kernels
   (the GPU busy time) against the replay's elapsed time (the rest is gaps between kernels).
2. host: one decode-1 request (128-token prompt, 256 greedy tokens; steps not overlapped, so
   each phase is seen whole) with the engine's phases timed per step: schedule, prepare (host
   lists), execute (graph inputs and launch; returns before the GPU is done), the wait for the
   GPU, sample (argmax and the copy back) and the bookkeeping after. A synchronize after
   execute separates launch from GPU time, so the step is a little slower than an unprofiled
   one; the unprofiled step time is reported beside it.

Everything goes to DIR/gpu_profile.json and a summary is printed. Single views instead:
--layer MODEL (what each kernel of a decode-1 layer adds to the step with PDL on, where kernels
overlap and their own times mislead), --between MODEL (the GPU and the host's CUDA calls
between two decode-1 steps), --timeline MODEL (the 64-concurrent workload step by step) and
--prefill MODEL (the kernels of one 8 x 1024-token prompt step and its TFLOP/s).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

from ferrum.bench.gpu_fastpath import release

REPLAYS = 10
CONTEXT = 512
DECODE_PROMPT, DECODE_NEW = 128, 256
TOP_KERNELS = 25
HOST_WINDOW_US = 1500  # between_steps: host calls this long before a step's token are shown


def set_context(graphs, batch: int, context: int, block_size: int) -> None:
    """Inputs of the batch-`batch` graph with every sequence at `context` tokens, each in
    blocks of its own (as in a real batch, so the cache is read from memory), storing nothing."""
    blocks = -(-context // block_size)
    graphs.inputs[2].fill_(-1)  # store nothing
    graphs.inputs[3, :batch].fill_(context)
    total = int(graphs.model.model.layers[0].self_attn.attn.kv_cache.shape[1])
    ids = torch.arange(batch * blocks, dtype=torch.int32, device="cuda") % total
    graphs.tables[:batch, :blocks] = ids.view(batch, blocks)
    graphs.tables_written()


def kernel_profile(graphs, batch: int, block_size: int) -> dict:
    """Kernels of one replay of the batch-`batch` graph with every sequence at CONTEXT tokens."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    set_context(graphs, batch, CONTEXT, block_size)
    graph = graphs.graphs[batch]
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        graph.replay()
    end.record()
    end.synchronize()
    replay_us = start.elapsed_time(end) * 1e3 / REPLAYS
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPLAYS):
            graph.replay()
        torch.cuda.synchronize()
    per_name: dict[str, list[float]] = defaultdict(list)
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            per_name[event.name].append(event.device_time)  # microseconds
    rows = sorted(
        (
            {
                "kernel": name[:120],
                "calls_per_step": len(times) / REPLAYS,
                "us_per_step": sum(times) / REPLAYS,
                "us_per_call": sum(times) / len(times),
            }
            for name, times in per_name.items()
        ),
        key=lambda r: -r["us_per_step"],
    )
    busy = sum(r["us_per_step"] for r in rows)
    return {
        "batch": batch,
        "context": CONTEXT,
        "replay_us": replay_us,
        "kernel_us": busy,
        "gap_us": replay_us - busy,
        "kernels_per_step": sum(r["calls_per_step"] for r in rows),
        "top": rows[:TOP_KERNELS],
        # each kernel's calls of one step in launch order, median over the replays (the k-th
        # GEMV call of a step is one projection of one layer: per-projection times)
        "per_call_us": {
            name[:120]: [
                statistics.median(times[i :: len(times) // REPLAYS])
                for i in range(len(times) // REPLAYS)
            ]
            for name, times in per_name.items()
        },
    }


class PhaseTimer:
    """Wraps engine methods to time each phase of every step."""

    def __init__(self, engine) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        runner, scheduler = engine.runner, engine.scheduler
        self._wrap(scheduler, "schedule", "schedule")
        self._wrap(runner, "prepare", "prepare")
        self._wrap(scheduler, "finish_step", "finish_step")
        execute = runner.execute

        def timed_execute(step):
            t0 = time.perf_counter()
            out = execute(step)
            t1 = time.perf_counter()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times["execute_launch"].append(t1 - t0)
            self.times["gpu_wait"].append(time.perf_counter() - t1)
            return out

        runner.execute = timed_execute
        self._wrap(runner.sampler, "sample", "sample")
        step = engine.step

        def timed_step():
            t0 = time.perf_counter()
            out = step()
            self.times["step"].append(time.perf_counter() - t0)
            return out

        engine.step = timed_step

    def _wrap(self, obj, name: str, key: str) -> None:
        fn = getattr(obj, name)

        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.times[key].append(time.perf_counter() - t0)
            return out

        setattr(obj, name, wrapper)

    def summary(self) -> dict:
        med = {k: statistics.median(v) * 1e6 for k, v in self.times.items() if v}
        named = sum(v for k, v in med.items() if k != "step")
        med["other"] = med.get("step", 0.0) - named  # detokenize, stop checks, outputs
        return {k: round(v, 1) for k, v in med.items()}


def host_profile(llm, vocab: int) -> dict:
    from ferrum import SamplingParams

    rng = random.Random(3)
    params = SamplingParams(temperature=0, max_tokens=DECODE_NEW, ignore_eos=True)
    prompt = [rng.randrange(vocab) for _ in range(DECODE_PROMPT)]
    llm.generate([prompt], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    plain = llm.generate([prompt], params)[0].metrics.decode_tokens_per_second
    engine = llm.engine
    timer = PhaseTimer(engine)
    try:
        llm.generate([prompt], params)
    finally:  # the wrappers are instance attributes: dropping them restores the methods
        for obj in (engine, engine.runner, engine.scheduler, engine.runner.sampler):
            for name in ("step", "execute", "prepare", "schedule", "finish_step", "sample"):
                obj.__dict__.pop(name, None)
    return {"unprofiled_step_us": 1e6 / plain, "phases_us_median": timer.summary()}


def profile_model(alias: str, batches: list[int], pdl: bool = True) -> dict:
    from ferrum import LLM

    llm = LLM(
        alias,
        random_weights=True,
        device="cuda",
        dtype="bfloat16",
        max_num_seqs=max(batches),
        max_model_len=4096,
        async_scheduling=False,  # the phases are those of one step at a time
        pdl=pdl,  # off: kernels do not overlap, so each one's time is its own
    )
    try:
        engine = llm.engine
        result: dict = {"host": host_profile(llm, engine.vocab_size), "kernels": []}
        for batch in batches:
            result["kernels"].append(
                kernel_profile(engine.runner.graphs, batch, engine.config.block_size)
            )
    finally:
        llm.close()
        del llm
        release()
    return result


def step_timeline(alias: str, seqs: int, prompt: int, new: int, overlap: bool) -> dict:
    """The 64-concurrent workload step by step: how long the steps with prompt tokens take in
    all; for the full-batch decode steps, the median wall time split into launch, wait for the
    GPU and the rest on the host, and the GPU time of each step in the run (CUDA events), against
    a replay of the graph afterwards (which read less KV than the run: see graph_replay_ms)."""
    from ferrum import LLM, SamplingParams
    from ferrum.bench.gpu_fastpath import graph_replay_ms, graph_step_events
    from ferrum.engine.model_runner import PendingStep

    llm = LLM(
        alias, random_weights=True, device="cuda", dtype="bfloat16", max_num_seqs=seqs,
        max_num_batched_tokens=8192, gpu_memory_utilization=0.85, async_scheduling=overlap,
    )  # fmt: skip
    engine = llm.engine
    try:
        rng = random.Random(5)
        vocab = engine.vocab_size
        prompts = [[rng.randrange(vocab) for _ in range(prompt)] for _ in range(seqs)]
        params = SamplingParams(temperature=0, max_tokens=new, ignore_eos=True)
        llm.generate(prompts[:2], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))
        engine.block_manager.reset_prefix_cache()
        # per step: wall s, prompt tokens, decode rows, s in launch, s waiting for the GPU
        steps: list[tuple[float, int, int, float, float]] = []
        schedule, step, launch = engine.scheduler.schedule, engine.step, engine.runner.launch
        run, result = engine.runner.run, PendingStep.result
        last: list = [0, 0]
        spent = {"launch": 0.0, "wait": 0.0}

        def recorded_schedule():
            out = schedule()
            rows = [item.num_tokens for item in out.scheduled]
            last[:] = [sum(n for n in rows if n > 1), sum(1 for n in rows if n == 1)]
            return out

        def timed(fn, key):
            def call(*args):
                t0 = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    spent[key] += time.perf_counter() - t0

            return call

        def timed_step():
            spent.update(launch=0.0, wait=0.0)
            t0 = time.perf_counter()
            out = step()
            steps.append((time.perf_counter() - t0, *last, spent["launch"], spent["wait"]))
            return out

        engine.scheduler.schedule, engine.step = recorded_schedule, timed_step
        engine.runner.launch = timed(launch, "launch")
        engine.runner.run = timed(run, "launch")  # not overlapped: launch and wait in one
        PendingStep.result = timed(result, "wait")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            with graph_step_events(engine.runner.graphs) as events:
                llm.generate(prompts, params)
        finally:
            PendingStep.result = result
        wall = time.perf_counter() - t0
        engine.scheduler.__dict__.pop("schedule", None)
        engine.__dict__.pop("step", None)
        engine.runner.__dict__.pop("launch", None)
        engine.runner.__dict__.pop("run", None)
        torch.cuda.synchronize()
        full_batch = [(a, b) for n, a, b in events if n == seqs]
        in_run = [a.elapsed_time(b) for a, b in full_batch]
        period = [a.elapsed_time(c) for (a, _), (c, _) in zip(full_batch, full_batch[1:])]
        marks = (
            [round(in_run[int(f * (len(in_run) - 1))], 2) for f in (0, 0.25, 0.5, 0.75, 1)]
            if in_run
            else []
        )
        prefill = [t[0] for t in steps if t[1]]
        full = [t for t in steps if not t[1] and t[2] == seqs]
        decode = [t[0] for t in full]

        def median_ms(values: list[float]) -> float | None:
            return statistics.median(values) * 1e3 if values else None

        return {
            "overlapped": overlap,
            "wall_s": wall,
            "tok_s": seqs * new / wall,
            "steps": len(steps),
            "steps_with_prompt_tokens": len(prefill),
            "prompt_steps_s": sum(prefill),
            "full_decode_steps": len(decode),
            "full_decode_steps_s": sum(decode),
            "decode_step_ms_median": median_ms(decode),
            "decode_step_ms_p90": sorted(decode)[int(0.9 * len(decode))] * 1e3 if decode else None,
            "decode_launch_ms_median": median_ms([t[3] for t in full]),
            "decode_wait_ms_median": median_ms([t[4] for t in full]),
            "decode_host_rest_ms_median": median_ms([t[0] - t[3] - t[4] for t in full]),
            "graph_in_run_ms_median": statistics.median(in_run) if in_run else None,
            "graph_period_ms_median": statistics.median(period) if period else None,
            "graph_in_run_ms_at_0_25_50_75_100pct": marks,
            "graph_replay_after_ms": graph_replay_ms(engine.runner.graphs, seqs),
        }
    finally:
        llm.close()
        del llm
        release()


def prefill_profile(alias: str, seqs: int = 8, prompt: int = 1024) -> dict:
    """Kernels of one prompt step of `seqs` prompts of `prompt` tokens (the 64-concurrent
    workload's prefill steps: 8 x 1024 = 8192 tokens), by total GPU time, and the step's
    achieved TFLOP/s (2 x parameters per token, plus causal attention)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from ferrum import LLM, SamplingParams

    llm = LLM(
        alias, random_weights=True, device="cuda", dtype="bfloat16", max_num_seqs=seqs,
        max_num_batched_tokens=seqs * prompt, gpu_memory_utilization=0.85,
    )  # fmt: skip
    rng = random.Random(6)
    vocab = llm.engine.vocab_size
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)

    def prompts() -> list[list[int]]:
        return [[rng.randrange(vocab) for _ in range(prompt)] for _ in range(seqs)]

    llm.generate(prompts(), params)  # compiles
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    llm.generate(prompts(), params)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        llm.generate(prompts(), params)
        torch.cuda.synchronize()
    model = llm.engine.model
    cfg = model.config
    # the layers' weights (the embedding is a lookup; the lm_head runs on one row a prompt)
    heads = 1 if cfg.tie_word_embeddings else 2
    params_count = (
        sum(p.numel() for p in model.parameters()) - heads * cfg.vocab_size * cfg.hidden_size
    )
    attention = 2 * 2 * prompt * prompt / 2 * cfg.num_heads * cfg.head_dim * cfg.num_layers
    flops = seqs * (2 * params_count * prompt + attention)
    llm.close()
    del llm
    release()
    per_name: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type == DeviceType.CUDA:
            per_name[event.name[:90]] += event.device_time
    busy = sum(per_name.values())
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:TOP_KERNELS]
    return {
        "tokens": seqs * prompt,
        "wall_ms": wall * 1e3,
        "kernel_ms": busy / 1e3,
        "tflops_on_wall": flops / wall / 1e12,
        "top": [{"kernel": name, "ms": us / 1e3, "share": us / busy} for name, us in top],
    }


def between_steps(alias: str, steps: int = 48) -> dict:
    """The GPU between two decode-1 steps as the engine runs them (overlapped, PDL): every GPU
    event from the end of one step's greedy token to the start of the next step's first
    projection, with its offset and length, and the host's CUDA runtime calls from
    HOST_WINDOW_US before that token (negative offsets: issued while the step ran), for the last
    few steps of a traced request."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from ferrum import LLM, SamplingParams

    llm = LLM(alias, random_weights=True, device="cuda", dtype="bfloat16", max_num_seqs=4)
    params = SamplingParams(temperature=0, max_tokens=steps, ignore_eos=True)
    prompt = list(range(1000, 1128))
    llm.generate([prompt], params)  # warm-up
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        llm.generate([prompt], params)
        torch.cuda.synchronize()
    llm.close()
    events = sorted(
        (e.time_range.start, e.time_range.end, e.name)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA
    )
    # the host's CUDA runtime calls (launches, copies, waits), on the same clock
    runtime = sorted(
        (e.time_range.start, e.time_range.end, "host: " + e.name)
        for e in prof.events()
        if e.device_type == DeviceType.CPU and e.name.startswith("cuda")
    )
    # the graph's last kernel: the one-row argmax after the lm_head (or cuBLAS's lm_head)
    heads = [i for i, e in enumerate(events) if e[2].startswith(("_argmax_kernel", "nvjet"))]
    gaps, shown = [], []
    for a, b in zip(heads, heads[1:], strict=False):
        first = next((j for j in range(a + 1, b) if "skinny" in events[j][2]), None)
        if first is None:
            continue
        end = events[a][1]
        gaps.append(events[first][0] - end)
        between = events[a + 1 : first]
        # the host calls from a step before the token to the next step's first projection
        lo, hi = end - HOST_WINDOW_US, events[first][0]
        between += [e for e in runtime if lo <= e[0] <= hi]
        shown.append([(round(s - end, 1), round(t - s, 1), n[:60]) for s, t, n in sorted(between)])
    result = {
        "model": alias,
        "token_to_next_projection_us_median": statistics.median(gaps) if gaps else None,
        "last_steps": shown[-3:],
    }
    del llm
    release()
    return result


def layer_advance(kernels: list[tuple[float, float, str]], layers: int) -> list[dict]:
    """Where a decode layer's time goes when its kernels overlap (PDL): `kernels` are one step's
    (start, end, name) in launch order. Each kernel's advance is how far its end moves past the
    latest end before it (the time it adds to the step); a kernel's own duration says little
    once the next one starts inside it. Median per kernel of the layer, over the layers but the
    first and last two; the layer is the shortest period of kernel names that repeats."""
    names = [name for _, _, name in kernels]
    first = 1  # the embedding's kernel (or lookup) comes before the first layer
    period = 0
    if layers >= 5:  # the median skips the first and last two
        period = next(
            (p for p in range(1, (len(names) - first) // layers + 1)
             if all(names[first + i] == names[first + i + p] for i in range(p * (layers - 1)))),
            0,
        )  # fmt: skip
    if period == 0:
        raise ValueError("no repeating layer of kernels in the step")
    advance, latest = [], float("-inf")
    for start, end, _ in kernels:
        advance.append(end - max(latest, start))
        latest = max(latest, end)
    rows = []
    for k in range(period):
        picks = [first + layer * period + k for layer in range(2, layers - 2)]
        rows.append({
            "kernel": names[first + k][:60],
            "advance_us": statistics.median(advance[i] for i in picks),
            "duration_us": statistics.median(kernels[i][1] - kernels[i][0] for i in picks),
            "starts_before_previous_ends_us": statistics.median(
                kernels[i - 1][1] - kernels[i][0] for i in picks
            ),
        })  # fmt: skip
    return rows


def layer_profile(alias: str, context: int = 256) -> dict:
    """layer_advance() of one decode-1 graph replay at `context` tokens, PDL on."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from ferrum import LLM

    llm = LLM(alias, random_weights=True, device="cuda", dtype="bfloat16", max_num_seqs=1,
              max_model_len=4096)  # fmt: skip
    try:
        graphs = llm.engine.runner.graphs
        set_context(graphs, 1, context, llm.engine.config.block_size)
        graph = graphs.graphs[1]
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                graph.replay()
            torch.cuda.synchronize()
        kernels = sorted(
            (e.time_range.start, e.time_range.end, e.name)
            for e in prof.events()
            if e.device_type == DeviceType.CUDA
        )
        per_step = len(kernels) // 3
        step = kernels[per_step : 2 * per_step]  # the middle replay
        rows = layer_advance(step, len(llm.engine.model.model.layers))
        return {
            "model": alias, "context": context, "step_us": step[-1][1] - step[0][0],
            "layer_us": sum(r["advance_us"] for r in rows), "kernels": rows,
        }  # fmt: skip
    finally:
        llm.close()
        del llm
        release()


def print_summary(results: dict) -> None:
    for alias, entry in results["models"].items():
        host = entry["host"]
        print(f"\n== {alias}: decode-1 step {host['unprofiled_step_us']:.0f} us unprofiled")
        print("   host phases (us, median):", host["phases_us_median"])
        for k in entry["kernels"]:
            print(
                f"   batch {k['batch']} ctx {k['context']}: replay {k['replay_us']:.0f} us, "
                f"kernels {k['kernel_us']:.0f} us ({k['kernels_per_step']:.0f} launches), "
                f"gaps {k['gap_us']:.0f} us"
            )
            for r in k["top"][:15]:
                print(
                    f"     {r['us_per_step']:8.1f} us {r['calls_per_step']:5.0f}x "
                    f"{r['us_per_call']:7.2f}  {r['kernel'][:80]}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen3:0.6b,llama3.1:8b")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--out", default=".")
    ap.add_argument(
        "--no-pdl", dest="pdl", action="store_false",
        help="launch without programmatic dependent launch (each kernel's own time)",
    )  # fmt: skip
    ap.add_argument("--between", default="", help="model: the GPU work between two decode-1 steps")
    ap.add_argument(
        "--rope-apart", action="store_true",
        help="q/k norm, rope and the K/V store as their own kernel before decode attention",
    )  # fmt: skip
    ap.add_argument(
        "--timeline", default="", help="model: only the 64-concurrent step timeline of it"
    )
    ap.add_argument("--prefill", default="", help="model: the kernels of one 8 x 1024 prompt step")
    ap.add_argument(
        "--layer", default="", help="model: what each kernel of a decode-1 layer adds (PDL on)"
    )
    args = ap.parse_args()
    if args.layer:
        entry = layer_profile(args.layer)
        print(f"{args.layer}: step {entry['step_us']:.1f} us, a layer {entry['layer_us']:.1f} us")
        for row in entry["kernels"]:
            early = row["starts_before_previous_ends_us"]
            print(f"  +{row['advance_us']:6.2f} us  (runs {row['duration_us']:6.2f} us, "
                  f"starts {early:6.2f} us early)  {row['kernel']}")  # fmt: skip
        return
    if args.prefill:
        entry = prefill_profile(args.prefill)
        print({k: round(v, 2) for k, v in entry.items() if k != "top"})
        for row in entry["top"]:
            print(f"  {row['ms']:8.2f} ms  {row['share']:6.1%}  {row['kernel']}")
        return
    if args.between:
        entry = between_steps(args.between)
        print("median greedy token -> next step's first projection (us):",
              entry["token_to_next_projection_us_median"])  # fmt: skip
        for step in entry["last_steps"]:
            print("  step gap:")
            for offset, length, name in step:
                print(f"    +{offset:7.1f} us  {length:6.1f} us  {name}")
        return
    if args.rope_apart:
        from ferrum.layers import triton_attention

        triton_attention.FUSED_DECODE = False
    if args.timeline:
        for overlap in (True, False):
            entry = step_timeline(args.timeline, 64, 1024, 512, overlap)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()})
        return
    batches = [int(b) for b in args.batches.split(",")]
    results: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    results["models"] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for alias in args.models.split(","):
        results["models"][alias] = profile_model(alias, batches, args.pdl)
        (out / "gpu_profile.json").write_text(json.dumps(results, indent=1))
    print_summary(results)


if __name__ == "__main__":
    main()
