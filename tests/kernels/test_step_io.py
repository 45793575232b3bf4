"""The decode step's host<->device kernels: staged inputs in (with each row's input token
gathered from the staging or from the device), sampled tokens out."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.conftest import DEVICE

ROWS, WIDTH, IDS, SOURCE = 5, 300, 0, 4  # WIDTH: more than one program's BLOCK of rows


def _pinned(t: torch.Tensor) -> torch.Tensor:
    return t.pin_memory() if DEVICE.type == "cuda" else t


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_inputs_from_host_copies_the_rows_and_gathers_the_tokens(batch):
    from ferrum.kernels.step_io import inputs_from_host

    gen = torch.Generator().manual_seed(batch)
    host = _pinned(torch.randint(0, 1000, (ROWS, WIDTH), generator=gen))
    # even rows read their own id (row IDS); odd rows the device-only row ROWS (the last
    # step's sampled tokens), at a shuffled position
    own = torch.arange(WIDTH)
    sampled = ROWS * WIDTH + torch.randperm(WIDTH, generator=gen)
    host[SOURCE] = torch.where(own % 2 == 0, own, sampled)
    inputs = torch.full((ROWS + 1, WIDTH), -1, dtype=torch.int64)
    inputs[ROWS] = torch.randint(1000, 2000, (WIDTH,), generator=gen)
    inputs = inputs.to(DEVICE)
    ids = torch.full((WIDTH,), -1, dtype=torch.int64, device=DEVICE)

    inputs_from_host(host, inputs, ids, IDS, SOURCE, batch)

    got, want = inputs.cpu(), host.clone()
    assert torch.equal(got[:ROWS, :batch], want[:, :batch])
    assert (got[:ROWS, batch:] == -1).all()  # nothing past the batch
    flat = torch.cat([want.flatten(), got[ROWS]])
    assert torch.equal(ids.cpu()[:batch], flat[want[SOURCE, :batch]])
    assert (ids.cpu()[batch:] == -1).all()


def test_to_host_copies_the_tokens():
    from ferrum.kernels.step_io import to_host

    src = torch.randint(0, 2**40, (300,), dtype=torch.int64).to(DEVICE)
    dst = _pinned(torch.zeros(300, dtype=torch.int64))
    to_host(src, dst)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    assert torch.equal(dst, src.cpu())


@pytest.mark.skipif(DEVICE.type != "cuda", reason="on the CPU every tensor is host memory")
def test_the_gpu_reaches_host_memory_only_when_page_locked():
    from ferrum.kernels.step_io import inputs_from_host, to_host

    with pytest.raises(ValueError, match="page-locked"):
        to_host(torch.zeros(4, dtype=torch.int64, device=DEVICE), torch.zeros(4, dtype=torch.int64))
    inputs = torch.zeros(ROWS + 1, WIDTH, dtype=torch.int64, device=DEVICE)
    with pytest.raises(ValueError, match="page-locked"):
        inputs_from_host(torch.zeros(ROWS, WIDTH, dtype=torch.int64), inputs, inputs[0], 0, 4, 1)


@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_this_gpu_reaches_page_locked_memory():
    """Linux with unified addressing maps page-locked memory for every GPU: the kernels' way."""
    from ferrum.kernels.step_io import reaches_host

    assert reaches_host(DEVICE.index or 0)
