"""Qwen3-TTS through the continuous-batching engine on one GPU: frames per second at 1 and 8
concurrent requests, and the codec's decode time (issue #8's workload).

    python -m ferrum.bench.gpu_tts --out tts.json                     # the H100 run (bf16)
    python -m ferrum.bench.gpu_tts --size tiny --device cpu --frames 8 --out /tmp/tts.json

The model is the released Qwen3-TTS 0.6B architecture (`random_qwen3_tts`) with random weights,
and the codec the released 12 Hz codec's architecture with random weights: nothing is downloaded,
and the figures measure compute, not speech quality. Every request speaks the same sentence and
runs exactly `--frames` frames (EOS ignored), sampling with the reference's default options.
For each concurrency the requests are submitted together to one engine; the figures are medians
of `--repeats` timed runs after one warm-up: frames/s over all requests, audio seconds produced per
wall second (12.5 frames = 1 s), and the codec's time to decode those frames into a waveform.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ferrum.audio.qwen3_tts_engine import Qwen3TTSEngine
from ferrum.bench.environment import describe
from ferrum.device import Backend
from ferrum.models.qwen3_tts.codec import SpeechCodec
from ferrum.models.qwen3_tts.model import Qwen3TTS
from ferrum.models.qwen3_tts.prompt import SpeechRequest
from ferrum.models.qwen3_tts.random_model import SPEAKER, random_qwen3_tts, random_speech_codec

FRAME_RATE = 12.5  # codec frames per second of audio
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs far away."


@dataclass
class Figure:
    """One concurrency's medians."""

    concurrency: int
    frames: int  # frames produced per run, all requests together
    wall_s: float  # engine time, submit to the last request's codes
    frames_per_s: float
    audio_s_per_s: float  # seconds of audio produced per wall second
    decode_s: float  # codec: all requests' frames to waveform, one batch
    decode_audio_s_per_s: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_once(
    engine: Qwen3TTSEngine, codec: SpeechCodec | None, concurrency: int, frames: int
) -> tuple[float, int, float]:
    """(engine wall s, frames produced, codec decode s) of `concurrency` requests together."""
    device = engine.tts.device
    options = engine.tts.default_options(max_new_tokens=frames + 1, ignore_eos=True)
    requests = [SpeechRequest(SENTENCE, "english", speaker=SPEAKER)] * concurrency
    _sync(device)
    start = time.perf_counter()
    codes = engine.generate(requests, options)
    _sync(device)
    wall = time.perf_counter() - start
    produced = sum(c.shape[0] for c in codes)
    decode = 0.0
    if codec is not None:
        start = time.perf_counter()
        codec.decode(torch.stack(codes))
        _sync(device)
        decode = time.perf_counter() - start
    return wall, produced, decode


def measure(
    tts: Qwen3TTS, codec: SpeechCodec | None, concurrency: list[int], frames: int, repeats: int
) -> list[Figure]:
    engine = Qwen3TTSEngine(tts, max_batch=max(concurrency))
    try:
        run_once(engine, codec, max(concurrency), min(frames, 4))  # warm-up (kernels, allocator)
        figures = []
        for c in concurrency:
            runs = [run_once(engine, codec, c, frames) for _ in range(repeats)]
            wall = statistics.median(r[0] for r in runs)
            produced = runs[0][1]
            decode = statistics.median(r[2] for r in runs)
            audio = produced / FRAME_RATE
            figures.append(
                Figure(
                    concurrency=c,
                    frames=produced,
                    wall_s=wall,
                    frames_per_s=produced / wall,
                    audio_s_per_s=audio / wall,
                    decode_s=decode,
                    decode_audio_s_per_s=audio / decode if decode else 0.0,
                )
            )
        return figures
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="0.6b", help="0.6b, 1.7b or tiny")
    parser.add_argument("--frames", type=int, default=256, help="frames per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--no-codec", action="store_true", help="skip the codec decode timing")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    args = parser.parse_args(argv)
    backend = Backend.resolve(args.device, args.dtype)
    tts = random_qwen3_tts(args.size, backend.device, backend.dtype)
    codec = None if args.no_codec else random_speech_codec(args.size, backend.device, backend.dtype)
    figures = measure(tts, codec, args.concurrency, args.frames, args.repeats)
    result = {
        "environment": describe().as_dict(),
        "model": f"Qwen3-TTS {args.size} architecture, random weights (and codec)",
        "dtype": str(backend.dtype).removeprefix("torch."),
        "frames_per_request": args.frames,
        "figures": [asdict(f) for f in figures],
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{result['environment']['machine']}  {result['model']}  {result['dtype']}")
    print("concurrency  frames/s  audio s/s  codec decode s  codec audio s/s")
    for f in figures:
        print(
            f"{f.concurrency:>11}  {f.frames_per_s:8.1f}  {f.audio_s_per_s:9.2f}"
            f"  {f.decode_s:14.3f}  {f.decode_audio_s_per_s:15.1f}"
        )
    return result


if __name__ == "__main__":
    main()
