"""How a benchmark is told: a rich table on the terminal, a JSON file with every figure and the
environment, and a PNG of throughput and latency against load (LLM tasks).

Offline tables quote medians over the repeats (BENCH.md); online tables quote the mean ± the
95% confidence half-width when there are repeats. The JSON has both, and every run's figures.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from ferrum.bench.ceiling import ceiling_fraction
from ferrum.bench.environment import Environment
from ferrum.bench.stats import Estimate, LevelResult

if TYPE_CHECKING:  # the offline and online modules pull in torch and httpx
    from ferrum.bench.modality import EngineFigures, TaskResult
    from ferrum.bench.offline import Comparison, OfflineResult
    from ferrum.bench.online import OnlineResult

LATENCIES = ("ttft", "tpot", "itl")
PLOT_SIZE_IN = (11.0, 4.5)
PLOT_DPI = 110


# ---- JSON ---------------------------------------------------------------------------------


def offline_json(result: OfflineResult, env: Environment, command: str) -> dict:
    opts = result.options
    workload = opts.workload.describe() | {
        "num_prompts": opts.num_prompts,
        "concurrency": opts.concurrency,
        "sweep_prompts": {str(c): opts.sweep_size(c) for c in opts.concurrency},
        "repeats": opts.repeats,
    }
    ceiling: dict[str, Any] = {"skipped": result.ceiling_note}
    if result.ceiling is not None:
        ceiling = result.ceiling.as_dict()
    return {
        "task": "llm",
        "mode": "offline",
        "command": command,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env.as_dict(),
        "model": result.model,
        "engine": result.engine,
        "workload": workload,
        "baseline": result.baseline,
        "ceiling": ceiling,
        "greedy_match": result.greedy_match,
        "throughput": _comparison_json(result, result.throughput),
        "sweep": [_comparison_json(result, c) for c in result.sweep],
    }


def _comparison_json(result: OfflineResult, comp: Comparison) -> dict:
    out: dict[str, Any] = {
        comp.ours.mode: comp.ours.value,
        "ferrum": comp.ours.as_dict(),
        "baseline": comp.baseline.as_dict() if comp.baseline else None,
        "ratio_output_tok_s": comp.ratio if comp.baseline else None,
    }
    if result.ceiling is not None:
        out["ceiling"] = {"ferrum": ceiling_fraction(result.ceiling, comp.ours)}
        if comp.baseline is not None:
            out["ceiling"]["baseline"] = ceiling_fraction(result.ceiling, comp.baseline)
    return out


def online_json(result: OnlineResult, env: Environment, command: str) -> dict:
    opts = result.options
    return {
        "task": "llm",
        "mode": "online",
        "command": command,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env.as_dict(),  # of the client machine
        "server": {"url": opts.url, "model": result.model},
        "workload": opts.workload.describe()
        | {
            "num_prompts": opts.num_prompts,
            "concurrency": opts.concurrency,
            "sweep_prompts": {str(c): opts.sweep_size(c) for c in opts.concurrency},
            "request_rates": opts.request_rates,
            "max_concurrency": opts.max_concurrency,
            "warmup": opts.warmup,
            "repeats": opts.repeats,
        },
        "num_requests": result.num_requests,
        "num_errors": result.num_errors,
        "warmup_errors": result.warmup_errors,
        "error_rate": result.error_rate,
        "levels": [level.as_dict() for level in result.levels],
    }


def task_json(result: TaskResult, env: Environment, command: str) -> dict:
    """`ferrum bench --task asr|embed|tts`: the LLM JSON's top level, with one entry per engine
    row in `results` (ferrum) and `baseline`, and `ratio` = ferrum / baseline per baseline row."""
    return {
        "task": result.task,
        "command": command,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": env.as_dict(),
        "model": result.model,
        "workload": result.workload,
        "unit": result.unit,
        "results": [row.as_dict(result.unit) for row in result.ferrum],
        "baseline": [row.as_dict(result.unit) for row in result.baselines],
        "ratio": result.ratios(),
    }


def write_json(data: dict, path: str | Path) -> None:
    """Write `data` as strict JSON (NaN and infinities become null), making its folder."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(_finite(data), indent=2) + "\n")


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


# ---- terminal -----------------------------------------------------------------------------


def _num(x: float, digits: int = 1) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _est(e: Estimate, digits: int = 1) -> str:
    """mean ± 95% CI over repeats, or the single value."""
    if e.n > 1 and not math.isnan(e.ci95):
        return f"{_num(e.mean, digits)} ± {_num(e.ci95, digits)}"
    return _num(e.mean, digits)


def _pcts(level: LevelResult, name: str, median: bool) -> str:
    s = level.summary
    vals = [s[f"{name}_p{q}_ms"] for q in (50, 90, 99)]
    return " / ".join(_num(v.median if median else v.mean) for v in vals)


