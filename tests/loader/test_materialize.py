"""materialize(): a meta-device model gets its parameters as views of one allocation in the
target dtype, tied parameters stay tied, shard loaders stay attached and computed buffers are
rebuilt."""

from __future__ import annotations

import torch
from torch import nn

from ferrum.layers.linear import FusedLinear
from ferrum.loader.weights import ARENA_ALIGN, materialize


class _Table(nn.Module):
    """A module with a computed buffer, as the rotary tables are."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.empty(5), persistent=False)

    def init_buffers(self) -> None:
        self.table = torch.arange(5.0, device=self.table.device)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.qkv = FusedLinear(6, {"q": 4, "k": 2, "v": 2}, bias=True)
        self.head = nn.Linear(6, 11, bias=False)
        self.head.weight = self.embed.weight  # tied
        self.odd = nn.Linear(3, 3)  # 9 + 3 elements: offsets after it must be re-aligned
        self.steps = nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)
        self.rope = _Table()


def test_one_arena_in_the_target_dtype():
    with torch.device("meta"):
        net = _Net()
    materialize(net, torch.device("cpu"), torch.bfloat16)
    params = list(net.parameters())
    assert {p.device.type for p in params} == {"cpu"}
    # floating parameters in the target dtype (never float32 first), others keep theirs
    assert {p.dtype for p in params if p is not net.steps} == {torch.bfloat16}
    assert net.steps.dtype == torch.int64
    # every parameter is a view of one storage, each starting on the alignment
    storages = {p.untyped_storage().data_ptr() for p in params}
    assert len(storages) == 1
    base = storages.pop()
    assert all((p.data_ptr() - base) % ARENA_ALIGN == 0 for p in params)
    # no two parameters overlap
    spans = sorted((p.data_ptr(), p.data_ptr() + p.numel() * p.element_size()) for p in params)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    # tied stays tied: one parameter, one place
    assert net.head.weight is net.embed.weight
    assert len(params) == 6  # embed (head's too), qkv and odd weight + bias, steps
    # the fused projection's shard loader survives and writes into the new storage
    shard = torch.full((2, 6), 3.0)
    net.qkv.weight.weight_loader(net.qkv.weight, shard, "k")
    assert torch.equal(net.qkv.weight[4:6].float(), shard)
    assert net.qkv.loaded_shards == {("weight", "k")}
    # computed buffers rebuilt on the device
    assert torch.equal(net.rope.table, torch.arange(5.0))
