"""Summary statistics for benchmark figures: percentiles of latencies, and the mean, median and
95% confidence interval of a figure measured over repeats.

Plain Python (no numpy) so that the online client stays light.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (beyond: an expansion).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z95 = 1.959964  # the normal's

PERCENTILES = (50, 90, 99)  # the latency percentiles every report carries
MAX_ERRORS_KEPT = 5  # error messages kept per run (the count is always complete)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics (numpy's
    default method). NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass
class LatencySummary:
    """A latency distribution in milliseconds."""

    mean: float
    p50: float
    p90: float
    p99: float
    count: int  # samples summarized

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        ms = [s * 1000.0 for s in seconds]
        mean = statistics.fmean(ms) if ms else math.nan
        p50, p90, p99 = (percentile(ms, q) for q in PERCENTILES)
        return cls(mean, p50, p90, p99, len(ms))

    def as_dict(self) -> dict:
        return asdict(self)


def t_quantile_95(dof: int) -> float:
    """Two-sided 95% quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        return math.nan
    if dof <= len(_T95):
        return _T95[dof - 1]
    # Cornish-Fisher expansion around the normal quantile (error < 1e-4 past 30 dof)
    z, v = _Z95, float(dof)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
    )


@dataclass
class Estimate:
    """One figure measured `n` times: median (what BENCH.md quotes), mean and the half-width of
    the 95% confidence interval of the mean (Student's t; NaN for a single run)."""

    median: float
    mean: float
    ci95: float
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        vals = [float(v) for v in values]
        if not vals:
            return cls(math.nan, math.nan, math.nan, 0, [])
        mean = statistics.fmean(vals)
        ci = math.nan
        if len(vals) > 1:
            ci = t_quantile_95(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
        return cls(statistics.median(vals), mean, ci, len(vals), vals)

    def as_dict(self) -> dict:
        return asdict(self)


def ratio(ours: float, theirs: float) -> float:
    """ours / theirs, NaN when the baseline is zero or missing."""
    if not theirs or math.isnan(theirs):
        return math.nan
    return ours / theirs


@dataclass
class RequestTiming:
    """What one benchmark request did, in time.perf_counter seconds."""

    start: float  # sent (online) or added to the engine (offline)
    token_times: list[float] = field(default_factory=list)  # arrival of each token (or chunk)
    end: float | None = None
    input_tokens: int | None = None
    output_tokens: int = 0
    error: str | None = None  # why it failed; None when it succeeded

    @property
    def ok(self) -> bool:
        return self.error is None and self.end is not None and self.output_tokens > 0

    @property
    def ttft(self) -> float | None:
        return self.token_times[0] - self.start if self.token_times else None

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first."""
        if self.output_tokens < 2 or not self.token_times:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (self.output_tokens - 1)

    @property
    def itls(self) -> list[float]:
        """Gaps between consecutive tokens (between chunks, for a server that sends several
        tokens in one chunk)."""
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]


@dataclass
class LevelFigures:
    """The figures of one run at one load level (a concurrency, a request rate, or a batch)."""

    num_requests: int
    num_errors: int
    duration_s: float
    input_tokens: int
    output_tokens: int
    output_tok_s: float  # output tokens of successful requests / wall time
    total_tok_s: float  # (prompt + output) tokens / wall time
    request_s: float  # successful requests / wall time
    mean_in_flight: float  # requests in flight on average (Little's law: sum of latencies / time)
    decode_tok_s: float  # aggregate decode rate: mean_in_flight / mean time per output token
    ttft: LatencySummary
    tpot: LatencySummary
    itl: LatencySummary
    e2e: LatencySummary
    errors: list[str] = field(default_factory=list)  # the first few error messages

    @classmethod
    def of(cls, timings: Sequence[RequestTiming], duration_s: float) -> LevelFigures:
        good = [t for t in timings if t.ok]
        failed = [t.error or "no output" for t in timings if not t.ok]
        inputs = sum(t.input_tokens or 0 for t in good)
        outputs = sum(t.output_tokens for t in good)
        span = max(duration_s, 1e-9)
        in_flight = sum((t.end or t.start) - t.start for t in good) / span
        tpots = [x for t in good if (x := t.tpot) is not None]
        mean_tpot = statistics.fmean(tpots) if tpots else math.nan
        return cls(
            num_requests=len(timings),
            num_errors=len(failed),
            duration_s=duration_s,
            input_tokens=inputs,
            output_tokens=outputs,
            output_tok_s=outputs / span,
            total_tok_s=(inputs + outputs) / span,
            request_s=len(good) / span,
            mean_in_flight=in_flight,
            decode_tok_s=in_flight / mean_tpot if mean_tpot > 0 else math.nan,
            ttft=LatencySummary.of([x for t in good if (x := t.ttft) is not None]),
            tpot=LatencySummary.of(tpots),
            itl=LatencySummary.of([gap for t in good for gap in t.itls]),
            e2e=LatencySummary.of([(t.end or t.start) - t.start for t in good]),
            errors=failed[:MAX_ERRORS_KEPT],
        )

    def scalars(self) -> dict[str, float]:
        """Every figure as a flat name → number map (latencies in ms)."""
        out: dict[str, float] = {
            "output_tok_s": self.output_tok_s,
            "total_tok_s": self.total_tok_s,
            "request_s": self.request_s,
            "decode_tok_s": self.decode_tok_s,
            "mean_in_flight": self.mean_in_flight,
            "duration_s": self.duration_s,
            "num_errors": float(self.num_errors),
        }
        for name in ("ttft", "tpot", "itl", "e2e"):
            summary: LatencySummary = getattr(self, name)
            out[f"{name}_mean_ms"] = summary.mean
            for q in PERCENTILES:
                out[f"{name}_p{q}_ms"] = getattr(summary, f"p{q}")
        return out

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LevelResult:
    """One load level measured `len(runs)` times, with each figure summarized over the runs."""

    mode: str  # "throughput" | "concurrency" | "request_rate"
    value: float  # the batch limit, the concurrency, or requests per second (inf: all at once)
    runs: list[LevelFigures]

    @property
    def summary(self) -> dict[str, Estimate]:
        names = self.runs[0].scalars().keys() if self.runs else []
        return {n: Estimate.of([r.scalars()[n] for r in self.runs]) for n in names}

    def median(self, name: str) -> float:
        return self.summary[name].median

    @property
    def num_requests(self) -> int:
        return sum(r.num_requests for r in self.runs)

    @property
    def num_errors(self) -> int:
        return sum(r.num_errors for r in self.runs)

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "value": self.value,
            "num_requests": self.num_requests,
            "num_errors": self.num_errors,
            "summary": {k: v.as_dict() for k, v in self.summary.items()},
            "runs": [r.as_dict() for r in self.runs],
        }
