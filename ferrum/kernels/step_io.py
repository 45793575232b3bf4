"""A decode step's few numbers moved between host and device by kernels rather than copies.

Between two decode graphs the stream copies the last step's tokens to the host and the next
step's inputs to the device. Each async copy hands the stream to a copy engine and back, and on
an H100 the GPU then idles about 4-5 us on either side of it (`gpu_profile --between`), against
about a microsecond between two kernels. Page-locked host memory is mapped into the GPU's
address space (unified virtual addressing), so a kernel can read and write it directly:
`inputs_from_host` copies the staged inputs and gathers each row's input token on the way (its
own id, or a token the step in flight sampled, still on the device), which the graph otherwise
begins with an index kernel for; `to_host` writes a step's tokens into page-locked memory.
Where the driver does not map page-locked memory for the GPU (`reaches_host` says), callers
fall back to copies.
"""

from __future__ import annotations

from functools import cache

import torch
import triton
import triton.language as tl

BLOCK = 256  # rows per program


# the row counts change from step to step: one compile for all of them (triton would otherwise
# compile a variant for 1, for multiples of 16 and for the rest, the first time each comes up,
# in the middle of serving)
@triton.jit(do_not_specialize=["batch"])
def _inputs_kernel(
    host_ptr,  # (ROWS, stride) int64 page-locked staging
    dev_ptr,  # (> ROWS, stride) int64 device inputs
    ids_ptr,  # (batch,) int64 device: each row's input token
    ids_row,
    source_row,
    batch,
    stride,
    ROWS: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK: tl.constexpr,
):
    m = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    r = tl.arange(0, BLOCK_R)[:, None]
    mask = (r < ROWS) & (m < batch)[None, :]
    offs = r * stride + m[None, :]
    staged = tl.load(host_ptr + offs, mask=mask, other=0)  # one read of the host, every row
    tl.store(dev_ptr + offs, staged, mask=mask)
    # each row's token: its own id, or (a flat index past the staged rows) a device-only entry
    src = tl.sum(tl.where(r == source_row, staged, 0), 0)
    own = tl.sum(tl.where(r == ids_row, staged, 0), 0)
    on_device = src >= ROWS * stride
    sampled = tl.load(dev_ptr + src, mask=(m < batch) & on_device, other=0)
    tl.store(ids_ptr + m, tl.where(on_device, sampled, own), mask=m < batch)


@triton.jit(do_not_specialize=["n"])
def _to_host_kernel(src_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(dst_ptr + i, tl.load(src_ptr + i, mask=i < n), mask=i < n)


def inputs_from_host(
    host: torch.Tensor,  # (R, W) int64, page-locked
    inputs: torch.Tensor,  # (>R, W) int64 on the device
    ids: torch.Tensor,  # (>= batch,) int64 on the device
    ids_row: int,
    source_row: int,
    batch: int,
) -> None:
    """inputs[:R, :batch] = host[:, :batch], and each row i's input token into ids[i]: where
    host[source_row, i] indexes the flattened inputs past their first R rows, that device entry
    (a token sampled by the step in flight), else the row's own id, host[ids_row, i]."""
    rows, width = host.shape
    if inputs.is_cuda and not host.is_pinned():
        raise ValueError("the GPU reads host memory only where it is page-locked")
    if inputs.stride() != (width, 1) or host.stride() != (width, 1):
        raise ValueError("inputs_from_host needs staging laid out like the inputs")
    if batch:
        _inputs_kernel[(triton.cdiv(batch, BLOCK),)](
            host, inputs, ids, ids_row, source_row, batch, width, ROWS=rows,
            BLOCK_R=triton.next_power_of_2(rows), BLOCK=BLOCK,
        )  # fmt: skip


def to_host(src: torch.Tensor, dst: torch.Tensor) -> None:
    """dst[:] = src, a contiguous int64 device tensor into page-locked host memory; complete
    (visible to the host) once the stream has run past it, as an async copy is."""
    if src.is_cuda and not dst.is_pinned():
        raise ValueError("the GPU writes host memory only where it is page-locked")
    if not src.is_contiguous() or src.shape != dst.shape or src.dtype != dst.dtype:
        raise ValueError("to_host needs a contiguous source and a host twin of it")
    n = src.numel()
    if n:
        _to_host_kernel[(triton.cdiv(n, BLOCK),)](src, dst, n, BLOCK=BLOCK)


@cache
def reaches_host(device_index: int) -> bool:
    """Whether kernels on this GPU can address page-locked host memory (triton refuses a
    pointer the driver has not mapped for the device): probed once with a one-element write."""
    dst = torch.zeros(1, dtype=torch.int64).pin_memory()
    try:
        to_host(torch.ones(1, dtype=torch.int64, device=f"cuda:{device_index}"), dst)
    except ValueError:
        return False
    torch.cuda.synchronize(device_index)
    return dst.item() == 1
