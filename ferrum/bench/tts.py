"""tts-rtf (`ferrum bench --task tts`): seconds of speech a Piper voice makes per wall second in
ferrum's PyTorch VITS and in onnxruntime (the baseline), in the same run on the same phonemes.

Both engines get the same phoneme ids (espeak-ng runs before the timing) and the voice's own
noise settings; a pass speaks the sentences one by one, as a user's requests would. Each engine
runs in its own process, so that neither engine's idle threads (spinning while they wait for
work) take CPU from the other's pass; the passes alternate between the engines.
"""

from __future__ import annotations

import multiprocessing
import os
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

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

BASELINES = ("onnxruntime",)
WORKER_START_S = 300  # a worker that has not loaded its voice by then is reported as failed

# About 55 s of speech in the default voice, 10 sentences of everyday prose.
SENTENCES = (
    "The morning train was late again, so everyone on the platform pulled out their phones "
    "and waited.",
    "She planted tomatoes, basil and a row of tall sunflowers along the back fence last spring.",
    "If you press the red button twice, the machine will print a receipt for your own records.",
    "Our team meets every Tuesday at ten to talk about what shipped this week and what is "
    "still stuck.",
    "The library on Main Street stays open until nine every evening, except on holidays and "
    "Sundays.",
    "He poured the coffee slowly, watching the steam curl up into the cold air of the kitchen.",
    "Remember to back up all of your files before installing the update, just in case "
    "something breaks.",
    "The river rose after three days of heavy rain, and the old bridge was closed for repairs.",
    "Please leave a message after the tone, and we will call you back as soon as we possibly can.",
    "At the end of the day, the best ideas usually come from asking simple questions out loud.",
)


@dataclass(frozen=True)
class TtsOptions:
    model: str | None = None  # a Piper voice (None: the embedded en_US-joe-medium)
    device: str = "auto"
    num_items: int = len(SENTENCES)  # the first this many of SENTENCES
    repeats: int = 3
    baselines: tuple[str, ...] = BASELINES


@dataclass(frozen=True)
class _Job:
    """What a worker process needs to set itself up."""

    engine: str  # "ferrum" or "onnxruntime"
    voice: str | None
    device: str
    threads: int  # torch's / onnxruntime's intra-op threads
    sentences: tuple[str, ...]


def run_tts(options: TtsOptions, say: Say) -> TaskResult:
    import torch

    from ferrum.audio.tts import PiperVoiceConfig, resolve_voice
    from ferrum.device import pick_device

    if not 1 <= options.num_items <= len(SENTENCES):
        raise InvalidInputError(
            f"--num-items for --task tts is 1 to {len(SENTENCES)} sentences, got "
            f"{options.num_items}"
        )
    files = resolve_voice(options.model)  # a bad voice fails here, before any worker starts
    voice = PiperVoiceConfig.from_json(files.config)
    device = pick_device(options.device)
    threads = torch.get_num_threads()
    sentences = SENTENCES[: options.num_items]
    jobs = {
        name: _Job(name, options.model, options.device, threads, sentences)
        for name in ("ferrum", *options.baselines)
    }
    provider = _onnx_provider(device.type)
    specs = [
        EngineSpec(
            "ferrum", "ferrum", "ferrum", f"float32, {device.type}, threads {threads}",
            lambda stack: _start(jobs["ferrum"], stack),
        )
    ]  # fmt: skip
    if "onnxruntime" in options.baselines:
        specs.append(
            EngineSpec(
                "onnxruntime", "onnxruntime", "onnxruntime", f"{provider}, threads {threads}",
                lambda stack: _start(jobs["onnxruntime"], stack), compare_to="ferrum",
            )
        )  # fmt: skip
    with ExitStack() as stack:
        rows = measure(specs, options.repeats, say, stack)
    return TaskResult(
        task="tts",
        unit=AUDIO_UNIT,
        model={
            "spec": options.model or "default",
            "name": files.name,
            "device": str(device),
            "dtype": "float32",
            "sample_rate": voice.sample_rate,
        },
        workload={
            "name": "tts-rtf",
            "sentences": len(sentences),
            "text": " ".join(sentences),
            "noise": "the voice's own noise_scale and noise_w",
            "concurrency": 1,
            "threads": threads,
            "repeats": options.repeats,
        },
        rows=rows,
    )


