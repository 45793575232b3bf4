"""asr-rtf (`ferrum bench --task asr`): seconds of audio transcribed per wall second by ferrum,
against transformers' Whisper pipeline and faster-whisper (when installed), on the same weights
and the same audio, in the same run.

Audio: the `--audio` files; without them the JFK clip beside a development checkout, else speech
synthesized with espeak-ng. Each file is tiled to `seconds` when shorter (BENCH.md: 300 s), so
that long-form decoding is what gets measured. Decoding is greedy with the temperature fixed at
0 (tiled audio otherwise trips the compression-ratio fallback), single stream and, with
`batch_size` > 1, batched. The word count of each output catches an engine that loops.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferrum.audio.io import SAMPLE_RATE, load_audio
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

if TYPE_CHECKING:
    from ferrum.audio.transcribe import Transcriber

BASELINES = ("transformers", "faster-whisper")
DEFAULT_SECONDS = 300.0  # BENCH.md asr-rtf: each input tiled to 5 minutes
DEFAULT_BATCH = 8  # chunks decoded at once in the batched rows
WARMUP_S = 30  # the warm-up pass transcribes this much of the first input (one window)
CHUNK_S = 30  # transformers' pipeline: fixed windows of this length
MAX_TARGET_TOKENS = 448  # Whisper's decoder context
# Beside a development checkout (shared/samples, as CI lays it out); users get espeak-ng speech.
DEV_CLIP = Path(__file__).resolve().parents[3] / "shared" / "samples" / "jfk.flac"
SPEECH = (
    "The morning train was late again, so everyone on the platform pulled out their phones and "
    "waited. She planted tomatoes, basil and a row of tall sunflowers along the back fence last "
    "spring. Our team meets every Tuesday at ten to talk about what shipped this week and what "
    "is still stuck. The river rose after three days of heavy rain, and the old bridge was "
    "closed for repairs."
)
ESPEAK_VOICE = "en-us"
ESPEAK_WORDS_PER_MIN = 160


@dataclass(frozen=True)
class AsrOptions:
    model: str | None = None  # a Whisper spec (None: the embedded tiny.en)
    device: str = "auto"
    dtype: str = "auto"
    audio: tuple[str, ...] = ()  # input files; empty: find or synthesize a clip
    seconds: float | None = DEFAULT_SECONDS  # tile each input to this length (None: as is)
    batch_size: int = DEFAULT_BATCH  # 1: single-stream rows only
    repeats: int = 3
    baselines: tuple[str, ...] = BASELINES


@dataclass(frozen=True)
class AudioWorkload:
    waveforms: list[np.ndarray]  # 16 kHz mono float32, each tiled to the asked length
    sources: list[str]  # what each came from

    @property
    def seconds(self) -> float:
        return sum(len(w) for w in self.waveforms) / SAMPLE_RATE


def load_workload(options: AsrOptions, say: Say) -> AudioWorkload:
    """The inputs of the run; InvalidInputError when none are given and none can be made."""
    if options.seconds is not None and options.seconds <= 0:
        raise InvalidInputError(f"--seconds must be positive, got {options.seconds:g}")
    if options.audio:
        for name in options.audio:
            if not Path(name).expanduser().is_file():
                raise InvalidInputError(f"--audio {name}: no such file")
        files, sources = [Path(a).expanduser() for a in options.audio], list(options.audio)
    elif DEV_CLIP.is_file():
        files, sources = [DEV_CLIP], [f"{DEV_CLIP.name} (shared samples)"]
    else:
        clip = synthesize_speech(say)
        return AudioWorkload([tile(clip, options.seconds)], [f"espeak-ng {ESPEAK_VOICE} speech"])
    waveforms = [tile(load_audio(f), options.seconds) for f in files]
    return AudioWorkload(waveforms, sources)


def synthesize_speech(say: Say) -> np.ndarray:
    """SPEECH spoken by espeak-ng, at 16 kHz."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise InvalidInputError(
            "--task asr needs speech to transcribe: pass --audio FILE (any recording with "
            "speech; repeatable), or install espeak-ng (apt-get install espeak-ng) so that a "
            "clip can be synthesized"
        )
    say("no --audio given: synthesizing speech with espeak-ng")
    with tempfile.TemporaryDirectory(prefix="ferrum-bench-") as folder:
        path = Path(folder) / "speech.wav"
        args = [espeak, "-v", ESPEAK_VOICE, "-s", str(ESPEAK_WORDS_PER_MIN), "-w", str(path)]
        done = subprocess.run([*args, SPEECH], capture_output=True, text=True)
        if done.returncode != 0 or not path.exists():
            raise InvalidInputError(f"espeak-ng failed ({done.stderr.strip()}); pass --audio FILE")
        return load_audio(path)


