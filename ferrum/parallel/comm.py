"""The process group of a tensor-parallel engine, and the collectives its layers call.

NCCL between GPUs, gloo between CPU processes. Rendezvous is over TCP on the loopback interface
(one host). A collective that waits on a dead rank fails after `COLLECTIVE_TIMEOUT` rather than
hanging forever.
"""

from __future__ import annotations

import socket
import threading
from datetime import timedelta

import torch
import torch.distributed as dist

from ferrum.errors import DeviceError

COLLECTIVE_TIMEOUT = timedelta(seconds=300)
DESTROY_TIMEOUT_S = 5.0
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def init_group(rank: int, world_size: int, port: int, device: torch.device) -> None:
    """Join the engine's process group as `rank` (one group per process)."""
    if dist.is_initialized():
        raise DeviceError(
            "this process already runs a tensor-parallel engine; close it first "
            "(LLM.close()) or run one engine per process"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device),
        init_method=f"tcp://{LOOPBACK}:{port}",
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
        **({"device_id": device} if device.type == "cuda" else {}),
    )


def destroy_group(timeout_s: float = DESTROY_TIMEOUT_S) -> None:
    """Leave the process group. NCCL's teardown can hang once collectives were captured in a
    CUDA graph (pytorch#115388), so it runs in a thread that is abandoned after `timeout_s`:
    the process can still exit, and a new group is refused while the old one lingers."""
    if not dist.is_initialized():
        return
    thread = threading.Thread(target=dist.destroy_process_group, daemon=True)
    thread.start()
    thread.join(timeout_s)


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over the ranks, in place; returns it."""
    dist.all_reduce(x)
    return x


def all_gather_last_dim(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """(N, C) on every rank -> (N, world_size * C), rank r's columns at r*C."""
    x = x.contiguous()
    if x.device.type == "cuda":
        out = torch.empty((world_size, *x.shape), dtype=x.dtype, device=x.device)
        dist.all_gather_into_tensor(out, x)
        parts = out.unbind(0)
    else:  # gloo has no all_gather_into_tensor
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x)
    return torch.cat(parts, dim=-1)