def print_offline(result: OfflineResult, env: Environment, console: Console) -> None:
    opts, model = result.options, result.model
    weights = "random weights" if model["random_weights"] else "real weights"
    console.print(
        f"[bold]machine[/]: {env.machine}; torch {env.torch}, transformers {env.transformers}"
    )
    console.print(
        f"[bold]model[/]: {model['spec']} ({model['architecture']}, {weights}), "
        f"{model['device']} {model['dtype']}"
    )
    w = opts.workload
    console.print(
        f"[bold]workload[/]: {w.dataset}, input {w.input_len}, output {w.output_len} tokens, "
        f"seed {w.seed}, greedy, EOS ignored; {opts.num_prompts} prompts; repeats {opts.repeats}"
    )
    if result.baseline:
        b = result.baseline
        console.print(
            f"[bold]baseline[/]: transformers {b['version']} generate ({b['attention']}, "
            f"{b['cache']} cache), static batches of {b['throughput_batch_size']} "
            "(throughput) or of the concurrency (sweep)"
        )
        if result.greedy_match is not None:
            console.print(f"greedy tokens identical to the baseline: {result.greedy_match}")
    console.print(_throughput_table(result))
    console.print(_sweep_table(result))
    if result.ceiling is None:
        console.print(f"decode ceiling: {result.ceiling_note}")
    else:
        c = result.ceiling
        console.print(
            f"decode ceiling on {c.device_name}: {c.bandwidth_gb_s:,.0f} GB/s copy bandwidth, "
            f"{c.weight_bytes / 1e9:.2f} GB of weights and {c.kv_bytes_per_token / 1e3:.1f} kB "
            "of KV per token read a step"
        )
    console.print("figures are medians over the repeats; ratio = ferrum / baseline output tok/s")


def _throughput_table(result: OfflineResult) -> Table:
    t = Table(title="throughput (all requests queued at once)")
    for col in ("engine", "output tok/s", "total tok/s", "requests/s", "time s"):
        t.add_column(col, justify="right" if col != "engine" else "left")
    comp = result.throughput
    for name, level in _rows(comp):
        s = level.summary
        t.add_row(
            name,
            _num(s["output_tok_s"].median),
            _num(s["total_tok_s"].median),
            _num(s["request_s"].median, 2),
            _num(s["duration_s"].median, 2),
        )
    if comp.baseline:
        t.add_row("ratio", f"{comp.ratio:.2f}×", "", "", "")
    return t


def _rows(comp: Comparison) -> list[tuple[str, LevelResult]]:
    rows = [("ferrum", comp.ours)]
    if comp.baseline is not None:
        rows.append(("transformers", comp.baseline))
    return rows


def _sweep_table(result: OfflineResult) -> Table:
    t = Table(title="closed-loop sweep (latencies in ms: p50 / p90 / p99)")
    cols = ["conc.", "engine", "output tok/s", "TTFT", "TPOT", "ITL", "ratio"]
    if result.ceiling is not None:
        cols.append("of ceiling")
    for col in cols:
        t.add_column(col, justify="left" if col == "engine" else "right")
    for comp in result.sweep:
        for i, (name, level) in enumerate(_rows(comp)):
            cells = [
                str(int(level.value)) if i == 0 else "",
                name,
                _num(level.median("output_tok_s")),
                *(_pcts(level, n, median=True) for n in LATENCIES),
                f"{comp.ratio:.2f}×" if comp.baseline and i == 0 else "",
            ]
            if result.ceiling is not None:
                cells.append(f"{ceiling_fraction(result.ceiling, level)['fraction']:.1%}")
            t.add_row(*cells)
    return t


def print_online(result: OnlineResult, env: Environment, console: Console) -> None:
    opts = result.options
    w = opts.workload
    console.print(f"[bold]client[/]: {env.machine}")
    console.print(f"[bold]server[/]: {opts.url}, model {result.model}")
    console.print(
        f"[bold]workload[/]: {w.dataset}, input {w.input_len}, output {w.output_len} tokens, "
        f"seed {w.seed}, greedy, EOS ignored; {opts.num_prompts} requests a level; "
        f"warm-up {opts.warmup}; repeats {opts.repeats}"
    )
    t = Table(title="OpenAI-compatible server (latencies in ms: p50 / p90 / p99)")
    for col in ("load", "requests", "errors", "output tok/s", "TTFT", "TPOT", "ITL"):
        t.add_column(col, justify="right")
    for level in result.levels:
        s = level.summary
        load = f"c={int(level.value)}" if level.mode == "concurrency" else f"{level.value:g} req/s"
        t.add_row(
            load,
            str(level.num_requests),
            str(level.num_errors),
            _est(s["output_tok_s"]),
            *(_pcts(level, n, median=False) for n in LATENCIES),
        )
    console.print(t)
    console.print(
        f"errors: {result.num_errors} of {result.num_requests} requests "
        f"({result.error_rate:.1%}); warm-up errors: {result.warmup_errors}"
    )
    if opts.repeats > 1:
        console.print("figures are means over the repeats ± the 95% confidence half-width")
    for level in result.levels:
        for run in level.runs:
            for message in run.errors[:1]:
                console.print(f"[red]first error at {level.mode} {level.value:g}[/]: {message}")
                break