def tile(audio: np.ndarray, seconds: float | None) -> np.ndarray:
    """`audio` repeated up to `seconds` when shorter (never cut: a long file stays whole)."""
    if audio.size == 0:
        raise InvalidInputError("an --audio file holds no samples")
    target = int(seconds * SAMPLE_RATE) if seconds is not None else 0
    if len(audio) >= target:
        return audio
    return np.tile(audio, -(-target // len(audio)))[:target]


def run_asr(options: AsrOptions, say: Say) -> TaskResult:
    from ferrum.audio.transcribe import Transcriber

    if options.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be at least 1, got {options.batch_size}")
    workload = load_workload(options, say)
    say("loading ferrum's Whisper")
    transcriber = Transcriber(options.model, device=options.device, dtype=options.dtype)
    backend = transcriber.checkpoint.backend
    dtype = str(backend.dtype).removeprefix("torch.")
    warm = [workload.waveforms[0][: WARMUP_S * SAMPLE_RATE]]
    batches = [1] + ([options.batch_size] if options.batch_size > 1 else [])
    specs: list[EngineSpec] = []
    for b in batches:
        mode = "sequential" if b == 1 else f"batched ({b}, VAD)"
        ferrum_label = f"ferrum batch {b}"
        specs.append(
            EngineSpec(
                ferrum_label, "ferrum", "ferrum", f"{dtype}, greedy, {mode}",
                lambda stack, b=b: _ferrum_pass(transcriber, workload, warm, b),
            )
        )  # fmt: skip
        if "transformers" in options.baselines:
            specs.append(
                EngineSpec(
                    f"transformers batch {b}", "transformers", "transformers",
                    f"{dtype}, greedy, pipeline chunk {CHUNK_S} s, batch {b}",
                    lambda stack, b=b: _transformers_pass(transcriber, options.model, workload,
                                                          warm, b),
                    compare_to=ferrum_label,
                )
            )  # fmt: skip
        if "faster-whisper" in options.baselines:
            compute = "float16" if backend.device.type == "cuda" else "int8"
            how = "sequential" if b == 1 else f"batched ({b}, VAD)"
            specs.append(
                EngineSpec(
                    f"faster-whisper batch {b}", "faster-whisper", "faster-whisper",
                    f"{compute}, greedy, {how}",
                    lambda stack, b=b, c=compute: _faster_whisper_pass(
                        transcriber, options.model, workload, warm, b, c
                    ),
                    compare_to=ferrum_label,
                )
            )  # fmt: skip
    with ExitStack() as stack:
        rows = measure(specs, options.repeats, say, stack)
    return TaskResult(
        task="asr",
        unit=AUDIO_UNIT,
        model={
            "spec": options.model or "whisper-tiny.en",
            "name": transcriber.name,
            "device": str(backend.device),
            "dtype": dtype,
        },
        workload={
            "name": "asr-rtf",
            "inputs": workload.sources,
            "input_seconds": [round(len(w) / SAMPLE_RATE, 2) for w in workload.waveforms],
            "audio_seconds": round(workload.seconds, 2),
            "tiled_to_s": options.seconds,
            "batch_size": options.batch_size,
            "decoding": "greedy, temperature 0",
            "repeats": options.repeats,
        },
        rows=rows,
    )


def _words(texts: list[str]) -> dict[str, Any]:
    return {"words": sum(len(t.split()) for t in texts)}


def _ferrum_pass(
    transcriber: Transcriber, workload: AudioWorkload, warm: list[np.ndarray], batch: int
) -> Pass:
    from ferrum.audio.transcribe import TranscribeOptions

    options = TranscribeOptions(temperature=(0.0,), batch_size=batch)

    def run(warmup: bool) -> PassOutput:
        audios = warm if warmup else workload.waveforms
        if batch > 1:
            texts = [r.text for r in transcriber.transcribe_batch(audios, options)]
        else:
            texts = [transcriber.transcribe(a, options).text for a in audios]
        return PassOutput(sum(len(a) for a in audios) / SAMPLE_RATE, _words(texts))

    return run


def checkpoint_dir(spec: str | None) -> Path:
    """The folder holding the checkpoint's tokenizer.json (and, for CTranslate2, model.bin)."""
    from ferrum.audio.checkpoint import DEFAULT_MODEL, HUB_FILES, HUB_IDS, PACKAGED, _package_files

    spec = spec or DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if spec in PACKAGED:
        files = _package_files(PACKAGED[spec])
        if files is not None:
            return files[0]
    from huggingface_hub import snapshot_download

    hub_id = HUB_IDS.get(spec, spec)
    return Path(snapshot_download(hub_id, allow_patterns=HUB_FILES, local_files_only=True))


def hf_whisper(transcriber: Transcriber, directory: Path) -> Any:
    """transformers' WhisperForConditionalGeneration holding ferrum's loaded weights (whatever
    format they came in), with the checkpoint's decoding hints."""
    import torch
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from ferrum.models.whisper import hf_name_map

    ours = transcriber.checkpoint
    dims, special = ours.model.dims, ours.tokenizer.special
    config = WhisperConfig(
        vocab_size=dims.n_vocab, num_mel_bins=dims.n_mels, d_model=dims.n_audio_state,
        encoder_layers=dims.n_audio_layer, decoder_layers=dims.n_text_layer,
        encoder_attention_heads=dims.n_audio_head, decoder_attention_heads=dims.n_text_head,
        encoder_ffn_dim=4 * dims.n_audio_state, decoder_ffn_dim=4 * dims.n_text_state,
        max_source_positions=dims.n_audio_ctx, max_target_positions=dims.n_text_ctx,
        decoder_start_token_id=special.sot, eos_token_id=special.eot,
        pad_token_id=special.eot, bos_token_id=special.sot,
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    state = ours.model.state_dict()
    with torch.no_grad():
        for name, param in model.state_dict().items():
            target = hf_name_map(name)
            if target is None:
                continue
            if isinstance(target, tuple):  # ferrum fuses q/k/v; transformers keeps them apart
                target, shard = target
                full = state[target]
                parts = ("q", "k", "v") if "qkv" in target else ("k", "v")
                size = full.shape[0] // len(parts)
                start = parts.index(shard) * size
                param.copy_(full[start : start + size])
            else:
                param.copy_(state[target])
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    if (directory / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(directory)
    else:
        _hints(model.generation_config, transcriber)
    backend = ours.backend
    return model.to(backend.device, backend.dtype)


def _hints(gen: Any, transcriber: Transcriber) -> None:
    """What transformers needs to decode a checkpoint that came without generation_config.json."""
    ours = transcriber.checkpoint
    tok = ours.tokenizer
    gen.suppress_tokens = list(ours.hints.suppress_tokens)
    gen.begin_suppress_tokens = list(ours.hints.begin_suppress_tokens)
    gen.no_timestamps_token_id = tok.special.no_timestamps
    gen.max_initial_timestamp_index = 50
    gen.max_length = MAX_TARGET_TOKENS
    gen.is_multilingual = tok.multilingual
    if tok.multilingual:
        vocab = tok.tokenizer.get_vocab()
        gen.lang_to_id = {t: i for t, i in vocab.items() if _is_language_token(t)}
        gen.task_to_id = {t: vocab[f"<|{t}|>"] for t in ("transcribe", "translate")}


def _is_language_token(token: str) -> bool:
    inner = token[2:-2] if token.startswith("<|") and token.endswith("|>") else ""
    return 2 <= len(inner) <= 3 and inner.isalpha() and inner.islower()


def _transformers_pass(
    transcriber: Transcriber,
    spec: str | None,
    workload: AudioWorkload,
    warm: list[np.ndarray],
    batch: int,
) -> Pass:
    from transformers import WhisperFeatureExtractor, WhisperTokenizerFast, pipeline

    directory = checkpoint_dir(spec)
    model = hf_whisper(transcriber, directory)
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    tokenizer.pad_token = "<|endoftext|>"  # batching pads with it
    dims = transcriber.checkpoint.model.dims
    asr = pipeline(
        "automatic-speech-recognition",
        model=model,
        tokenizer=tokenizer,
        feature_extractor=WhisperFeatureExtractor(feature_size=dims.n_mels),
        chunk_length_s=CHUNK_S,
        batch_size=batch,
        device=transcriber.checkpoint.backend.device,
    )
    generate = {"num_beams": 1, "do_sample": False}

    def run(warmup: bool) -> PassOutput:
        audios = warm if warmup else workload.waveforms
        out = asr([a.copy() for a in audios], generate_kwargs=generate)  # it may scale in place
        texts = [o["text"] for o in out]
        return PassOutput(sum(len(a) for a in audios) / SAMPLE_RATE, _words(texts))

    return run


def _faster_whisper_pass(
    transcriber: Transcriber,
    spec: str | None,
    workload: AudioWorkload,
    warm: list[np.ndarray],
    batch: int,
    compute_type: str,
) -> Pass:
    import torch

    try:
        from faster_whisper import BatchedInferencePipeline, WhisperModel
    except ImportError as e:
        raise NotInstalled("pip install faster-whisper") from e
    directory = checkpoint_dir(spec)
    if not (directory / "model.bin").exists():
        raise NotInstalled(f"{directory} is not a CTranslate2 model (convert it to run it)")
    device = transcriber.checkpoint.backend.device.type
    model = WhisperModel(
        str(directory),
        device=device,
        compute_type=compute_type,
        cpu_threads=torch.get_num_threads(),
    )
    language = None if transcriber.checkpoint.tokenizer.multilingual else "en"
    common = {"beam_size": 1, "temperature": 0.0, "language": language}
    batched = BatchedInferencePipeline(model) if batch > 1 else None

    def one(audio: np.ndarray) -> str:
        if batched is not None:
            segments, _ = batched.transcribe(audio, batch_size=batch, **common)
        else:
            segments, _ = model.transcribe(audio, **common)
        return "".join(s.text for s in segments)

    def run(warmup: bool) -> PassOutput:
        audios = warm if warmup else workload.waveforms
        texts = [one(a) for a in audios]
        return PassOutput(sum(len(a) for a in audios) / SAMPLE_RATE, _words(texts))

    return run
