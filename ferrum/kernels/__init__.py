"""Triton kernels for the GPU fast path, one file per kernel, each with a Python launcher.

Triton is optional: nothing here imports it at module level. `triton_available()` says whether
the kernel modules can be imported; callers (layers, the attention backend) check it and the
tensor's device before importing a kernel module, and keep their torch path otherwise. Under
`TRITON_INTERPRET=1` the same kernels run on CPU tensors (slowly), which is how CI checks them
against the torch references.
"""

from __future__ import annotations

import os
from functools import cache

import torch


@cache
def triton_available() -> bool:
    """True when `import triton` works (Linux with a triton wheel installed)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install that fails at import time
        return False
    return True


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_kernels(x: torch.Tensor) -> bool:
    """Whether a layer should dispatch to a Triton kernel for tensor `x`: on CUDA with triton."""
    return x.is_cuda and triton_available()
