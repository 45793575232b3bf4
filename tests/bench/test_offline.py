"""`ferrum bench MODEL` end to end on the tiny model, with the transformers baseline."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from ferrum.bench.workload import LengthRange, WorkloadSpec
from ferrum.commands import _register, app
from ferrum.errors import InvalidInputError

LATENCIES = ("ttft", "tpot", "itl", "e2e")
SMALL = ["--input-len", "4:16", "--output-len", "4:16", "--device", "cpu", "--seed", "3"]


def bench(*args: str):
    _register()
    return CliRunner().invoke(app, ["bench", *args])


def check_level(level: dict, concurrency: int | None = None) -> None:
    s = {k: v["median"] for k, v in level["summary"].items()}
    assert level["num_errors"] == 0
    assert s["output_tok_s"] > 0 and s["total_tok_s"] > s["output_tok_s"] > 0
    assert s["request_s"] > 0 and s["decode_tok_s"] > 0
    for name in LATENCIES:
        p50, p90, p99 = (s[f"{name}_p{q}_ms"] for q in (50, 90, 99))
        assert 0 < p50 <= p90 <= p99, name
    if concurrency is not None:  # a closed loop never has more in flight than its clients
        assert s["mean_in_flight"] <= concurrency + 1e-6


def ratio_of(comparison: dict) -> float:
    ours, theirs = (
        comparison[s]["summary"]["output_tok_s"]["median"] for s in ("ferrum", "baseline")
    )
    return ours / theirs


def requested_tokens(n: int, phase: str) -> int:
    spec = WorkloadSpec(input_len=LengthRange(4, 16), output_len=LengthRange(4, 16), seed=3)
    return sum(r.output_len for r in spec.requests(n, phase))


def test_bench_against_transformers_writes_every_figure(tiny_llama, tmp_path):
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    result = bench(
        str(tiny_llama), "--num-prompts", "8", "--concurrency", "1,2", "--baseline",
        "transformers", "--json", str(out), "--plot", str(png), *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "throughput" in result.output and "ratio" in result.output
    d = json.loads(out.read_text())
    assert d["mode"] == "offline"
    assert {"machine", "torch", "transformers"} <= d["environment"].keys()
    assert d["model"]["random_weights"] is False and d["model"]["dtype"] == "float32"
    assert d["workload"]["num_prompts"] == 8 and d["workload"]["input_len"] == "4:16"
    assert d["baseline"]["attention"] == "sdpa" and d["baseline"]["cache"] == "dynamic"
    assert d["greedy_match"] is True  # the same model, the same greedy tokens
    assert "skipped" in d["ceiling"]  # no CUDA here

    tp = d["throughput"]
    for side in ("ferrum", "baseline"):
        check_level(tp[side])
        # every request generated exactly what it asked for (EOS ignored)
        assert tp[side]["runs"][0]["output_tokens"] == requested_tokens(8, "throughput/0")
    assert tp["ratio_output_tok_s"] == pytest.approx(ratio_of(tp))

    assert [level["concurrency"] for level in d["sweep"]] == [1, 2]
    for level in d["sweep"]:
        c = level["concurrency"]
        check_level(level["ferrum"], c)
        check_level(level["baseline"], c)
        assert level["ferrum"]["runs"][0]["output_tokens"] == requested_tokens(8, f"c{c}/0")
        assert level["ratio_output_tok_s"] == pytest.approx(ratio_of(level))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_random_weights_from_a_config_json(tiny_llama, tmp_path):
    shutil.copy(tiny_llama / "config.json", tmp_path / "config.json")  # no weights, no tokenizer
    out = tmp_path / "r.json"
    result = bench(
        str(tmp_path / "config.json"), "--random-weights", "--baseline", "transformers",
        "--num-prompts", "4", "--concurrency", "2", "--json", str(out), *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "random weights" in result.output
    d = json.loads(out.read_text())
    vocab = json.loads((tiny_llama / "config.json").read_text())["vocab_size"]
    assert d["model"]["random_weights"] is True and d["model"]["path"] is None
    assert d["workload"]["token_ids_below"] == vocab
    assert d["greedy_match"] is None  # two random inits are not comparable
    check_level(d["throughput"]["ferrum"])
    check_level(d["throughput"]["baseline"])
    check_level(d["sweep"][0]["ferrum"], 2)


def test_a_text_dataset_needs_a_tokenizer(tiny_llama, tmp_path):
    shutil.copy(tiny_llama / "config.json", tmp_path / "config.json")
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hello"}\n')
    result = bench(
        str(tmp_path / "config.json"), "--random-weights", "--dataset", "jsonl",
        "--dataset-path", str(data), "--num-prompts", "2", "--concurrency", "1", *SMALL,
    )  # fmt: skip
    assert isinstance(result.exception, InvalidInputError)
    assert "tokenizer" in str(result.exception)


def test_jsonl_prompts_are_tokenized_for_both_engines(tiny_llama, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "The quick brown fox"}\n{"prompt": "Paris is", "output_len": 3}\n')
    out = tmp_path / "j.json"
    result = bench(
        str(tiny_llama), "--dataset", "jsonl", "--dataset-path", str(data), "--num-prompts",
        "4", "--concurrency", "2", "--baseline", "transformers", "--json", str(out), *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    d = json.loads(out.read_text())
    ours, theirs = d["throughput"]["ferrum"]["runs"][0], d["throughput"]["baseline"]["runs"][0]
    assert ours["input_tokens"] == theirs["input_tokens"] > 0
    assert ours["output_tokens"] == theirs["output_tokens"]


def test_bad_flags_are_errors(tiny_llama):
    for args in (["--concurrency", "0"], ["--input-len", "9:2"], ["--baseline", "vllm"]):
        result = bench(str(tiny_llama), *args)
        assert isinstance(result.exception, InvalidInputError), args
