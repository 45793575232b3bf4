"""The programmatic-dependent-launch switch: only on where the GPU supports it, and the launch
options it gives the kernels."""

from __future__ import annotations

import pytest
import torch

from ferrum.kernels import launch


@pytest.fixture(autouse=True)
def _off_after():
    yield
    launch.set_pdl(False)


def test_options_follow_the_switch():
    launch.set_pdl(False)
    assert launch.options() == {"USE_PDL": False}
    launch.set_pdl(True)
    supported = launch.pdl_supported()
    assert launch.pdl_enabled() == supported
    expected = {"USE_PDL": True, "launch_pdl": True} if supported else {"USE_PDL": False}
    assert launch.options() == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_no_gpu_no_pdl():
    assert not launch.pdl_supported()
    launch.set_pdl(True)
    assert not launch.pdl_enabled()


def test_engine_without_cuda_leaves_pdl_off(tiny_qwen3):
    """EngineConfig.pdl defaults to on where supported: a CPU engine must not switch it on."""
    from ferrum import LLM

    if torch.cuda.is_available():
        pytest.skip("checks a CPU engine")
    llm = LLM(str(tiny_qwen3), device="cpu", dtype="float32", pdl=True, skinny_gemm=True)
    assert not launch.pdl_enabled()
    llm.close()
