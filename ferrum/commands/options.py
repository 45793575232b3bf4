"""Flags shared by the commands that run the LLM engine (run, serve, bench), declared once."""

from __future__ import annotations

from typing import Annotated

import typer

Model = Annotated[
    str | None,
    typer.Argument(help="Alias (smollm2, qwen3:0.6b, …), hub repo id, directory or .gguf file."),
]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto | bfloat16 | float16 | float32")]
MaxNumSeqs = Annotated[int, typer.Option("--max-num-seqs", help="Sequences batched per step.")]
MaxBatchedTokens = Annotated[
    int, typer.Option("--max-num-batched-tokens", help="Tokens per forward (prefill chunk budget).")
]
MaxModelLen = Annotated[
    int | None, typer.Option("--max-model-len", help="Context length (default: the model's).")
]
KvCacheMemory = Annotated[
    str | None, typer.Option("--kv-cache-memory", help="KV cache size on CPU, e.g. 2GiB.")
]
GpuMemoryUtilization = Annotated[
    float, typer.Option("--gpu-memory-utilization", help="Fraction of GPU memory to use.")
]
PrefixCaching = Annotated[
    bool, typer.Option("--prefix-caching/--no-prefix-caching", help="Reuse KV of shared prefixes.")
]
Quantization = Annotated[
    str | None, typer.Option("--quantization", help="Weight-only int8 | int4 (CPU).")
]
EnforceEager = Annotated[
    bool, typer.Option("--enforce-eager", help="GPU: no CUDA graphs for decode steps.")
]
AsyncScheduling = Annotated[
    bool | None,
    typer.Option(
        "--async-scheduling/--no-async-scheduling",
        help="Overlap each step's host work with the device's previous step (default: on CUDA).",
    ),
]
TensorParallelSize = Annotated[
    int,
    typer.Option(
        "--tensor-parallel-size", "-tp", help="Split the model across N GPUs (or CPU processes)."
    ),
]


def engine_options(
    max_num_seqs: int,
    max_num_batched_tokens: int,
    max_model_len: int | None,
    kv_cache_memory: str | None,
    gpu_memory_utilization: float,
    prefix_caching: bool,
    enforce_eager: bool = False,
    quantization: str | None = None,
    tensor_parallel_size: int = 1,
    async_scheduling: bool | None = None,
) -> dict:
    """The keyword options of `ferrum.LLM` for these flags."""
    return {
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": max_num_batched_tokens,
        "max_model_len": max_model_len,
        "kv_cache_memory": kv_cache_memory,
        "gpu_memory_utilization": gpu_memory_utilization,
        "enable_prefix_caching": prefix_caching,
        "enforce_eager": enforce_eager,
        "quantization": quantization,
        "tensor_parallel_size": tensor_parallel_size,
        "async_scheduling": async_scheduling,
    }
