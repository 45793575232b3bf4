"""`ferrum bench MODEL`: the engine in-process against transformers, on the same work, in one run.

After a warm-up batch as wide and long as the throughput phase's, these phases, each repeated
`repeats` times (every figure is then summarized over the repeats):
1. throughput: every request queued at once, the engine batching up to its `max_num_seqs`;
2. a closed-loop sweep: at concurrency c, c requests in flight, the next one added the moment
   one finishes; per-token times give TTFT, TPOT and ITL;
3. the same through the baseline (transformers, static batches of `max_num_seqs`, then of c);
4. on CUDA, the decode ceiling of the model on that card (see ceiling.py).
Each phase gets fresh prompts of the same lengths (`WorkloadSpec.requests(n, phase)`) and starts
with an empty prefix cache, so no phase is served by another's cache; both engines get the same
requests. ferrum is released before the baseline loads, so each has the device to itself.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ferrum.bench.ceiling import CPU_NOTE, Ceiling, decode_ceiling, measure_copy_bandwidth
from ferrum.bench.stats import LevelFigures, LevelResult, RequestTiming
from ferrum.bench.stats import ratio as safe_ratio
from ferrum.bench.workload import BenchRequest, WorkloadSpec, sweep_size
from ferrum.device import Backend
from ferrum.errors import InvalidInputError
from ferrum.sampling_params import SamplingParams

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
DEFAULT_NUM_PROMPTS = 256  # BENCH.md offline-256
# Warm-up: one batch as wide and as long as the throughput phase's (fresh prompts), so that the
# first measured phase pays for no kernel selection, clock ramp or allocator growth: on an H100
# a 16-token warm-up still left transformers' first full batch 1.8x slower than its second.
GREEDY_CHECK_TOKENS = 16  # greedy tokens compared between ferrum and the baseline
BASELINES = ("transformers",)

Progress = Callable[[str], None]


@dataclass
class OfflineOptions:
    """What to measure. `engine_options` are `ferrum.LLM` keyword options."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    random_weights: bool = False
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    num_prompts: int = DEFAULT_NUM_PROMPTS
    concurrency: list[int] = field(default_factory=lambda: list(DEFAULT_CONCURRENCY))
    sweep_prompts: int | None = None  # requests per level (default: see sweep_size)
    repeats: int = 1
    baseline: str | None = None  # "transformers" or None
    engine_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [
            (self.num_prompts >= 1, "--num-prompts must be at least 1"),
            (all(c >= 1 for c in self.concurrency), "--concurrency levels must be at least 1"),
            (self.sweep_prompts is None or self.sweep_prompts >= 1, "--sweep-prompts >= 1"),
            (self.repeats >= 1, "--repeats must be at least 1"),
            (self.baseline in (None, *BASELINES), f"--baseline must be one of {BASELINES}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)

    def sweep_size(self, concurrency: int) -> int:
        return sweep_size(concurrency, self.num_prompts, self.sweep_prompts)


@dataclass
class Comparison:
    """One load level measured on ferrum and (optionally) on the baseline."""

    ours: LevelResult
    baseline: LevelResult | None = None

    @property
    def ratio(self) -> float:
        """ferrum's median output tok/s over the baseline's."""
        if self.baseline is None:
            return float("nan")
        return safe_ratio(self.ours.median("output_tok_s"), self.baseline.median("output_tok_s"))


@dataclass
class OfflineResult:
    options: OfflineOptions
    model: dict  # spec, path, random weights, architecture, parameters, device, dtype
    engine: dict  # the engine's limits as used
    throughput: Comparison
    sweep: list[Comparison]
    baseline: dict | None  # what the baseline was (name, version, attention, cache)
    ceiling: Ceiling | None
    ceiling_note: str | None  # why there is no ceiling
    # ferrum and the baseline gave the same first 16 greedy tokens on a warm-up prompt (None: no
    # baseline, or random weights, which the two initialize differently)
    greedy_match: bool | None = None


def run_offline(opts: OfflineOptions, progress: Progress | None = None) -> OfflineResult:
    """Measure ferrum (and the baseline) on the workload; see the module docstring."""
    say = progress or (lambda _msg: None)
    backend = Backend.resolve(opts.device, opts.dtype)
    bandwidth = None
    if backend.device.type == "cuda":
        say("measuring device copy bandwidth")
        bandwidth = measure_copy_bandwidth(backend.device)
    say(f"loading {opts.model or 'the default model'} (ferrum)")
    from ferrum.llm import LLM

    llm = LLM(
        opts.model,
        device=str(backend.device),
        dtype=str(backend.dtype).removeprefix("torch."),
        random_weights=opts.random_weights,
        **opts.engine_options,
    )
    engine = llm.engine
    workload = opts.workload
    if workload.dataset != "jsonl":
        workload = replace(workload, vocab_size=engine.vocab_size)
    plan = _Plan(opts, workload, llm.tokenizer if not opts.random_weights else None)
    model_info = _model_info(llm, backend)
    engine_info = {
        "max_num_seqs": engine.config.max_num_seqs,
        "max_num_batched_tokens": engine.config.max_num_batched_tokens,
        "max_model_len": engine.max_model_len,
        "block_size": engine.config.block_size,
        "num_kv_blocks": engine.block_manager.num_blocks,
        "prefix_caching": engine.config.enable_prefix_caching,
        "tensor_parallel_size": engine.config.tensor_parallel_size,
    }
    batch = engine.config.max_num_seqs
    warmup = plan.warmup(batch)
    closed_loop(engine, warmup, len(warmup))
    greedy = SamplingParams(temperature=0, max_tokens=GREEDY_CHECK_TOKENS, ignore_eos=True)
    our_tokens = llm.generate([warmup[0].prompt], greedy)[0].outputs[0].token_ids
    say("ferrum: throughput")
    ours_tp = LevelResult("throughput", engine.config.max_num_seqs, [])
    for r in range(opts.repeats):
        engine.block_manager.reset_prefix_cache()
        reqs = plan.requests(opts.num_prompts, f"throughput/{r}")
        ours_tp.runs.append(closed_loop(engine, reqs, len(reqs)))
    sweep = []
    for c in opts.concurrency:
        say(f"ferrum: concurrency {c}")
        level = LevelResult("concurrency", c, [])
        for r in range(opts.repeats):
            engine.block_manager.reset_prefix_cache()
            reqs = plan.requests(opts.sweep_size(c), f"c{c}/{r}")
            level.runs.append(closed_loop(engine, reqs, c))
        sweep.append(Comparison(level))
    ceiling = None
    if bandwidth is not None:
        kv_per_token = engine.runner.kv_bytes_per_block // engine.config.block_size
        ceiling = decode_ceiling(backend.device, bandwidth, engine.model, kv_per_token)
    llm.close()  # frees the cache for the baseline, and stops tensor-parallel workers
    del llm, engine
    _release(backend.device)
    throughput = Comparison(ours_tp)
    baseline_info, their_tokens = None, None
    if opts.baseline == "transformers":
        baseline_info, their_tokens = _run_transformers(
            opts, plan, backend, batch, throughput, sweep, say
        )
    return OfflineResult(
        options=replace(opts, workload=workload),
        model=model_info,
        engine=engine_info,
        throughput=throughput,
        sweep=sweep,
        baseline=baseline_info,
        ceiling=ceiling,
        ceiling_note=None if ceiling is not None else CPU_NOTE,
        greedy_match=None if their_tokens is None else their_tokens == our_tokens,
    )


def _run_transformers(
    opts: OfflineOptions,
    plan: _Plan,
    backend: Backend,
    batch: int,
    throughput: Comparison,
    sweep: list[Comparison],
    say: Progress,
) -> tuple[dict, list[int] | None]:
    """Run every phase through transformers, filling in the comparisons' baselines. Returns
    what the baseline was, and its greedy tokens on the first warm-up prompt (real weights)."""
    from ferrum.bench.baseline import TransformersBaseline
    from ferrum.registry import DEFAULT_LLM

    say("loading the baseline (transformers)")
    base = TransformersBaseline.load(
        opts.model or DEFAULT_LLM, backend.device, backend.dtype, opts.random_weights
    )
    warmup = plan.warmup(batch)
    base.run(warmup, batch)
    tokens = None
    if not opts.random_weights:
        tokens = base.greedy_tokens(warmup[0].prompt, GREEDY_CHECK_TOKENS)  # type: ignore[arg-type]
    say("transformers: throughput")
    level = LevelResult("throughput", batch, [])
    for r in range(opts.repeats):
        level.runs.append(base.run(plan.requests(opts.num_prompts, f"throughput/{r}"), batch))
    throughput.baseline = level
    for comparison in sweep:
        c = int(comparison.ours.value)
        say(f"transformers: concurrency {c}")
        level = LevelResult("concurrency", c, [])
        for r in range(opts.repeats):
            level.runs.append(base.run(plan.requests(opts.sweep_size(c), f"c{c}/{r}"), c))
        comparison.baseline = level
    info = base.describe()
    info["throughput_batch_size"] = batch
    info["sweep_batch_size"] = "the concurrency"
    del base
    _release(backend.device)
    return info, tokens


@dataclass
class _Plan:
    """The run's requests: the workload's, with text prompts turned into token ids."""

    opts: OfflineOptions
    workload: WorkloadSpec
    tokenizer: object | None

    def requests(self, n: int, phase: str) -> list[BenchRequest]:
        reqs = self.workload.requests(n, phase)
        if any(isinstance(r.prompt, str) for r in reqs):
            if self.tokenizer is None:
                raise InvalidInputError(
                    "a text dataset needs the model's tokenizer, which --random-weights has not; "
                    "use --dataset random or shared-prefix"
                )
            encode = self.tokenizer.encode  # type: ignore[attr-defined]
            reqs = [
                BenchRequest(encode(p) if isinstance(p := r.prompt, str) else p, r.output_len)
                for r in reqs
            ]
        return reqs

    def warmup(self, batch: int) -> list[BenchRequest]:
        return self.requests(min(self.opts.num_prompts, batch), "warmup")


def closed_loop(engine, requests: list[BenchRequest], concurrency: int) -> LevelFigures:
    """Keep `concurrency` requests in `engine` (an LLMEngine) until all are done; time each
    token as the step that made it returns."""
    pending = deque(requests)
    active: dict[str, RequestTiming] = {}
    done: list[RequestTiming] = []

    def admit() -> None:
        while pending and len(active) < concurrency:
            req = pending.popleft()
            timing = RequestTiming(start=time.perf_counter(), input_tokens=len(req.prompt))
            params = SamplingParams(temperature=0, max_tokens=req.output_len, ignore_eos=True)
            active[engine.add_request(None, req.prompt, params)] = timing

    start = time.perf_counter()
    try:
        admit()
        while active:
            outputs = engine.step()
            now = time.perf_counter()
            for out in outputs:
                timing = active.get(out.request_id)
                if timing is None:
                    continue
                timing.token_times += [now] * len(out.outputs[0].delta_token_ids)
                if out.finished:
                    timing.end = now
                    timing.output_tokens = len(out.outputs[0].token_ids)
                    done.append(active.pop(out.request_id))
            admit()
    finally:
        for rid in active:
            engine.abort_request(rid)
    return LevelFigures.of(done, time.perf_counter() - start)


def _model_info(llm, backend: Backend) -> dict:
    model = llm.engine.model
    report = llm.load_report
    return {
        "spec": report.spec,
        "path": report.path,
        "random_weights": report.random_weights,
        "architecture": model.config.architecture,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(backend.device),
        "dtype": str(backend.dtype).removeprefix("torch."),
        "load_seconds": report.seconds,
    }


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
