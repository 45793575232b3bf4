"""asr-rtf: how many seconds of audio a second of wall time transcribes, ferrum against
transformers' pipeline and faster-whisper (when installed) on the same weights, same run.

Workload: jfk.flac tiled to 300 s (22 words × 27.3 = 600 words spoken), whisper tiny.en from the
embedded CTranslate2 package (transformers gets the same weights converted in memory), greedy,
temperature fixed at 0, single stream and batched. Each figure is the median of `repeats` runs
after a warm-up on the 11-s clip; the word count of each output catches looping.

    python -m ferrum.bench.asr_rate [--seconds 300] [--repeats 3] [--threads 2] [--batch 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ferrum.audio.io import SAMPLE_RATE, load_audio
from ferrum.bench.environment import cpu_name

# the shared test clip beside the checkout (../shared/samples), as the repository's CI lays it out
JFK = Path(__file__).resolve().parents[3] / "shared" / "samples" / "jfk.flac"
JFK_WORDS = 22  # "And so my fellow Americans, ask not … for your country."

Engine = Callable[[np.ndarray], str]  # audio → transcript text


def ferrum_engine(batch_size: int) -> Engine:
    from ferrum.audio.transcribe import TranscribeOptions, Transcriber

    transcriber = Transcriber(None, device="cpu", dtype="float32")
    options = TranscribeOptions(temperature=(0.0,), batch_size=batch_size)
    return lambda audio: transcriber.transcribe(audio, options).text


def hf_model_from_ferrum():
    """transformers' WhisperForConditionalGeneration holding the embedded tiny.en weights."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from ferrum.audio.transcribe import Transcriber
    from ferrum.models.whisper import hf_name_map

    ours = Transcriber(None, device="cpu", dtype="float32").checkpoint
    dims = ours.model.dims
    config = WhisperConfig(
        vocab_size=dims.n_vocab, num_mel_bins=dims.n_mels, d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer, decoder_layers=dims.n_text_layer,
        encoder_attention_heads=dims.n_audio_head, decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=4 * dims.n_audio_state, decoder_ffn_dim=4 * dims.n_text_state,
        decoder_start_token_id=ours.tokenizer.special.sot, eos_token_id=ours.tokenizer.special.eot,
        pad_token_id=ours.tokenizer.special.eot, bos_token_id=ours.tokenizer.special.sot,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    state = ours.model.state_dict()
    with torch.no_grad():
        for name, param in model.state_dict().items():
            target = hf_name_map(name)
            if target is None:
                continue
            if isinstance(target, tuple):
                target, shard = target
                full = state[target]
                parts = ("q", "k", "v") if "qkv" in target else ("k", "v")
                size = full.shape[0] // len(parts)
                start = parts.index(shard) * size
                param.copy_(full[start : start + size])
            else:
                param.copy_(state[target])
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    gen = model.generation_config
    gen.suppress_tokens = list(ours.hints.suppress_tokens)
    gen.begin_suppress_tokens = list(ours.hints.begin_suppress_tokens)
    gen.no_timestamps_token_id = ours.tokenizer.special.no_timestamps
    gen.is_multilingual = False
    gen.max_initial_timestamp_index = 50
    gen.max_length = 448
    return model, ours


def transformers_engine(batch_size: int) -> Engine:
    from tokenizers import Tokenizer  # noqa: F401 - the fast tokenizer backs WhisperTokenizerFast
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast, pipeline

    from ferrum.audio.checkpoint import PACKAGED, _package_files

    model, _ = hf_model_from_ferrum()
    directory, _ = _package_files(PACKAGED["whisper-tiny.en"])  # type: ignore[misc]
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    tokenizer.pad_token = "<|endoftext|>"  # batching pads with it
    asr = pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=tokenizer,
        feature_extractor=WhisperFeatureExtractor(),
        chunk_length_s=30,
        batch_size=batch_size,
        device="cpu",
    )
    return lambda audio: asr(audio.copy(), generate_kwargs={"num_beams": 1, "do_sample": False})[
        "text"
    ]


def faster_whisper_engine(batch_size: int, threads: int) -> Engine | None:
    try:
        from faster_whisper import BatchedInferencePipeline, WhisperModel
    except ImportError:
        return None
    from ferrum.audio.checkpoint import PACKAGED, _package_files

    directory, _ = _package_files(PACKAGED["whisper-tiny.en"])  # type: ignore[misc]
    model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=threads)
    common = {"beam_size": 1, "temperature": 0.0, "language": "en"}
    if batch_size > 1:
        batched = BatchedInferencePipeline(model)

        def run_batched(audio: np.ndarray) -> str:
            segments, _ = batched.transcribe(audio, batch_size=batch_size, **common)
            return "".join(s.text for s in segments)

        return run_batched

    def run(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, **common)
        return "".join(s.text for s in segments)

    return run


def measure(
    engine: Engine, warmup: np.ndarray, audio: np.ndarray, repeats: int
) -> tuple[float, int]:
    """(median real-time factor, words of the last output)."""
    engine(warmup)
    rates, text = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        text = engine(audio)
        rates.append(len(audio) / SAMPLE_RATE / (time.perf_counter() - start))
    return statistics.median(rates), len(text.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated engine names to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip = load_audio(JFK)
    audio = np.tile(clip, int(np.ceil(args.seconds * SAMPLE_RATE / len(clip))))
    audio = audio[: int(args.seconds * SAMPLE_RATE)]
    spoken = round(JFK_WORDS * len(audio) / len(clip))
    cpu = cpu_name()
    print(f"machine: {cpu}, {args.threads} thread(s), CPU shared with other jobs")
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"workload: jfk.flac tiled to {args.seconds:.0f} s ({spoken} words spoken), "
          f"whisper tiny.en (real weights), greedy, temperature 0, "
          f"median of {args.repeats} after warm-up")  # fmt: skip
    b = args.batch
    engines: list[tuple[str, Callable[[], Engine | None]]] = [
        ("ferrum fp32 sequential", lambda: ferrum_engine(1)),
        (f"ferrum fp32 batched ({args.batch}, VAD)", lambda: ferrum_engine(args.batch)),
        ("transformers pipeline fp32, batch 1", lambda: transformers_engine(1)),
        (f"transformers pipeline fp32, batch {b}", lambda: transformers_engine(b)),
        ("faster-whisper int8 sequential", lambda: faster_whisper_engine(1, args.threads)),
        (f"faster-whisper int8 batched ({b})", lambda: faster_whisper_engine(b, args.threads)),
    ]  # fmt: skip
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    print(f"{'engine':<40} {'× real time':>12} {'words':>7}")
    for name, build in engines:
        if only and not any(o in name for o in only):
            continue
        engine = build()
        if engine is None:
            print(f"{name:<40} {'not installed':>12}")
            continue
        rate, words = measure(engine, clip, audio, args.repeats)
        print(f"{name:<40} {rate:>11.1f}× {words:>7}", flush=True)


if __name__ == "__main__":
    main()
