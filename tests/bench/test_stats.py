"""Percentiles and confidence intervals against numpy/scipy; level figures from known timings."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from ferrum.bench.stats import (
    Estimate,
    LatencySummary,
    LevelFigures,
    LevelResult,
    RequestTiming,
    percentile,
    t_quantile_95,
)


def test_percentile_matches_numpy_linear_interpolation():
    rng = random.Random(1)
    for n in (1, 2, 3, 10, 101):
        values = [rng.expovariate(1.0) for _ in range(n)]
        for q in (0, 1, 50, 90, 99, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-12)
    assert math.isnan(percentile([], 50))


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 5, 9, 30, 31, 45, 100, 1000):
        assert t_quantile_95(dof) == pytest.approx(stats.t.ppf(0.975, dof), abs=1e-3)


def test_estimate_ci_matches_scipy_interval():
    stats = pytest.importorskip("scipy.stats")
    values = [10.0, 12.5, 11.0, 9.5, 13.0]
    est = Estimate.of(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert est.mean == pytest.approx(np.mean(values))
    assert est.median == 11.0
    assert est.ci95 == pytest.approx((hi - lo) / 2, rel=1e-3)
    single = Estimate.of([3.0])
    assert single.median == 3.0 and math.isnan(single.ci95)


def test_latency_summary_is_in_milliseconds_and_ordered():
    s = LatencySummary.of([0.001 * i for i in range(1, 101)])
    assert s.count == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p50 <= s.p90 <= s.p99


def test_level_figures_from_known_timings():
    # two requests in 2 s: 4 tokens at 0.5 s then every 0.1 s; 2 tokens at 1.0 s and 1.5 s
    a = RequestTiming(0.0, [0.5, 0.6, 0.7, 0.8], end=0.8, input_tokens=10, output_tokens=4)
    b = RequestTiming(0.5, [1.0, 1.5], end=1.5, input_tokens=6, output_tokens=2)
    failed = RequestTiming(0.0, error="HTTP 500: boom")
    f = LevelFigures.of([a, b, failed], duration_s=2.0)
    assert (f.num_requests, f.num_errors, f.errors) == (3, 1, ["HTTP 500: boom"])
    assert f.output_tok_s == pytest.approx(6 / 2.0)
    assert f.total_tok_s == pytest.approx(22 / 2.0)
    assert f.request_s == pytest.approx(1.0)
    assert f.ttft.mean == pytest.approx((500 + 500) / 2)
    assert f.tpot.mean == pytest.approx((100 + 500) / 2)
    assert f.itl.p50 == pytest.approx(100)
    assert f.itl.count == 4
    assert f.mean_in_flight == pytest.approx((0.8 + 1.0) / 2.0)
    assert f.decode_tok_s == pytest.approx(0.9 / 0.3)  # in flight / mean TPOT (0.3 s)


def test_level_result_summarizes_runs():
    runs = [
        LevelFigures.of([RequestTiming(0, [0.1, 0.2], end=0.2, output_tokens=2)], d)
        for d in (1.0, 2.0, 4.0)
    ]
    level = LevelResult("concurrency", 1, runs)
    assert level.median("output_tok_s") == pytest.approx(1.0)
    assert level.summary["output_tok_s"].values == pytest.approx([2.0, 1.0, 0.5])
    assert level.as_dict()["num_requests"] == 3
