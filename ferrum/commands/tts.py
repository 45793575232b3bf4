"""`ferrum tts`: speak text into an audio file (or raw audio on stdout).

Only audio goes to stdout (with `-o -`); the summary line and errors go to stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer

from ferrum.commands import app


@app.command("tts")
def tts(
    text: Annotated[
        str | None, typer.Argument(help="Text to speak; '-' or nothing reads it from stdin.")
    ] = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Audio file to write, or - for raw audio on stdout."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            "--voice",
            help="Voice name, Piper .onnx file or Qwen3-TTS model folder (default: joe).",
        ),
    ] = None,
    audio_format: Annotated[
        str | None,
        typer.Option("--format", help="wav | flac | mp3 | pcm (default: from -o's extension)."),
    ] = None,
    speed: Annotated[float, typer.Option("--speed", help="2.0 speaks twice as fast.")] = 1.0,
    speaker: Annotated[
        str | None, typer.Option("--speaker", help="Speaker name or id (multi-speaker voices).")
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Write each sentence as soon as it is spoken.")
    ] = False,
    sentence_silence: Annotated[
        float, typer.Option("--sentence-silence", help="Seconds of silence between sentences.")
    ] = 0.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Same seed, same audio.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
    language: Annotated[
        str | None, typer.Option("--language", help="Qwen3-TTS: language of the text (auto).")
    ] = None,
    instruct: Annotated[
        str | None, typer.Option("--instruct", help="Qwen3-TTS: describe the voice and style.")
    ] = None,
    ref_audio: Annotated[
        str | None, typer.Option("--ref-audio", help="Qwen3-TTS Base: a clip of the voice.")
    ] = None,
    ref_text: Annotated[
        str | None, typer.Option("--ref-text", help="Qwen3-TTS Base: the clip's transcript.")
    ] = None,
) -> None:
    """Speak text with a Piper voice or a Qwen3-TTS model into a wav, flac, mp3 or pcm file."""
    from ferrum.audio.encode import AudioWriter, output_format
    from ferrum.audio.speech import load_synthesizer
    from ferrum.audio.tts import SpeechOptions
    from ferrum.errors import InvalidInputError

    if output is None:
        raise InvalidInputError("say where to write the audio: -o FILE (or -o - for stdout)")
    fmt = output_format(output, audio_format)
    if text is None or text == "-":
        if sys.stdin.isatty():
            raise InvalidInputError("give the text to speak, or pipe it on stdin")
        text = sys.stdin.read()
    options = SpeechOptions(
        speed=speed,
        speaker=speaker,
        sentence_silence=sentence_silence,
        seed=seed,
        language=language,
        instruct=instruct,
        ref_audio=ref_audio,
        ref_text=ref_text,
    )
    synthesizer = load_synthesizer(model, device=device)
    start = time.perf_counter()
    target = sys.stdout.buffer if output == "-" else output
    if stream:
        chunks = synthesizer.stream(text, options)  # validates before the output is opened
        with AudioWriter(target, fmt, synthesizer.sample_rate) as writer:
            for chunk in chunks:
                writer.write(chunk.samples)
    else:  # nothing is written until all of it is spoken
        result = synthesizer.synthesize(text, options)
        with AudioWriter(target, fmt, synthesizer.sample_rate) as writer:
            writer.write(result.samples)
    seconds = writer.frames / synthesizer.sample_rate
    rate = seconds / max(time.perf_counter() - start, 1e-9)
    where = "stdout" if output == "-" else output
    typer.echo(
        f"wrote {where}: {seconds:.1f} s of speech ({fmt}, {synthesizer.sample_rate} Hz, "
        f"{rate:.1f}x real time, voice {synthesizer.name})",
        err=True,
    )
