"""Kernel tests run the Triton kernels in Triton's CPU interpreter when there is no GPU.

The interpreter is chosen when `triton.jit` decorates a kernel, so TRITON_INTERPRET is set here,
before any kernel module is imported. Without triton every test here is skipped.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from ferrum.kernels import triton_available  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# The interpreter has no bfloat16 arithmetic (numpy lacks the type): CPU runs check float16
# and float32, the GPU bfloat16 too.
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])


def _fix_interpreter_loop_bounds() -> None:
    """Triton 3.6's interpreter holds scalars as 1-element numpy arrays and turns them into
    Python ints (loop bounds) with int(array), which numpy >= 2.3 refuses for arrays with a
    dimension; read the element instead."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_ferrum_fixed", False):
        return

    def patched(tensor, scope) -> None:
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._ferrum_fixed = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patched


if triton_available() and os.environ.get("TRITON_INTERPRET") == "1":
    _fix_interpreter_loop_bounds()


def pytest_collection_modifyitems(config, items):
    if triton_available():
        return
    skip = pytest.mark.skip(reason="triton is not installed (pip install triton; Linux only)")
    for item in items:
        if "tests/kernels/" in str(item.fspath):
            item.add_marker(skip)


def tolerance(dtype: torch.dtype) -> dict:
    return {
        torch.float32: {"atol": 1e-4, "rtol": 1e-4},
        torch.float16: {"atol": 2e-3, "rtol": 2e-3},
        torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
    }[dtype]