UNIT_TEXT = {"audio_s_per_s": "× real time", "items_per_s": "items/s"}


def print_task(result: TaskResult, env: Environment, console: Console) -> None:
    """The table of a `--task asr|embed|tts` run, with what it ran on and each row's settings."""
    console.print(
        f"[bold]machine[/]: {env.machine}; torch {env.torch}, transformers {env.transformers}"
    )
    m = result.model
    console.print(f"[bold]model[/]: {m['name']}, {m['device']} {m['dtype']}")
    w = "; ".join(
        f"{k.replace('_', ' ')} {_plain(v)}"
        for k, v in result.workload.items()
        if k not in ("name", "text") and v is not None
    )
    console.print(f"[bold]workload[/]: {result.workload['name']}: {w}")
    audio = result.unit == "audio_s_per_s"
    t = Table(title=f"{result.task}: median over the repeats")
    cols = ["engine", UNIT_TEXT[result.unit], *(["RTF"] if audio else []), "ferrum ÷", "check"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("engine", "check") else "right", no_wrap=True)
    for row in result.rows:
        ratio = result.ratio(row) if row.compare_to is not None else None
        cells = [row.label, _num(row.rate) if row.ok else row.status]
        cells += [_num(row.rtf, 3) if row.ok else "–"] if audio else []
        cells += [f"{ratio:.2f}×" if ratio is not None else "", _check(row)]
        t.add_row(*cells)
    console.print(t)
    for row in result.rows:
        version = f" {row.version}" if row.version else ""
        console.print(f"  {row.label}: {row.engine}{version}, {row.settings}", highlight=False)
        if not row.ok:
            console.print(f"  [yellow]{row.label}: {row.status}[/] — {row.detail}")
    note = "RTF = wall seconds per second of audio (lower is faster); " if audio else ""
    console.print(f"{note}ferrum ÷ = ferrum's rate over the baseline's, same work, same run")


def _plain(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _check(row: EngineFigures) -> str:
    """What shows the engines did the same work: words transcribed, embedding agreement."""
    if "words" in row.extra:
        return f"{row.extra['words']} words"
    if "min_cosine" in row.extra:
        return f"min cosine {row.extra['min_cosine']:.5f}"
    if "speech_seconds" in row.extra:
        return f"{row.extra['speech_seconds']:.1f} s of speech a pass"
    if "mean_tokens" in row.extra:
        return f"{row.extra['mean_tokens']:.1f} tokens mean"
    return ""


# ---- plot ---------------------------------------------------------------------------------


def plot_offline(result: OfflineResult, path: str | Path) -> None:
    series = {"ferrum": [c.ours for c in result.sweep]}
    if all(c.baseline for c in result.sweep):
        series["transformers"] = [c.baseline for c in result.sweep if c.baseline]
    _plot(series, "concurrency (requests in flight)", True, path)


def plot_online(result: OnlineResult, path: str | Path) -> None:
    closed = [lv for lv in result.levels if lv.mode == "concurrency"]
    opened = [lv for lv in result.levels if lv.mode == "request_rate"]
    series = {"closed loop": closed} if closed else {"open loop": opened}
    xlabel = "concurrency (clients)" if closed else "request rate (requests/s)"
    _plot(series, xlabel, False, path)


def _plot(series: dict[str, list[LevelResult]], xlabel: str, median: bool, path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_lat) = plt.subplots(1, 2, figsize=PLOT_SIZE_IN)
    ticks: set[float] = set()
    for i, (label, levels) in enumerate(series.items()):
        levels = [lv for lv in levels if math.isfinite(lv.value)]
        xs = [lv.value for lv in levels]
        ticks.update(xs)
        color = f"C{i}"

        def figure(name: str, levels=levels) -> list[float]:
            return [lv.summary[name].median if median else lv.summary[name].mean for lv in levels]

        ax_rate.plot(xs, figure("output_tok_s"), marker="o", color=color, label=label)
        ax_lat.plot(xs, figure("ttft_p50_ms"), marker="o", color=color, label=f"{label}: TTFT p50")
        ax_lat.plot(
            xs, figure("tpot_p50_ms"), marker="s", ls="--", color=color, label=f"{label}: TPOT p50"
        )
    ax_rate.set(xlabel=xlabel, ylabel="output tokens/s", title="throughput")
    ax_lat.set(xlabel=xlabel, ylabel="ms", title="latency", yscale="log")
    for ax in (ax_rate, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(ticks), [f"{x:g}" for x in sorted(ticks)])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)
