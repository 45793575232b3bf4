"""The read-only kernels of `ferrum.bench.gpu_stream` read every element once: their sums are the
tensor's sum, so the bytes the benchmark counts are the bytes they stream."""

from __future__ import annotations

import torch

from tests.kernels.conftest import DEVICE


def _values(n: int) -> torch.Tensor:
    # small integers: exact in float16 and in any float32 summation order
    return (torch.arange(n, dtype=torch.float32) % 7 - 3).to(DEVICE, torch.float16)


def test_static_read_sums_every_element():
    from ferrum.bench.gpu_stream import read

    x = _values(5000)  # not a multiple of a program's share
    out = torch.zeros(1024, dtype=torch.float32, device=DEVICE)
    read(x, out, per_sm=2, block=8)
    assert out.sum().item() == x.float().sum().item()


def test_queued_read_hands_out_every_unit_once():
    from ferrum.bench.gpu_stream import read_queue

    x = _values(3000)
    out = torch.zeros(1024, dtype=torch.float32, device=DEVICE)
    counter = torch.zeros(1, dtype=torch.int32, device=DEVICE)
    read_queue(x, out, counter, per_sm=1, block=8, unit=256)  # 12 units, 16 programs
    assert out.sum().item() == x.float().sum().item()
    assert int(counter) >= 12  # every unit taken (then one failed take per program)


def test_kv_read_sums_each_sequences_context():
    from ferrum.bench.gpu_stream import kv_read

    blocks, block, heads, dim, ctx = 8, 4, 2, 16, 10  # 3 blocks a sequence, the last in part
    cache = _values(2 * blocks * block * heads * dim).view(2, blocks, block, heads, dim)
    tables = torch.tensor([[5, 0, 3], [7, 2, 6]], dtype=torch.int32, device=DEVICE)
    expected = 0.0
    for row in tables.tolist():
        tokens = cache[:, row].reshape(2, 3 * block, heads, dim)[:, :ctx]
        expected += tokens.float().sum().item()
    for splits in (1, 3):
        out = torch.zeros(64, dtype=torch.float32, device=DEVICE)
        kv_read(cache, tables, ctx, splits, 1, out)
        assert out.sum().item() == expected
