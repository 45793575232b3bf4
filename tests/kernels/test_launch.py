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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compile_only_compiles_and_launches_nothing():
    """Inside compile_only a launch compiles (in the pool) and runs nothing; on exit the kernel
    is loaded, and afterwards the same launch finds it ready and runs."""
    import triton
    import triton.language as tl

    @triton.jit
    def fill(out_ptr, value, BLOCK: tl.constexpr):
        tl.store(out_ptr + tl.arange(0, BLOCK), tl.full([BLOCK], value, tl.float32))

    out = torch.zeros(64, device="cuda")
    with launch.compile_only(workers=2) as active:
        fill[(1,)](out, 3.0, BLOCK=64)
    torch.cuda.synchronize()
    if not active:
        pytest.skip("this triton has no asynchronous compile mode")
    assert int(out.count_nonzero()) == 0  # nothing ran
    device = torch.cuda.current_device()
    (compiled,) = fill.device_caches[device][0].values()  # but it is compiled
    assert compiled.module is not None  # and loaded, ahead of its first launch
    fill[(1,)](out, 3.0, BLOCK=64)
    torch.cuda.synchronize()
    assert bool((out == 3.0).all())
    assert len(fill.device_caches[device][0]) == 1  # the same compile
