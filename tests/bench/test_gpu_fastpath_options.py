"""The fast-path benchmark's switch for the decode kernels' PDL preloads: off inside, restored
after (the launch section builds one engine with them off between engines with them on).

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
