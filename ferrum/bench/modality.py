"""The frame shared by `ferrum bench --task asr|embed|tts`: ferrum and its baselines do the same
work in the same run, passes alternate between engines, and the medians and ratios are reported.

A task builds a list of `EngineSpec`s (ferrum's rows, then each baseline's, pointing at the ferrum
row it is compared with). `measure` loads every engine, runs one warm-up pass each, then
`repeats` timed passes that alternate between the engines so that a drifting load on a shared
machine hits all of them alike (BENCH.md). A baseline whose package is missing becomes a row with
status "not installed"; one that fails becomes a "failed" row; neither stops ferrum's figures.
"""

from __future__ import annotations

import importlib.metadata
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from ferrum.errors import InvalidInputError

TASKS = ("llm", "asr", "embed", "tts")
DEFAULT_REPEATS = 3  # BENCH.md: the median of 3 timed passes after a warm-up
AUDIO_UNIT = "audio_s_per_s"  # seconds of audio handled per wall second (× real time)
ITEM_UNIT = "items_per_s"  # sentences or images embedded per wall second
OK, NOT_INSTALLED, FAILED = "ok", "not installed", "failed"


@dataclass(frozen=True)
class PassOutput:
    """What one pass of an engine did."""

    work: float  # audio seconds (asr, tts) or items (embed) handled in the pass
    extra: dict[str, Any] = field(default_factory=dict)  # words transcribed, tokens read, …


Pass = Callable[[bool], PassOutput]  # (is the warm-up pass) -> what the pass did


class NotInstalled(Exception):
    """A baseline's package is missing; the message says what to install."""


@dataclass
class EngineSpec:
    """One row of a benchmark: an engine in one setting, and how to load it."""

    label: str  # unique row name, e.g. "ferrum batch 8"
    engine: str  # ferrum, transformers, faster-whisper, sentence-transformers, onnxruntime
    package: str  # the distribution whose version is reported
    settings: str  # what a reader needs to repeat it: dtype, batch, decoding
    build: Callable[[ExitStack], Pass]  # loads the engine; registers clean-up on the stack
    compare_to: str | None = None  # baselines: the label of the ferrum row they are measured with


@dataclass
class EngineFigures:
    """One row's figures: every pass, and their medians."""

    label: str
    engine: str
    settings: str
    version: str | None
    compare_to: str | None
    status: str = OK  # ok | not installed | failed
    detail: str = ""  # why a row did not run (what to install, or the error)
    pass_seconds: list[float] = field(default_factory=list)  # wall time of each timed pass
    work: list[float] = field(default_factory=list)  # work done in each timed pass
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_ferrum(self) -> bool:
        return self.compare_to is None

    @property
    def ok(self) -> bool:
        return self.status == OK and bool(self.pass_seconds)

    @property
    def rate(self) -> float | None:
        """Median over the passes of work per wall second."""
        if not self.ok:
            return None
        return statistics.median(w / s for w, s in zip(self.work, self.pass_seconds, strict=True))

    @property
    def rtf(self) -> float | None:
        """Real-time factor: median wall seconds per second of audio (lower is faster)."""
        if not self.ok:
            return None
        return statistics.median(s / w for w, s in zip(self.work, self.pass_seconds, strict=True))

    def as_dict(self, unit: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "engine": self.engine,
            "version": self.version,
            "settings": self.settings,
            "status": self.status,
            "detail": self.detail,
            unit: self.rate,
        }
        if unit == AUDIO_UNIT:
            out["rtf"] = self.rtf
        if self.compare_to is not None:
            out["compared_with"] = self.compare_to
        return out | {
            "work_per_pass": statistics.median(self.work) if self.work else None,
            "pass_seconds": self.pass_seconds,
            **self.extra,
        }


@dataclass
class TaskResult:
    """Every row of one `ferrum bench --task` run, with what was run on what."""

    task: str
    unit: str  # AUDIO_UNIT or ITEM_UNIT
    model: dict[str, Any]
    workload: dict[str, Any]
    rows: list[EngineFigures]

    @property
    def ferrum(self) -> list[EngineFigures]:
        return [r for r in self.rows if r.is_ferrum]

    @property
    def baselines(self) -> list[EngineFigures]:
        return [r for r in self.rows if not r.is_ferrum]

    def row(self, label: str) -> EngineFigures:
        return next(r for r in self.rows if r.label == label)

    def ratio(self, baseline: EngineFigures) -> float | None:
        """ferrum's rate over the baseline's, for the ferrum row it is compared with."""
        assert baseline.compare_to is not None
        ours, theirs = self.row(baseline.compare_to).rate, baseline.rate
        return ours / theirs if ours is not None and theirs else None

    def ratios(self) -> dict[str, float | None]:
        return {b.label: self.ratio(b) for b in self.baselines}


def package_version(package: str) -> str | None:
    """The installed version of a distribution (ferrum's own also when run from a checkout)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        if package == "ferrum":
            import ferrum

            return ferrum.__version__
        return None


def select_baselines(text: str | None, known: tuple[str, ...], task: str) -> tuple[str, ...]:
    """`--baseline` → the baselines to run: all of `known` by default, none for "none", or
    the comma-separated names given."""
    if text is None or text.strip().lower() in ("", "all"):
        return known
    if text.strip().lower() == "none":
        return ()
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidInputError(
            f"--baseline {', '.join(unknown)} is not a baseline of --task {task}; "
            f"use none, all, or some of: {', '.join(known)}"
        )
    return names


Say = Callable[[str], None]


def measure(
    specs: list[EngineSpec], repeats: int, say: Say, stack: ExitStack
) -> list[EngineFigures]:
    """Load every engine, warm each up once, then time `repeats` passes of each, alternating."""
    if repeats < 1:
        raise InvalidInputError(f"--repeats must be at least 1, got {repeats}")
    rows: list[EngineFigures] = []
    passes: dict[str, Pass] = {}
    for spec in specs:
        row = EngineFigures(
            spec.label, spec.engine, spec.settings, package_version(spec.package), spec.compare_to
        )
        rows.append(row)
        say(f"loading {spec.label}")
        if row.is_ferrum:  # ferrum's own errors are the user's to see
            passes[spec.label] = spec.build(stack)
            continue
        try:
            passes[spec.label] = spec.build(stack)
        except NotInstalled as e:
            row.status, row.detail = NOT_INSTALLED, str(e)
        except Exception as e:  # a broken baseline must not hide ferrum's figures
            row.status, row.detail = FAILED, _first_line(e)
    live = [r for r in rows if r.status == OK]
    for row in live:
        say(f"warm-up: {row.label}")
        _run(row, passes[row.label], warmup=True)
    for repeat in range(repeats):
        for row in [r for r in live if r.status == OK]:
            say(f"pass {repeat + 1}/{repeats}: {row.label}")
            _run(row, passes[row.label], warmup=False)
    return rows


def _run(row: EngineFigures, run: Pass, warmup: bool) -> None:
    start = time.perf_counter()
    try:
        out = run(warmup)
    except Exception as e:
        if row.is_ferrum:
            raise
        row.status, row.detail = FAILED, _first_line(e)
        return
    seconds = time.perf_counter() - start
    if not warmup:
        row.pass_seconds.append(seconds)
        row.work.append(out.work)
        row.extra.update(out.extra)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
