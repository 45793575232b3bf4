"""The process group of a tensor-parallel engine, and the collectives its layers call.

NCCL between GPUs, gloo between CPU processes, rendezvous over a TCP store on the loopback
interface (one host). The group is ferrum's own object, not torch.distributed's global default
group: an engine can be closed and another started in the same process, and a user's own
torch.distributed set-up is left alone. A collective that waits on a dead rank fails after
`COLLECTIVE_TIMEOUT` rather than hanging forever.
"""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import torch
import torch.distributed as dist

from ferrum.errors import DeviceError

COLLECTIVE_TIMEOUT = timedelta(seconds=300)
SHUTDOWN_TIMEOUT_S = 5.0
LOOPBACK = "127.0.0.1"

_group: dist.ProcessGroup | None = None
_store: dist.Store | None = None
_world_size = 1
# groups whose shutdown did not finish (NCCL teardown can hang once collectives were captured
# in a CUDA graph, pytorch#115388): kept referenced so no destructor blocks the caller
_retired: list[dist.ProcessGroup] = []


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def init_group(rank: int, world_size: int, port: int, device: torch.device) -> None:
    """Join the engine's process group as `rank` (rank 0 hosts the store; one group at a time
    per process)."""
    global _group, _store, _world_size
    if _group is not None:
        raise DeviceError("this process already runs a tensor-parallel engine; close it first")
    store = dist.TCPStore(LOOPBACK, port, world_size, rank == 0, timeout=COLLECTIVE_TIMEOUT)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        group = dist.ProcessGroupNCCL(store, rank, world_size)
    else:
        group = dist.ProcessGroupGloo(store, rank, world_size, COLLECTIVE_TIMEOUT)
    _group, _store, _world_size = group, store, world_size


def destroy_group() -> None:
    """Leave the group: shut it down in a thread that is abandoned after a few seconds."""
    global _group, _store
    group, _group, _store = _group, None, None
    if group is None:
        return
    shutdown = getattr(group, "shutdown", None)
    if shutdown is None:
        _retired.append(group)
        return
    thread = threading.Thread(target=shutdown, daemon=True)
    thread.start()
    thread.join(SHUTDOWN_TIMEOUT_S)
    if thread.is_alive():
        _retired.append(group)


def _require() -> dist.ProcessGroup:
    if _group is None:
        raise DeviceError("no tensor-parallel group: the engine was closed")
    return _group


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over the ranks, in place; returns it."""
    _require().allreduce([x]).wait()
    return x


def broadcast_from_first(x: torch.Tensor) -> torch.Tensor:
    """Rank 0's `x` on every rank, in place; returns it."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    _require().broadcast([x], opts).wait()
    return x


def all_gather_last_dim(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """(N, C) on every rank -> (N, world_size * C), rank r's columns at r*C."""
    x = x.contiguous()
    out = torch.empty((world_size * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    _require()._allgather_base(out, x).wait()  # rank r's rows at r*N
    parts = out.view(world_size, *x.shape).unbind(0)
    return torch.cat(parts, dim=-1)
