"""The one backend layer: which device and dtype to run on, and how much memory to plan for.

Every pipeline (LLM engine, Whisper, embeddings, TTS) asks this module, so `--device` and
`--dtype` mean the same everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ferrum.errors import DeviceError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def pick_device(name: str = "auto") -> torch.device:
    """Resolve `auto|cpu|cuda|cuda:N|mps` to a device that exists here, or raise DeviceError."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name}: CUDA is not available (torch {torch.__version__})."
            )
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeviceError("--device mps: Apple MPS is not available on this machine.")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """Resolve `auto|bfloat16|float16|float32`. `auto` is bf16 on GPUs that have it, else fp32
    (CPU matmuls in fp32 are the fastest exact path PyTorch offers there)."""
    name = (name or "auto").lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    if name not in DTYPES:
        raise DeviceError(f"unknown dtype {name!r}; use auto, bfloat16, float16 or float32")
    return DTYPES[name]


@dataclass(frozen=True)
class Backend:
    """A resolved device and dtype, passed to every pipeline."""

    device: torch.device
    dtype: torch.dtype

    @classmethod
    def resolve(cls, device: str = "auto", dtype: str = "auto") -> Backend:
        dev = pick_device(device)
        return cls(dev, pick_dtype(dtype, dev))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "mps":
            torch.mps.synchronize()


def set_cpu_threads(num_threads: int | None = None) -> None:
    """Use every core for intra-op work unless the user set OMP_NUM_THREADS themselves."""
    if num_threads:
        torch.set_num_threads(num_threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


def free_device_memory(device: torch.device) -> tuple[int, int]:
    """(free, total) bytes on a CUDA device."""
    if device.type != "cuda":
        raise DeviceError("free_device_memory is only defined for CUDA devices")
    return torch.cuda.mem_get_info(device)


def to_device(values, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A small host list as a tensor on `device`, without waiting for the device: on CUDA the
    copy goes through pinned memory, since a copy from pageable memory first waits for all work
    queued on the stream (which would stall overlapped steps). The caching host allocator keeps
    the pinned block until the copy is done."""
    host = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
