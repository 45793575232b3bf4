"""Programmatic dependent launch (PDL) for the kernels of a decode step.

A decode step of a small model is a chain of a few hundred kernels of a few microseconds each,
and between two of them the GPU drains the first before it starts the second: about a
microsecond of an idle chip per kernel. On Hopper a kernel launched with PDL may be scheduled
while the one before it is still finishing; it then waits (`gdc_wait`, griddepcontrol.wait)
until that kernel has completed and its writes are visible before reading anything. Every
kernel here that takes `USE_PDL` does that wait before its first load of another kernel's
output, so a chain of them stays ordered, and a kernel launched without PDL (cuBLAS, torch)
still waits for the whole of the one before it as usual.

PDL is a process-wide switch (the model runner sets it from EngineConfig.pdl on a GPU of compute
capability 9.0 or later); `options()` gives the launch keyword and the kernel's constexpr.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache

import torch

try:  # grid dependency control, for the kernels' USE_PDL branch (pruned when it is off)
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except Exception:  # an older triton (or none): USE_PDL is never set
    gdc_launch_dependents = gdc_wait = None

try:  # an L2 prefetch hint, for what a kernel may read before its wait (nothing to order)
    import triton
    import triton.language as tl

    @triton.jit
    def prefetch_l2(ptrs):
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1]; // dummy $0", "=r,l", [ptrs], dtype=tl.int32,
            is_pure=False, pack=1,
        )  # fmt: skip
except Exception:  # no triton: no kernel uses it
    prefetch_l2 = None

_enabled = False


@cache
def pdl_supported(device_index: int = 0) -> bool:
    """Whether this triton has grid dependency control and the GPU is Hopper or newer."""
    if gdc_wait is None or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def set_pdl(enabled: bool, device_index: int = 0) -> None:
    """Launch the kernels with PDL from now on, where the GPU supports it."""
    global _enabled
    _enabled = enabled and pdl_supported(device_index)


def pdl_enabled() -> bool:
    return _enabled


def options() -> dict:
    """Keyword arguments for a kernel launch: the constexpr USE_PDL, and launch_pdl when on."""
    return {"USE_PDL": True, "launch_pdl": True} if _enabled else {"USE_PDL": False}


@contextmanager
def compile_only(workers: int | None = None) -> Iterator[bool]:
    """Within it, a Triton kernel launch compiles the kernel for its arguments and launches
    nothing; the compiles run in a pool of threads (Triton's compiler releases the GIL), all
    finished on exit, and then every kernel met is loaded onto the GPU, also in the pool (a
    kernel's first launch would do that, and triton 3.6 builds each kernel's C launcher then:
    a compiler run of its own). Code that launches the same kernels afterwards then finds them
    ready. Yields False (and changes nothing: the body's launches run) where this triton has no
    asynchronous compile mode; a caller then skips what it would run only to compile.

    Start-up runs the first steps through it (a prompt, a mixed step, a decode step of every
    graph batch size) before anything launches them: their few dozen compiles are most of a
    cold start. Only for code that makes no host decision from a kernel's output (the
    launches do not happen)."""
    try:
        from triton import AsyncCompileMode
        from triton.runtime._async_compile import FutureKernel
        from triton.runtime.jit import KernelInterface
    except ImportError:
        yield False
        return
    launch = KernelInterface.__getitem__
    met: dict[int, object] = {}  # what each launch compiled (a future of it, in the pool)

    def warmup(self, grid):
        def run(*args, **kwargs):
            kernel = self.run(*args, grid=grid, warmup=True, **kwargs)
            if kernel is not None:
                met.setdefault(id(kernel), kernel)
            return kernel

        return run

    device = torch.cuda.current_device() if torch.cuda.is_available() else None
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        with AsyncCompileMode(pool):
            KernelInterface.__getitem__ = warmup
            try:
                yield True
            finally:
                KernelInterface.__getitem__ = launch
        if device is not None:  # every compile is finished: the futures hold their kernels
            kernels = [k.result() if isinstance(k, FutureKernel) else k for k in met.values()]
            list(pool.map(lambda kernel: _load(kernel, device), kernels))


def _load(kernel, device: int) -> None:
    """Load a compiled kernel onto `device` ahead of its first launch; a kernel that cannot
    load is left for that launch to report."""
    try:
        torch.cuda.set_device(device)  # this thread's: the module goes to the caller's device
        kernel._init_handles()
    except Exception:  # noqa: BLE001, S110 (the launch raises it where it belongs)
        pass
