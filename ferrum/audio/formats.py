"""Write a transcript as plain text, SubRip (.srt), WebVTT (.vtt) or JSON (OpenAI's `json` and
`verbose_json` response shapes, so the HTTP endpoint can return these as they are)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict

from ferrum.audio.transcript import TranscriptionResult
from ferrum.errors import InvalidInputError

FORMATS = ("txt", "srt", "vtt", "json", "verbose_json")


def format_timestamp(seconds: float, decimal_marker: str = ".", always_hours: bool = False) -> str:
    """`[HH:]MM:SS.mmm` (SRT uses a comma and always shows hours)."""
    milliseconds = max(0, round(seconds * 1000.0))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1_000)
    hours_part = f"{hours:02d}:" if always_hours or hours > 0 else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


def to_txt(result: TranscriptionResult) -> str:
    return "".join(f"{s.text.strip()}\n" for s in result.segments)


def to_srt(result: TranscriptionResult) -> str:
    blocks = []
    for i, s in enumerate(result.segments, start=1):
        start = format_timestamp(s.start, ",", always_hours=True)
        end = format_timestamp(s.end, ",", always_hours=True)
        blocks.append(f"{i}\n{start} --> {end}\n{s.text.strip()}\n")
    return "\n".join(blocks)


def to_vtt(result: TranscriptionResult) -> str:
    lines = ["WEBVTT\n"]
    for s in result.segments:
        lines.append(
            f"{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{s.text.strip()}\n"
        )
    return "\n".join(lines)


def to_json(result: TranscriptionResult) -> str:
    return json.dumps({"text": result.text}, ensure_ascii=False)


def verbose_json(result: TranscriptionResult, task: str = "transcribe") -> dict:
    """OpenAI's verbose_json body: task, language, duration, text, segments (and words)."""
    segments = []
    for s in result.segments:
        item = asdict(s)
        item["tokens"] = list(s.tokens)
        if not s.words:
            item.pop("words")
        segments.append(item)
    body: dict = {
        "task": task,
        "language": result.language,
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": segments,
    }
    words = [asdict(w) for s in result.segments for w in s.words]
    if words:
        body["words"] = words
    return body


def to_verbose_json(result: TranscriptionResult) -> str:
    return json.dumps(verbose_json(result), ensure_ascii=False, indent=2)


WRITERS: dict[str, Callable[[TranscriptionResult], str]] = {
    "txt": to_txt,
    "srt": to_srt,
    "vtt": to_vtt,
    "json": to_json,
    "verbose_json": to_verbose_json,
}


def render(result: TranscriptionResult, fmt: str) -> str:
    """The transcript in format `fmt` (one of FORMATS)."""
    if fmt not in WRITERS:
        raise InvalidInputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return WRITERS[fmt](result)
