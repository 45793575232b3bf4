"""Engine configuration: the limits a user sets with flags (or keyword arguments of `LLM`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ferrum.errors import InvalidInputError

GIB = 1 << 30
DEFAULT_CPU_KV_CACHE_BYTES = 2 * GIB  # KV budget on CPU when --kv-cache-memory is not given
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """'4GiB', '512M', '1.5g', 1073741824 → bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    if not m:
        raise InvalidInputError(f"cannot read {text!r} as a size; use e.g. 4GiB or 512MiB")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


@dataclass
class EngineConfig:
    """Limits of the batching engine. None means "derive from the model and memory"."""

    max_num_seqs: int = 64  # sequences decoded together in one step
    max_num_batched_tokens: int = 2048  # tokens (prefill chunks + decodes) in one forward
    max_model_len: int | None = None  # context length; default: the model's, capped by the cache
    block_size: int = 16  # tokens per KV cache block
    kv_cache_memory: int | None = None  # bytes for the KV cache (CPU; GPU derives it)
    gpu_memory_utilization: float = 0.90  # fraction of GPU memory ferrum may use in all
    enable_prefix_caching: bool = True
    max_waiting: int | None = None  # requests allowed to queue; None = unbounded
    seed: int = 0  # seed of the global generator (unseeded requests)
    enforce_eager: bool = False  # GPU: run decode steps eagerly, without CUDA graphs
    quantization: str | None = None  # weight-only "int8" | "int4" on CPU; None = full weights
    tensor_parallel_size: int = 1  # ranks (GPUs, or CPU processes) the model is split across
    # overlap each step's host work with the device's work on the step before (the next step
    # reads the sampled tokens on the device); None: on for CUDA devices, off otherwise
    async_scheduling: bool | None = None
    # decode steps of one sequence run each decoder layer's projections as matrix-vector
    # kernels with the norms and the activation folded in; None: on for one CUDA device
    skinny_gemm: bool | None = None
    # the projections and logits of decode steps of 17-64 sequences on ferrum's tile GEMM
    # (ferrum.kernels.tile_gemm) rather than cuBLAS, for 16-bit weights; None: on for one GPU
    # of compute capability 9.x (Hopper, where it was measured faster)
    tile_gemm: bool | None = None
    # launch the Triton kernels with programmatic dependent launch, so each starts while the
    # one before it drains; None: on where the GPU supports it (compute capability 9.0+)
    pdl: bool | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.max_num_seqs >= 1, "--max-num-seqs must be at least 1"),
            (self.max_num_batched_tokens >= 1, "--max-num-batched-tokens must be at least 1"),
            (self.block_size >= 1, "block size must be at least 1"),
            (self.max_model_len is None or self.max_model_len >= 1, "--max-model-len must be >= 1"),
            (0 < self.gpu_memory_utilization <= 1, "--gpu-memory-utilization must be in (0, 1]"),
            (self.quantization in (None, "int8", "int4"), "--quantization must be int8 or int4"),
            (self.kv_cache_memory is None or self.kv_cache_memory > 0, "--kv-cache-memory > 0"),
            (self.tensor_parallel_size >= 1, "--tensor-parallel-size must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
