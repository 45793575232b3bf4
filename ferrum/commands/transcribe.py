"""`ferrum transcribe`: speech to text (or English translation) from any audio or video file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ferrum.commands import app

if TYPE_CHECKING:
    from ferrum.audio.transcribe import TranscribeOptions, Transcriber
    from ferrum.audio.transcript import TranscriptionResult

PROGRESS_MIN_SECONDS = 60.0  # show a progress bar for audio longer than this


@app.command("transcribe")
def transcribe(
    files: Annotated[
        list[str],
        typer.Argument(
            help="Audio/video files. A first argument that is a model alias and not a "
            "file (e.g. whisper-turbo) names the model."
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "-m",
            "--model",
            help="Alias (whisper-tiny.en, whisper-base, whisper-turbo, "
            "…), hub id or folder. Default: the embedded whisper tiny.en.",
        ),
    ] = None,
    language: Annotated[
        str | None, typer.Option("-l", "--language", help="Language code (default: detect).")
    ] = None,
    task: Annotated[str, typer.Option("--task", help="transcribe | translate")] = "transcribe",
    fmt: Annotated[
        str, typer.Option("-f", "--format", help="txt | srt | vtt | json | verbose_json")
    ] = "txt",
    word_timestamps: Annotated[
        bool, typer.Option("--word-timestamps", help="Time every word (verbose_json shows them).")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Output file (one input) or folder (several)."),
    ] = None,
    beam_size: Annotated[int, typer.Option("--beam-size", help="1: greedy.")] = 1,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help=">1: cut at silences, decode windows together.")
    ] = 1,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
    dtype: Annotated[
        str, typer.Option("--dtype", help="auto | bfloat16 | float16 | float32")
    ] = "auto",
) -> None:
    """Transcribe audio with Whisper, offline; text goes to stdout unless -o is given."""
    from ferrum.errors import FerrumError

    try:
        model, files = _split_model_argument(model, files)
        from ferrum.audio.formats import render
        from ferrum.audio.transcribe import TranscribeOptions, Transcriber

        _check_format(fmt)
        options = TranscribeOptions(
            task=task,
            language=language,
            beam_size=beam_size if beam_size > 1 else None,
            word_timestamps=word_timestamps,
            batch_size=batch_size,
        )
        transcriber = Transcriber(model, device=device, dtype=dtype)
        results = _run(transcriber, files, options)
        _write(results, files, fmt, output, render)
    except FerrumError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e


def _check_format(fmt: str) -> None:
    from ferrum.audio.formats import FORMATS
    from ferrum.errors import InvalidInputError

    if fmt not in FORMATS:
        raise InvalidInputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")


def _split_model_argument(model: str | None, files: list[str]) -> tuple[str | None, list[str]]:
    """`ferrum transcribe whisper-turbo rec.m4a`: a leading alias (not a file) names the model."""
    from ferrum.audio.checkpoint import HUB_IDS, PACKAGED
    from ferrum.errors import InvalidInputError

    if files and not Path(files[0]).exists() and (files[0] in HUB_IDS or files[0] in PACKAGED):
        if model is not None:
            raise InvalidInputError(f"model given twice: {files[0]!r} and -m {model!r}")
        model, files = files[0], files[1:]
    if not files:
        raise InvalidInputError("no audio file given")
    return model, files


def _run(
    transcriber: Transcriber, files: list[str], options: TranscribeOptions
) -> list[TranscriptionResult]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ferrum.audio.io import SAMPLE_RATE, load_audio

    audios = [load_audio(f) for f in files]
    total = sum(len(a) for a in audios) / SAMPLE_RATE
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=total < PROGRESS_MIN_SECONDS) as bar:
        task_id = bar.add_task("transcribing", total=total)
        if options.batch_size > 1:
            return transcriber.transcribe_batch(
                audios, options, lambda done, _: bar.update(task_id, completed=done), files
            )
        results = []
        base = 0.0
        for audio, name in zip(audios, files, strict=True):

            def advance(done: float, _total: float, base: float = base) -> None:
                bar.update(task_id, completed=base + done)

            result = transcriber.transcribe(audio, options, advance)
            results.append(_named(result, name))
            base += len(audio) / SAMPLE_RATE
        return results


def _named(result: TranscriptionResult, name: str) -> TranscriptionResult:
    from dataclasses import replace

    return replace(result, source=name)


def _write(results: list, files: list[str], fmt: str, output: Path | None, render) -> None:
    suffix = "json" if fmt == "verbose_json" else fmt
    if output is None:
        for result in results:
            typer.echo(render(result, fmt), nl=fmt in ("json", "verbose_json"))
        return
    if len(results) == 1 and not output.is_dir():
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render(results[0], fmt), encoding="utf-8")
        return
    output.mkdir(parents=True, exist_ok=True)
    for result, name in zip(results, files, strict=True):
        (output / f"{Path(name).stem}.{suffix}").write_text(render(result, fmt), encoding="utf-8")
