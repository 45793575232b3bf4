"""tts-rtf on CPU: how many seconds of speech the default Piper voice makes per wall second, in
ferrum's PyTorch VITS and in onnxruntime (the baseline), in the same run on the same phonemes.

    python -m ferrum.bench.tts_rate [--threads 2] [--repeats 3] [--omp-wait-policy P] [--json]

Both engines get the same phoneme ids (espeak-ng runs before the timing) and the voice's own
noise settings; a pass speaks the 10 sentences one by one, as a user's request would. Each
engine runs in its own process; after one warm-up pass each, the passes alternate between the
engines so that both see the same load on a shared machine. Each figure is the median over the
repeats, and the ratio is of those medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection

import numpy as np
import torch

from ferrum.audio.phonemize import phoneme_ids, phonemize
from ferrum.audio.tts import (
    DEFAULT_VOICE,
    PiperVoiceConfig,
    SpeechOptions,
    Synthesizer,
    VoiceFiles,
    resolve_voice,
)
from ferrum.bench.environment import cpu_name

ENGINES = ("onnxruntime", "ferrum")
Speak = Callable[[list[int]], int]  # phoneme ids -> samples produced

# About 55 s of speech in the default voice, 10 sentences of everyday prose.
SENTENCES = [
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
]


@dataclass(frozen=True)
class EngineRate:
    """One engine's figures."""

    name: str
    audio_seconds: float  # speech produced per pass
    pass_seconds: list[float]  # wall time of each timed pass
    realtime_factor: float  # audio seconds per wall second, median over passes


def _espeak_version() -> str:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
        return out.split(":")[1].split("Data")[0].strip() if ":" in out else out.strip()
    except OSError:
        return "?"


def _utterances(voice: PiperVoiceConfig) -> list[list[int]]:
    return [
        phoneme_ids(p, voice.phoneme_id_map)
        for s in SENTENCES
        for p in phonemize(s, voice.espeak_voice)
    ]


def _onnx_engine(files: VoiceFiles, voice: PiperVoiceConfig, threads: int) -> Speak:
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(files.model), opts, providers=["CPUExecutionProvider"]
    )
    scales = np.array([voice.noise_scale, voice.length_scale, voice.noise_w], np.float32)

    def speak(ids: list[int]) -> int:
        feed = {
            "input": np.array([ids], np.int64),
            "input_lengths": np.array([len(ids)], np.int64),
            "scales": scales,
        }
        return int(session.run(None, feed)[0].size)

    return speak


def _ferrum_engine(threads: int) -> Speak:
    torch.set_num_threads(threads)
    synth = Synthesizer(device="cpu")
    options = SpeechOptions()
    return lambda ids: len(synth.speak_ids(ids, options))


def _worker(engine: str, threads: int, conn: Connection) -> None:
    """One engine in its own process: a pass per request, so that neither engine's idle
    threads (spinning while they wait for work) take CPU from the other's pass."""
    files = resolve_voice(None)
    voice = PiperVoiceConfig.from_json(files.config)
    utterances = _utterances(voice)
    speak = (
        _onnx_engine(files, voice, threads) if engine == "onnxruntime" else _ferrum_engine(threads)
    )
    while conn.recv() == "pass":
        start = time.perf_counter()
        samples = sum(speak(ids) for ids in utterances)
        conn.send((samples / voice.sample_rate, time.perf_counter() - start))


def measure(threads: int = 2, repeats: int = 3, omp_wait_policy: str = "PASSIVE") -> dict:
    """Run the workload and return every figure (also what --json prints).

    `omp_wait_policy` is what the ferrum worker's OpenMP threads do when idle: PASSIVE (sleep),
    as `ferrum tts` sets it, or "default" (libgomp spins a while first). onnxruntime keeps its
    own default either way."""
    context = multiprocessing.get_context("spawn")
    saved = os.environ.pop("OMP_WAIT_POLICY", None)
    if omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = omp_wait_policy  # inherited by the workers
    pipes = {}
    workers = []
    for engine in ENGINES:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(engine, threads, child), daemon=True)
        process.start()
        pipes[engine] = parent
        workers.append(process)
    os.environ.pop("OMP_WAIT_POLICY", None)
    if saved is not None:
        os.environ["OMP_WAIT_POLICY"] = saved
    audio: dict[str, list[float]] = {name: [] for name in ENGINES}
    walls: dict[str, list[float]] = {name: [] for name in ENGINES}
    try:
        for round_ in range(repeats + 1):  # round 0 is the warm-up
            for name, pipe in pipes.items():
                pipe.send("pass")
                seconds, wall = pipe.recv()
                if round_ > 0:
                    audio[name].append(seconds)
                    walls[name].append(wall)
    finally:
        for pipe in pipes.values():
            pipe.send("stop")
        for process in workers:
            process.join(timeout=30)
    rates = {}
    for name in ENGINES:
        rtf = statistics.median(a / w for a, w in zip(audio[name], walls[name]))
        rates[name] = EngineRate(name, statistics.median(audio[name]), walls[name], rtf)
    import onnxruntime

    return {
        "workload": f"tts-rtf: {len(SENTENCES)} sentences, one at a time, voice noise on",
        "model": f"Piper {DEFAULT_VOICE} (real weights)",
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {threads} threads per engine",
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "espeak-ng": _espeak_version(),
            "python": platform.python_version(),
        },
        "omp_wait_policy": omp_wait_policy,
        "repeats": repeats,
        "engines": {name: asdict(rate) for name, rate in rates.items()},
        "ratio": rates["ferrum"].realtime_factor / rates["onnxruntime"].realtime_factor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--omp-wait-policy",
        default=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        help="PASSIVE (as `ferrum tts`), ACTIVE, or default (libgomp's own: spin, then sleep)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = measure(args.threads, args.repeats, args.omp_wait_policy)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"workload: {result['workload']}, median of {result['repeats']} after a warm-up")
    print(f"model:    {result['model']}")
    print(f"machine:  {result['machine']}, OMP_WAIT_POLICY {result['omp_wait_policy']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    for name, rate in result["engines"].items():
        walls = ", ".join(f"{w:.2f}" for w in rate["pass_seconds"])
        print(
            f"{name:12s} {rate['realtime_factor']:6.1f}x real time "
            f"({rate['audio_seconds']:.1f} s of audio per pass; passes {walls} s)"
        )
    print(f"ratio ferrum / onnxruntime: {result['ratio']:.2f}")


if __name__ == "__main__":
    main()
