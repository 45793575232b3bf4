"""The decode ceiling: bytes read per step against transformers' parameter counts and the
figures of BENCH.md, and the bandwidth probe."""

from __future__ import annotations

import math

import pytest
import torch

from ferrum.bench.ceiling import Ceiling, measure_copy_bandwidth, weight_bytes_per_step
from ferrum.registry import builtin_config

GB = 1e9


def ferrum_meta_model(alias: str) -> torch.nn.Module:
    from ferrum.models import model_class
    from ferrum.models.config import TransformerConfig

    config = TransformerConfig.from_hf(builtin_config(alias))
    with torch.device("meta"):
        return model_class(config.architecture)(config)


def hf_bytes_read(alias: str, bytes_per_param: int = 2) -> int:
    """transformers' own count: every parameter, less an untied input embedding table."""
    import transformers

    config = builtin_config(alias)
    hf = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf)
    total = sum(p.numel() for p in model.parameters())
    if not hf.tie_word_embeddings:
        total -= model.get_input_embeddings().weight.numel()
    return total * bytes_per_param


@pytest.mark.parametrize(
    "alias, bench_md_gb", [("llama3.1:8b", 15.0), ("qwen3:8b", 15.1), ("qwen3:4b", 8.0)]
)
def test_weight_bytes_match_transformers_and_bench_md(alias, bench_md_gb):
    ours = weight_bytes_per_step(ferrum_meta_model(alias), torch.bfloat16)
    assert ours == hf_bytes_read(alias)
    assert ours / GB == pytest.approx(bench_md_gb, abs=0.05)


def test_weight_bytes_of_a_real_model_use_its_dtype():
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(config).to(torch.float16)
    every = sum(p.numel() for p in model.parameters())
    assert weight_bytes_per_step(model) == (every - 100 * 32) * 2


def test_ceiling_formula():
    # BENCH.md: an H100's 3.35 TB/s over 15.0 GB a step bounds batch-1 decode at ~223 tok/s
    c = Ceiling("H100", bandwidth_gb_s=3350.0, weight_bytes=int(15.0 * GB), kv_bytes_per_token=0)
    assert c.tok_s(1, 1000) == pytest.approx(223, abs=1)
    # with KV: 8 sequences of 1,000 tokens at 128 kB a token add 1.024 GB to every step
    c = Ceiling("x", bandwidth_gb_s=1000.0, weight_bytes=int(1 * GB), kv_bytes_per_token=128_000)
    assert c.bytes_per_step(8, 1000) == pytest.approx(2.024 * GB)
    assert c.tok_s(8, 1000) == pytest.approx(8 * 1000 / 2.024)


def test_copy_bandwidth_probe_runs_on_cpu():
    bandwidth = measure_copy_bandwidth(torch.device("cpu"), nbytes=4 << 20, repeats=3)
    assert math.isfinite(bandwidth) and bandwidth > 1e8  # any machine copies > 100 MB/s


@pytest.mark.gpu
def test_copy_bandwidth_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    bandwidth = measure_copy_bandwidth(torch.device("cuda"))
    assert 100 * GB < bandwidth < 10_000 * GB
