"""ferrum: fast local inference for open models.

    from ferrum import LLM, SamplingParams
    llm = LLM("smollm2")
    print(llm.chat([{"role": "user", "content": "Hi!"}])[0].outputs[0].text)

Names are imported lazily so `import ferrum` (and the `ferrum` command) start instantly.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# Idle OpenMP threads spin by default; on a shared CPU that makes every parallel op wait for a
# descheduled spinner (decode measured 5-6x slower here under load). Sleeping costs ~15% on an idle
# machine. Only effective when ferrum is imported before torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_EXPORTS = {
    "LLM": "ferrum.llm",
    "SamplingParams": "ferrum.sampling_params",
    "RequestOutput": "ferrum.outputs",
    "CompletionOutput": "ferrum.outputs",
    "EngineConfig": "ferrum.config",
    "FerrumError": "ferrum.errors",
    "Embedder": "ferrum.text.embed",
    "Transcriber": "ferrum.audio.transcribe",
    "synthesize": "ferrum.audio.speech",
    "synthesize_stream": "ferrum.audio.speech",
    "load_synthesizer": "ferrum.audio.speech",
    "Synthesizer": "ferrum.audio.tts",
    "Qwen3Synthesizer": "ferrum.audio.qwen3_tts",
    "SpeechOptions": "ferrum.audio.tts",
    "SpeechResult": "ferrum.audio.tts",
    "SpeechChunk": "ferrum.audio.tts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ferrum' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
