"""`ferrum bench --task asr|embed|tts` as one library call: the options of any of the three, and
`run_task`, which checks them and runs the task's benchmark (ferrum and its baselines)."""

from __future__ import annotations

from dataclasses import dataclass

from ferrum.bench.modality import DEFAULT_REPEATS, TASKS, Say, TaskResult, select_baselines
from ferrum.errors import InvalidInputError

MODALITY_TASKS = tuple(t for t in TASKS if t != "llm")


@dataclass(frozen=True)
class TaskOptions:
    """What `ferrum bench --task` passes on; None means the task's own default."""

    task: str  # asr | embed | tts
    model: str | None = None  # Whisper model, embedding model, or Piper voice
    device: str = "auto"
    dtype: str = "auto"
    repeats: int = DEFAULT_REPEATS
    baseline: str | None = None  # None or "all": every baseline; "none"; or names, comma-separated
    audio: tuple[str, ...] = ()  # asr: input files
    seconds: float | None = None  # asr: tile each input to this length
    batch_size: int | None = None  # asr: chunks decoded at once in the batched rows
    num_items: int | None = None  # embed: sentences; tts: sentences spoken (of 10)
    seed: int = 0  # embed: the sentence mix


def check_task(task: str) -> str:
    name = task.strip().lower()
    if name not in TASKS:
        raise InvalidInputError(f"unknown --task {task!r}: choose one of {', '.join(TASKS)}")
    return name


def run_task(options: TaskOptions, say: Say) -> TaskResult:
    """Run the benchmark of `options.task` (asr, embed or tts) and return every figure."""
    task = check_task(options.task)
    if task == "llm":
        raise InvalidInputError("--task llm runs through ferrum.bench.offline / online")
    asr_only = (options.audio, options.seconds, options.batch_size)
    if task != "asr" and any(v not in (None, ()) for v in asr_only):
        raise InvalidInputError("--audio, --seconds and --batch-size are for --task asr")
    if task == "asr":
        from ferrum.bench import asr

        if options.num_items is not None:
            raise InvalidInputError("--num-items is for --task embed and tts")
        return asr.run_asr(
            asr.AsrOptions(
                model=options.model,
                device=options.device,
                dtype=options.dtype,
                audio=options.audio,
                seconds=asr.DEFAULT_SECONDS if options.seconds is None else options.seconds,
                batch_size=_or(options.batch_size, asr.DEFAULT_BATCH),
                repeats=options.repeats,
                baselines=select_baselines(options.baseline, asr.BASELINES, task),
            ),
            say,
        )
    if task == "embed":
        from ferrum.bench import embed

        known = embed.TEXT_BASELINES + embed.IMAGE_BASELINES
        chosen = None if options.baseline in (None, "all") else options.baseline
        return embed.run_embed(
            embed.EmbedOptions(
                model=options.model,
                device=options.device,
                dtype=options.dtype,
                num_items=_or(options.num_items, embed.DEFAULT_ITEMS),
                seed=options.seed,
                repeats=options.repeats,
                baselines=None if chosen is None else select_baselines(chosen, known, task),
            ),
            say,
        )
    from ferrum.audio.qwen3_tts import is_qwen3_tts_dir
    from ferrum.bench import tts

    if options.model is not None and is_qwen3_tts_dir(options.model):
        from ferrum.bench.tts_qwen3 import BASELINES, run_qwen3_tts

        num = _or(options.num_items, len(tts.SENTENCES))
        if not 1 <= num <= len(tts.SENTENCES):
            raise InvalidInputError(f"--num-items for --task tts is 1 to {len(tts.SENTENCES)}")
        return run_qwen3_tts(
            options.model,
            options.device,
            tts.SENTENCES[:num],
            options.repeats,
            select_baselines(options.baseline, BASELINES, task),
            say,
        )
    if options.dtype not in ("auto", "float32", "fp32"):
        raise InvalidInputError("Piper voices run in float32: leave --dtype at auto")
    return tts.run_tts(
        tts.TtsOptions(
            model=options.model,
            device=options.device,
            num_items=_or(options.num_items, len(tts.SENTENCES)),
            repeats=options.repeats,
            baselines=select_baselines(options.baseline, tts.BASELINES, task),
        ),
        say,
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value
