"""From a model spec to a ready engine: resolve, read the checkpoint, build the model, size the
KV cache. The one place that ties the loader, the model registry and the engine together."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ferrum.config import EngineConfig
from ferrum.device import Backend, pick_device, set_cpu_threads
from ferrum.engine.llm_engine import LLMEngine
from ferrum.errors import DeviceError, InvalidInputError, ModelNotFoundError

log = logging.getLogger("ferrum.engine")


class _NoTokenizer:
    """Stands in when a model runs without a tokenizer (random weights): token ids only."""

    eos_token_ids: list[int] = []
    chat_template = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        raise ModelNotFoundError("this model was built without a tokenizer: pass token ids")

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return ""


@dataclass
class LoadReport:
    spec: str
    path: str | None
    random_weights: bool
    seconds: float


def random_config(spec: str) -> dict:
    from ferrum.registry import builtin_config

    config = builtin_config(spec)
    if config is not None:
        return config
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.name.endswith(".json") and path.exists():
        return json.loads(path.read_text())
    raise ModelNotFoundError(
        f"--random-weights needs an alias with a built-in config or a config.json; got {spec!r}"
    )


@dataclass
class BuiltLLM:
    """A built model and what came with it from the checkpoint."""

    model: torch.nn.Module
    tokenizer: Any
    eos_token_ids: list[int]
    path: str | None


def build_llm(spec: str, backend: Backend, random_weights: bool, seed: int = 0) -> BuiltLLM:
    """Resolve, read and build the model of `spec` (random weights drawn from `seed`, so that
    every tensor-parallel rank draws the same ones)."""
    from ferrum.models.build import build_model

    torch.manual_seed(seed)
    if random_weights:
        model = build_model(random_config(spec), None, backend.device, backend.dtype)
        return BuiltLLM(model.eval(), _NoTokenizer(), [], None)
    from ferrum.loader.checkpoint import open_checkpoint
    from ferrum.loader.resolve import resolve_model

    source = resolve_model(spec)
    checkpoint = open_checkpoint(source)
    model = build_model(checkpoint.config, checkpoint.weights(), backend.device, backend.dtype)
    tokenizer = checkpoint.tokenizer
    path = str(source.path) if source.path else None
    return BuiltLLM(model.eval(), tokenizer, tokenizer.eos_token_ids, path)


def load_engine(
    spec: str | None,
    config: EngineConfig,
    device: str = "auto",
    dtype: str = "auto",
    random_weights: bool = False,
) -> tuple[LLMEngine, LoadReport]:
    from ferrum.registry import DEFAULT_LLM

    spec = spec or DEFAULT_LLM
    start = time.perf_counter()
    if config.tensor_parallel_size > 1:
        engine, built = _load_parallel(spec, config, device, dtype, random_weights)
    else:
        backend = Backend.resolve(device, dtype)
        if backend.device.type == "cpu":
            set_cpu_threads()
        built = build_llm(spec, backend, random_weights, config.seed)
        if config.quantization:
            from ferrum.quantization import quantize_model

            quantize_model(built.model, config.quantization)
        engine = LLMEngine(built.model, built.tokenizer, backend, config, built.eos_token_ids)
    report = LoadReport(spec, built.path, random_weights, time.perf_counter() - start)
    log.info("loaded %s in %.1f s", spec, report.seconds)
    return engine, report


def _load_parallel(
    spec: str, config: EngineConfig, device: str, dtype: str, random_weights: bool
) -> tuple[LLMEngine, BuiltLLM]:
    """Start the workers, build rank 0's shard beside them, and join them in one engine."""
    from ferrum.parallel.apply import apply_tp
    from ferrum.parallel.comm import destroy_group, free_port
    from ferrum.parallel.runner import ParallelModelRunner
    from ferrum.parallel.workers import (
        ShardSpec,
        WorkerGroup,
        cpu_threads_per_rank,
        rank_device,
    )

    world = config.tensor_parallel_size
    kind = pick_device(device).type
    if config.quantization:
        raise InvalidInputError("--quantization cannot be combined with --tensor-parallel-size")
    if kind not in ("cuda", "cpu"):
        raise DeviceError(f"--tensor-parallel-size runs on CUDA GPUs or the CPU, not {kind}")
    if kind == "cuda":
        if device not in ("auto", "cuda"):
            raise DeviceError(
                "with --tensor-parallel-size, ranks use cuda:0..N-1: pass --device cuda and "
                "choose the GPUs with CUDA_VISIBLE_DEVICES"
            )
        if torch.cuda.device_count() < world:
            raise DeviceError(
                f"--tensor-parallel-size {world} needs {world} GPUs; "
                f"{torch.cuda.device_count()} visible"
            )
    shard = ShardSpec(spec, config, kind, dtype, random_weights, world, free_port())
    backend = Backend.resolve(rank_device(kind, 0), dtype)
    workers = WorkerGroup(shard)
    try:
        if kind == "cpu":
            set_cpu_threads(cpu_threads_per_rank(world))
        workers.join_group(shard, backend.device)
        built = build_llm(spec, backend, random_weights, config.seed)
        model = apply_tp(built.model, 0, world)
        workers.gather()  # every worker has built its shard
        runner = ParallelModelRunner(
            model, backend.device, backend.dtype, config.block_size, config, workers
        )
        engine = LLMEngine(model, built.tokenizer, backend, config, built.eos_token_ids, runner)
    except BaseException:
        workers.close()
        destroy_group()
        raise
    return engine, built
