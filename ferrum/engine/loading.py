"""From a model spec to a ready engine: resolve, read the checkpoint, build the model, size the
KV cache. The one place that ties the loader, the model registry and the engine together."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ferrum.config import EngineConfig
from ferrum.device import Backend, set_cpu_threads
from ferrum.engine.llm_engine import LLMEngine
from ferrum.errors import ModelNotFoundError

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


def load_engine(
    spec: str | None,
    config: EngineConfig,
    device: str = "auto",
    dtype: str = "auto",
    random_weights: bool = False,
) -> tuple[LLMEngine, LoadReport]:
    from ferrum.models.build import build_model
    from ferrum.registry import DEFAULT_LLM

    spec = spec or DEFAULT_LLM
    start = time.perf_counter()
    backend = Backend.resolve(device, dtype)
    if backend.device.type == "cpu":
        set_cpu_threads()
    if random_weights:
        model = build_model(random_config(spec), None, backend.device, backend.dtype)
        tokenizer, eos, path = _NoTokenizer(), [], None
    else:
        from ferrum.loader.checkpoint import open_checkpoint
        from ferrum.loader.resolve import resolve_model

        source = resolve_model(spec)
        checkpoint = open_checkpoint(source)
        model = build_model(checkpoint.config, checkpoint.weights(), backend.device, backend.dtype)
        tokenizer, eos, path = checkpoint.tokenizer, checkpoint.tokenizer.eos_token_ids, source.path
    model.eval()
    if config.quantization:
        from ferrum.quantization import quantize_model

        quantize_model(model, config.quantization)
    engine = LLMEngine(model, tokenizer, backend, config, eos)
    report = LoadReport(
        spec, str(path) if path else None, random_weights, time.perf_counter() - start
    )
    log.info("loaded %s in %.1f s", spec, report.seconds)
    return engine, report
