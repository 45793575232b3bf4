"""`ferrum bench --task tts` with a Qwen3-TTS model: seconds of speech per wall second, one
sentence at a time and all sentences at once (they share the talker's decoding steps in the
continuous-batching engine).

The reference implementation, `qwen-tts`, pins transformers 4.57 and so cannot live beside
ferrum: it is reported as not installed unless it imports. A CustomVoice model speaks with its
first speaker, a VoiceDesign model follows a fixed instruction; a Base model needs a reference
clip and is refused. Seeded sampling, so every pass speaks the same frames.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from ferrum.bench.modality import (
    AUDIO_UNIT,
    EngineSpec,
    NotInstalled,
    Pass,
    PassOutput,
    Say,
    TaskResult,
    measure,
)
from ferrum.errors import InvalidInputError

BASELINES = ("qwen-tts",)
INSTRUCTION = "A calm, clear voice, speaking at an even pace."
SEED = 0


def run_qwen3_tts(
    model: str,
    device: str,
    sentences: tuple[str, ...],
    repeats: int,
    baselines: tuple[str, ...],
    say: Say,
) -> TaskResult:
    from ferrum.audio.qwen3_tts import Qwen3Synthesizer
    from ferrum.audio.qwen3_tts_engine import Qwen3TTSEngine
    from ferrum.audio.speech import load_synthesizer
    from ferrum.audio.tts import SpeechOptions

    say(f"loading {model}")
    synth = load_synthesizer(model, device=device)
    assert isinstance(synth, Qwen3Synthesizer)
    if synth.kind == "base":
        raise InvalidInputError(
            "a Qwen3-TTS Base model speaks only in a cloned voice: bench a CustomVoice or "
            "VoiceDesign model"
        )
    options = SpeechOptions(
        speaker=synth.speakers[0] if synth.kind == "custom_voice" else None,
        instruct=INSTRUCTION if synth.kind == "voice_design" else None,
        seed=SEED,
    )
    engine = Qwen3TTSEngine(synth.tts, max_batch=max(len(sentences), 1))
    synth.generator = engine

    def speak(text: str) -> float:
        return synth.synthesize(text, options).duration

    def one_by_one(_warmup: bool) -> PassOutput:
        seconds = sum(speak(text) for text in sentences)
        return PassOutput(seconds, {"speech_seconds": seconds})

    def concurrent(_warmup: bool) -> PassOutput:
        with ThreadPoolExecutor(max_workers=len(sentences)) as pool:
            seconds = sum(pool.map(speak, sentences))
        return PassOutput(seconds, {"speech_seconds": seconds})

    def build(run: Pass):
        return lambda _stack: run

    backend = synth.backend
    settings = f"{str(backend.dtype).removeprefix('torch.')}, {backend.device}, seed {SEED}"
    specs = [
        EngineSpec("ferrum 1 at a time", "ferrum", "ferrum", settings, build(one_by_one)),
        EngineSpec(
            f"ferrum {len(sentences)} concurrent", "ferrum", "ferrum", settings, build(concurrent)
        ),
    ]
    if "qwen-tts" in baselines:
        specs.append(
            EngineSpec(
                "qwen-tts", "qwen-tts", "qwen-tts", "reference implementation",
                _qwen_tts_baseline, compare_to="ferrum 1 at a time",
            )
        )  # fmt: skip
    with ExitStack() as stack:
        stack.callback(engine.close)
        rows = measure(specs, repeats, say, stack)
    return TaskResult(
        task="tts",
        unit=AUDIO_UNIT,
        model={
            "spec": model,
            "name": synth.name,
            "kind": synth.kind,
            "device": str(backend.device),
            "dtype": str(backend.dtype).removeprefix("torch."),
            "sample_rate": synth.sample_rate,
        },
        workload={
            "name": "tts-rtf",
            "sentences": len(sentences),
            "text": " ".join(sentences),
            "voice": options.speaker or options.instruct,
            "concurrency": [1, len(sentences)],
            "repeats": repeats,
        },
        rows=rows,
    )


def _qwen_tts_baseline(_stack: ExitStack) -> Pass:
    try:
        import qwen_tts  # noqa: F401
    except Exception as e:
        raise NotInstalled(
            "qwen-tts pins transformers 4.57, so it cannot be installed beside ferrum; run it "
            "in its own virtual environment (pip install qwen-tts==0.1.1)"
        ) from e
    raise NotInstalled("qwen-tts imports here, but ferrum does not drive it in-process yet")
