"""`ferrum bench`: ferrum against the alternative a user would pick, in one run.

    ferrum bench MODEL [--baseline transformers]   LLM engine in-process (ferrum.bench.offline)
    ferrum bench --url http://HOST:PORT/v1         any OpenAI-compatible server (bench.online)
    ferrum bench --task asr|embed|tts [MODEL]      transcription, embeddings, speech against
                                                   their baselines (ferrum.bench.tasks)

Tables go to stdout, progress to stderr; `--json` and `--plot` write every figure to files.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ferrum.commands import app
from ferrum.commands.options import (
    AsyncScheduling,
    Device,
    Dtype,
    EnforceEager,
    GpuMemoryUtilization,
    KvCacheMemory,
    MaxBatchedTokens,
    MaxModelLen,
    MaxNumSeqs,
    PrefixCaching,
    Quantization,
    TensorParallelSize,
    engine_options,
)

if TYPE_CHECKING:
    from rich.console import Console

    from ferrum.bench.modality import Say
    from ferrum.bench.tasks import TaskOptions

DEFAULT_LENGTHS = "100:1024"  # BENCH.md offline-256: prompt and output lengths
DEFAULT_CONCURRENCY = "1,4,16,64"
DEFAULT_TASK_REPEATS = 3  # BENCH.md: asr, embed and tts figures are medians of 3 timed passes


@app.command("bench")
def bench(
    model: Annotated[
        str | None,
        typer.Argument(
            help="Alias, hub id, directory, .gguf or (with --random-weights) config.json; "
            "with --url, the served model name (default: the server's first); with --task "
            "asr/embed/tts, the Whisper model, embedding model or Piper voice (default: the "
            "embedded one)."
        ),
    ] = None,
    task: Annotated[
        str, typer.Option("--task", help="llm | asr | embed | tts: what to measure.")
    ] = "llm",
    audio: Annotated[
        list[str] | None,
        typer.Option(
            "--audio", help="asr: a speech recording (repeatable; default: espeak-ng speech)."
        ),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option("--seconds", help="asr: tile each recording to this length (default 300)."),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="asr: chunks decoded at once, batched rows (default 8)."),
    ] = None,
    num_items: Annotated[
        int | None,
        typer.Option(
            "--num-items", help="embed: sentences (default 2000); tts: sentences spoken (≤ 10)."
        ),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="Benchmark a running OpenAI-compatible server (…/v1)."),
    ] = None,
    num_prompts: Annotated[
        int, typer.Option("--num-prompts", help="Requests of the throughput / open-loop runs.")
    ] = 256,
    input_len: Annotated[
        str, typer.Option("--input-len", help="Prompt tokens: N, or LOW:HIGH drawn uniformly.")
    ] = DEFAULT_LENGTHS,
    output_len: Annotated[
        str, typer.Option("--output-len", help="Output tokens (EOS ignored): N or LOW:HIGH.")
    ] = DEFAULT_LENGTHS,
    seed: Annotated[int, typer.Option("--seed", help="Seed of lengths and prompts.")] = 0,
    dataset: Annotated[
        str, typer.Option("--dataset", help="random | shared-prefix | jsonl")
    ] = "random",
    dataset_path: Annotated[
        str | None, typer.Option("--dataset-path", help='JSONL file, one {"prompt": …} a line.')
    ] = None,
    prefix_len: Annotated[
        int, typer.Option("--prefix-len", help="Shared prefix tokens (shared-prefix dataset).")
    ] = 256,
    vocab_size: Annotated[
        int | None,
        typer.Option("--vocab-size", help="Random token ids are drawn below this (--url only)."),
    ] = None,
    concurrency: Annotated[
        str | None,
        typer.Option("--concurrency", help=f"Closed-loop levels (default {DEFAULT_CONCURRENCY})."),
    ] = None,
    sweep_prompts: Annotated[
        int | None,
        typer.Option(
            "--sweep-prompts", help="Requests per concurrency level (default max(8, 4×c)≤N)."
        ),
    ] = None,
    request_rate: Annotated[
        str | None,
        typer.Option("--request-rate", help="Open-loop Poisson rates, req/s (--url): 1,4,inf."),
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", help="Cap in flight in the open loop.")
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option("--repeats", help="Runs of every level (llm: 1) or timed passes (others: 3)."),
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Uncounted requests first (--url).")] = 4,
    max_error_rate: Annotated[
        float, typer.Option("--max-error-rate", help="Exit 1 above this failed fraction.")
    ] = 0.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per request (--url).")] = 300,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="llm: transformers to run it too, same work. asr/embed/tts: none, or names "
            "(default: every baseline of the task).",
        ),
    ] = None,
    random_weights: Annotated[
        bool, typer.Option("--random-weights", help="The architecture, randomly initialized.")
    ] = False,
    json_path: Annotated[
        str | None, typer.Option("--json", help="Write every figure here.")
    ] = None,
    plot_path: Annotated[
        str | None, typer.Option("--plot", help="Write a PNG of throughput and latency.")
    ] = None,
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_num_seqs: MaxNumSeqs = 64,
    max_num_batched_tokens: MaxBatchedTokens = 2048,
    max_model_len: MaxModelLen = None,
    kv_cache_memory: KvCacheMemory = None,
    gpu_memory_utilization: GpuMemoryUtilization = 0.9,
    prefix_caching: PrefixCaching = True,
    enforce_eager: EnforceEager = False,
    async_scheduling: AsyncScheduling = None,
    quantization: Quantization = None,
    tensor_parallel_size: TensorParallelSize = 1,
) -> None:
    """Measure LLM throughput and latency (TTFT, TPOT, ITL), against transformers or a server;
    or, with --task, transcription, embeddings or speech against their baselines."""
    from rich.console import Console

    from ferrum.bench.environment import describe
    from ferrum.bench.tasks import TaskOptions, check_task
    from ferrum.errors import InvalidInputError

    out, err = Console(), Console(stderr=True)
    say = lambda msg: err.print(f"[dim]… {msg}[/]")  # noqa: E731
    command = shlex.join(["ferrum", *sys.argv[1:]])
    task = check_task(task)
    if task != "llm":
        if url or plot_path or random_weights:
            raise InvalidInputError("--url, --plot and --random-weights are for --task llm")
        options = TaskOptions(
            task=task,
            model=model,
            device=device,
            dtype=dtype,
            repeats=DEFAULT_TASK_REPEATS if repeats is None else repeats,
            baseline=baseline,
            audio=tuple(audio or ()),
            seconds=seconds,
            batch_size=batch_size,
            num_items=num_items,
            seed=seed,
        )
        _bench_task(options, json_path, command, out, say)
        return
    if audio or seconds is not None or batch_size is not None or num_items is not None:
        raise InvalidInputError("--audio, --seconds, --batch-size and --num-items need a --task")
    repeats = 1 if repeats is None else repeats
    from ferrum.bench.workload import LengthRange, WorkloadSpec

    workload = WorkloadSpec(
        dataset=dataset,
        input_len=LengthRange.parse(input_len, "--input-len"),
        output_len=LengthRange.parse(output_len, "--output-len"),
        seed=seed,
        prefix_len=prefix_len,
        dataset_path=dataset_path,
        **({"vocab_size": vocab_size} if vocab_size is not None else {}),
    )
    levels = _ints(concurrency, "--concurrency") if concurrency else []
    if url is None:
        if request_rate or max_concurrency is not None:
            raise InvalidInputError("--request-rate and --max-concurrency need --url")
        from ferrum.bench.offline import OfflineOptions, run_offline
        from ferrum.bench.report import offline_json, plot_offline, print_offline, write_json

        options = OfflineOptions(
            model=model,
            device=device,
            dtype=dtype,
            random_weights=random_weights,
            workload=workload,
            num_prompts=num_prompts,
            concurrency=levels or _ints(DEFAULT_CONCURRENCY, "--concurrency"),
            sweep_prompts=sweep_prompts,
            repeats=repeats,
            baseline=None if baseline in (None, "none") else baseline,
            engine_options=engine_options(
                max_num_seqs,
                max_num_batched_tokens,
                max_model_len,
                kv_cache_memory,
                gpu_memory_utilization,
                prefix_caching,
                enforce_eager=enforce_eager,
                async_scheduling=async_scheduling,
                quantization=quantization,
                tensor_parallel_size=tensor_parallel_size,
            ),
        )
        result = run_offline(options, say)
        env = describe()
        print_offline(result, env, out)
        if json_path:
            write_json(offline_json(result, env, command), json_path)
        if plot_path:
            plot_offline(result, plot_path)
        return
    if baseline not in (None, "none") or random_weights:
        raise InvalidInputError("--baseline and --random-weights are for the in-process bench")
    from ferrum.bench.online import OnlineOptions, run_online
    from ferrum.bench.report import online_json, plot_online, print_online, write_json

    rates = _rates(request_rate) if request_rate else []
    online = OnlineOptions(
        url=url,
        model=model,
        workload=workload,
        num_prompts=num_prompts,
        sweep_prompts=sweep_prompts,
        concurrency=levels or ([] if rates else _ints(DEFAULT_CONCURRENCY, "--concurrency")),
        request_rates=rates,
        max_concurrency=max_concurrency,
        warmup=warmup,
        repeats=repeats,
        timeout_s=timeout,
    )
    result = run_online(online, say)
    env = describe()
    print_online(result, env, out)
    if json_path:
        write_json(online_json(result, env, command), json_path)
    if plot_path:
        plot_online(result, plot_path)
    if result.error_rate > max_error_rate:
        raise InvalidInputError(
            f"{result.num_errors} of {result.num_requests} requests failed "
            f"({result.error_rate:.1%}), above --max-error-rate {max_error_rate:g}"
        )


def _bench_task(
    options: TaskOptions, json_path: str | None, command: str, out: Console, say: Say
) -> None:
    """`--task asr|embed|tts`: run it, print the table, write the JSON."""
    from ferrum.bench.environment import describe
    from ferrum.bench.report import print_task, task_json, write_json
    from ferrum.bench.tasks import run_task

    result = run_task(options, say)
    env = describe()
    print_task(result, env, out)
    if json_path:
        write_json(task_json(result, env, command), json_path)


def _ints(text: str, flag: str) -> list[int]:
    from ferrum.errors import InvalidInputError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise InvalidInputError(f"{flag} must be positive integers separated by commas: {text!r}")
    return values


def _rates(text: str) -> list[float]:
    from ferrum.errors import InvalidInputError

    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) <= 0:
        raise InvalidInputError(f"--request-rate must be positive numbers or inf: {text!r}")
    return values
