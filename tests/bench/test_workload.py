"""Datasets, length ranges and arrival times of the benchmark workloads."""

from __future__ import annotations

import json
import statistics

import pytest

from ferrum.bench.workload import LengthRange, WorkloadSpec, poisson_arrivals, sweep_size
from ferrum.errors import InvalidInputError


def test_length_range_parses_numbers_and_ranges():
    assert LengthRange.parse("128") == LengthRange(128, 128)
    assert LengthRange.parse("100:1024") == LengthRange(100, 1024)
    assert str(LengthRange.parse("4:16")) == "4:16"
    for bad in ("0", "16:4", "a", "1:2:3", "", "-5"):
        with pytest.raises(InvalidInputError, match="--input-len"):
            LengthRange.parse(bad, "--input-len")


def test_random_requests_are_seeded_in_range_and_phase_fresh():
    spec = WorkloadSpec(input_len=LengthRange(4, 16), output_len=LengthRange(2, 9), vocab_size=50)
    reqs = spec.requests(200)
    assert all(4 <= len(r.prompt) <= 16 and 2 <= r.output_len <= 9 for r in reqs)
    assert all(0 <= t < 50 for r in reqs for t in r.prompt)
    assert {len(r.prompt) for r in reqs} == set(range(4, 17))  # uniform: every length appears
    assert [r.prompt for r in spec.requests(200)] == [r.prompt for r in reqs]  # seeded
    assert [r.prompt for r in spec.requests(5)] == [r.prompt for r in reqs[:5]]  # prefix-stable
    other = spec.requests(200, phase="c4/0")
    assert [(len(r.prompt), r.output_len) for r in other] == [
        (len(r.prompt), r.output_len) for r in reqs
    ]  # same amount of work ...
    assert sum(a.prompt != b.prompt for a, b in zip(reqs, other)) > 190  # ... in fresh prompts


def test_shared_prefix_requests_share_exactly_the_prefix():
    spec = WorkloadSpec("shared-prefix", LengthRange(8, 8), LengthRange(4, 4), prefix_len=32)
    reqs = spec.requests(10)
    prefix = reqs[0].prompt[:32]
    assert all(r.prompt[:32] == prefix and len(r.prompt) == 40 for r in reqs)
    assert len({tuple(r.prompt[32:]) for r in reqs}) == 10


def test_jsonl_requests_cycle_and_take_output_len(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [{"prompt": "hello"}, {"prompt": "bye", "output_len": 7}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    spec = WorkloadSpec("jsonl", output_len=LengthRange(3, 3), dataset_path=str(path))
    reqs = spec.requests(5)
    assert [r.prompt for r in reqs] == ["hello", "bye", "hello", "bye", "hello"]
    assert [r.output_len for r in reqs[:2]] == [3, 7]
    assert reqs[0].input_len is None


@pytest.mark.parametrize(
    "content, message",
    [("", "no lines"), ("{not json\n", "not JSON"), ('{"text": "x"}\n', "needs"),
     ('{"prompt": "x", "output_len": 0}\n', "output_len")],
)  # fmt: skip
def test_bad_jsonl_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        WorkloadSpec("jsonl", dataset_path=str(path)).requests(1)
    with pytest.raises(InvalidInputError, match="cannot read"):
        WorkloadSpec("jsonl", dataset_path=str(tmp_path / "missing.jsonl")).requests(1)


def test_bad_dataset_names_are_errors():
    with pytest.raises(InvalidInputError, match="unknown dataset"):
        WorkloadSpec("sharegpt")
    with pytest.raises(InvalidInputError, match="--dataset-path"):
        WorkloadSpec("jsonl")


def test_poisson_arrivals_have_the_requested_rate():
    times = poisson_arrivals(20000, rate=4.0, seed=0)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert times[0] == 0 and all(g >= 0 for g in gaps)
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.03)
    assert statistics.stdev(gaps) == pytest.approx(0.25, rel=0.05)  # exponential: sd = mean
    assert poisson_arrivals(3, float("inf"), 0) == [0.0, 0.0, 0.0]
    with pytest.raises(InvalidInputError):
        poisson_arrivals(3, 0.0, 0)


def test_sweep_size():
    assert sweep_size(1, 256) == 8
    assert sweep_size(16, 256) == 64
    assert sweep_size(64, 32) == 64  # never fewer than the concurrency
    assert sweep_size(2, 256, sweep_prompts=3) == 3