def _onnx_provider(device_type: str) -> str:
    try:
        import onnxruntime
    except ImportError:
        return "CPUExecutionProvider"
    cuda = "CUDAExecutionProvider"
    if device_type == "cuda" and cuda in onnxruntime.get_available_providers():
        return cuda
    return "CPUExecutionProvider"


def _start(job: _Job, stack: ExitStack) -> Pass:
    """Start `job`'s worker process; its passes are asked for through a pipe."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no shared threads
    parent, child = context.Pipe()
    process = context.Process(target=_worker, args=(job, child), daemon=True)
    process.start()
    child.close()

    def stop() -> None:
        with suppress(OSError):  # the worker may be gone already
            parent.send("stop")
        process.join(timeout=30)
        if process.is_alive():
            process.kill()

    stack.callback(stop)
    if not parent.poll(WORKER_START_S):
        raise RuntimeError(f"the {job.engine} worker did not start in {WORKER_START_S} s")
    status, message = parent.recv()
    if status == "not installed":
        raise NotInstalled(message)
    if status != "ready":
        raise RuntimeError(message)

    def run(warmup: bool) -> PassOutput:
        parent.send("pass")
        status, value = parent.recv()
        if status != "done":
            raise RuntimeError(value)
        return PassOutput(value, {"speech_seconds": value})

    return run


def _worker(job: _Job, conn: Connection) -> None:
    """One engine in its own process: set up, say so, then one pass per request."""
    try:
        speak, sample_rate, utterances = _engine(job)
    except NotInstalled as e:
        conn.send(("not installed", str(e)))
        return
    except Exception as e:  # reported to the parent, which shows it in the table
        conn.send(("failed", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", ""))
    while conn.recv() == "pass":
        try:
            samples = sum(speak(ids) for ids in utterances)
            conn.send(("done", samples / sample_rate))
        except Exception as e:
            conn.send(("failed", f"{type(e).__name__}: {e}"))


def _engine(job: _Job) -> tuple[Any, int, list[list[int]]]:
    """(speak: phoneme ids -> samples made, sample rate, the phoneme ids of every sentence)."""
    import torch

    from ferrum.audio.phonemize import phoneme_ids, phonemize
    from ferrum.audio.tts import PiperVoiceConfig, resolve_voice

    torch.set_num_threads(job.threads)
    files = resolve_voice(job.voice)
    voice = PiperVoiceConfig.from_json(files.config)
    utterances = [
        phoneme_ids(p, voice.phoneme_id_map)
        for s in job.sentences
        for p in phonemize(s, voice.espeak_voice)
    ]
    if job.engine == "onnxruntime":
        return _onnx_speak(files.model, voice, job), voice.sample_rate, utterances
    from ferrum.audio.tts import SpeechOptions, Synthesizer

    synth = Synthesizer(job.voice, device=job.device)
    options, speaker = SpeechOptions(), synth.speaker_id(None)
    return (lambda ids: len(synth.speak_ids(ids, options, speaker))), voice.sample_rate, utterances


def _onnx_speak(model: os.PathLike, voice: Any, job: _Job) -> Any:
    import numpy as np

    try:
        import onnxruntime
    except ImportError as e:
        raise NotInstalled("pip install onnxruntime") from e
    from ferrum.device import pick_device

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = job.threads
    opts.inter_op_num_threads = 1
    provider = _onnx_provider(pick_device(job.device).type)
    session = onnxruntime.InferenceSession(str(model), opts, providers=[provider])
    scales = np.array([voice.noise_scale, voice.length_scale, voice.noise_w], np.float32)
    speaker = [0] if voice.num_speakers > 1 else None

    def speak(ids: list[int]) -> int:
        feed = {
            "input": np.array([ids], np.int64),
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": scales,
        }
        if speaker is not None:
            feed["sid"] = np.array(speaker, np.int64)
        return int(session.run(None, feed)[0].size)

    return speak
