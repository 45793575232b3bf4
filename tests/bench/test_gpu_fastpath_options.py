"""The fast-path benchmark's switch for the decode kernels' PDL preloads: off inside, restored
after (the launch section builds one engine with them off between engines with them on); and
how it reads each model's figures from the child process that measured them.

Kernel modules are imported inside the tests: imported at collection, before the kernel tests'
conftest picks Triton's CPU interpreter, their kernels would be compiled for a GPU."""

from __future__ import annotations

import pytest


def _state() -> tuple:
    from ferrum.kernels import paged_decode, skinny_gemm

    return (skinny_gemm.ATTENTION_PRELOAD, skinny_gemm.CHAIN_PRELOAD,
            skinny_gemm.EARLY_TRIGGER, paged_decode.REDUCE_EARLY_TRIGGER)  # fmt: skip


def test_preloads_off_inside_and_restored_after():
    from ferrum.bench.gpu_fastpath import _preloads

    before = _state()
    assert before[0] > 0 and before[1] > 0 and before[2] and before[3]  # the defaults: on
    with _preloads(False):
        assert _state() == (0, 0, False, False)
    assert _state() == before
    with _preloads(True):
        assert _state() == before


def test_preloads_restored_when_the_body_fails():
    from ferrum.bench.gpu_fastpath import _preloads

    before = _state()
    with pytest.raises(RuntimeError), _preloads(False):
        raise RuntimeError("engine failed to build")
    assert _state() == before


def test_the_launch_section_times_the_default_and_the_variant_without_preloads():
    from ferrum.bench.gpu_fastpath import LAUNCH_VARIANTS

    assert LAUNCH_VARIANTS["skinny+pdl"] == {"skinny_gemm": True, "pdl": True}
    assert LAUNCH_VARIANTS["skinny+pdl, no preload"]["preload"] is False


def test_figures_child_output():
    """Each model's figures come from a child process's marked line; a child that fails or
    prints none is an error that carries its stderr."""
    from ferrum.bench.gpu_fastpath import FIGURES_MARK, child_entry

    out = f"some log\n{FIGURES_MARK}" + '{"decode1": {"ferrum_tok_s": 190.5}}\n'
    assert child_entry(0, out, "") == {"decode1": {"ferrum_tok_s": 190.5}}
    with pytest.raises(RuntimeError, match="exited 1: (?s:.*)CUDA out of memory"):
        child_entry(1, out, "Traceback ...\nCUDA out of memory")
    with pytest.raises(RuntimeError, match="exited 0"):
        child_entry(0, "no figures\n", "")
