"""The decode ceiling of a model on a GPU: how fast decoding could go if it only read memory.

A decode step of a batch of B sequences reads every weight once (the input embedding table
excepted: only B of its rows) and the K/V of every cached token of every sequence. Memory
bandwidth bounds the step rate, so

    tok/s <= B * bandwidth / (weight bytes + B * KV bytes per token * context).

The bandwidth is measured, not taken from a datasheet: a large device-to-device copy, counting
the bytes read and written, median of several (what PyTorch kernels can actually reach).
Measured only on CUDA: on a CPU shared with other processes one copy is no stable bound.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ferrum.bench.stats import LevelResult

COPY_BYTES = 1 << 30  # size of the buffer copied to measure bandwidth (1 GiB)
COPY_REPEATS = 10  # timed copies; the median is kept
COPY_WARMUPS = 2  # untimed copies first (allocation, clocks)
CPU_NOTE = "skipped: the ceiling is measured on CUDA devices only"


@dataclass
class Ceiling:
    """A model's memory-bound decode limit on one device."""

    device_name: str
    bandwidth_gb_s: float  # measured copy bandwidth, bytes read + written, 1e9 bytes/s
    weight_bytes: int  # weight bytes read per decode step
    kv_bytes_per_token: int  # K and V bytes of one cached token (all layers)

    def bytes_per_step(self, batch: float, context: float) -> float:
        return self.weight_bytes + batch * self.kv_bytes_per_token * context

    def tok_s(self, batch: float, context: float) -> float:
        """Upper bound on decode tokens per second for `batch` sequences of `context` tokens."""
        return batch * self.bandwidth_gb_s * 1e9 / self.bytes_per_step(batch, context)

    def as_dict(self) -> dict:
        return asdict(self)


def weight_bytes_per_step(model: nn.Module, dtype: torch.dtype | None = None) -> int:
    """Bytes of parameters a decode step reads: all of them, except an input embedding table
    that the output head does not share (a lookup reads one row a token). Works on meta-device
    models given `dtype`; otherwise each parameter's own element size is used."""
    head = getattr(model, "lm_head", None)
    head_weight = getattr(head, "weight", None)
    skipped: set[int] = set()
    if head is not None:  # a model with no lm_head (ferrum's tied models) reads the embedding
        for module in model.modules():
            if isinstance(module, nn.Embedding) and module.weight is not head_weight:
                skipped.add(id(module.weight))
    total = 0
    for p in model.parameters():  # shared (tied) parameters are yielded once
        if id(p) in skipped:
            continue
        size = torch.empty((), dtype=dtype).element_size() if p.is_meta and dtype else None
        total += p.numel() * (size or p.element_size())
    return total


def measure_copy_bandwidth(
    device: torch.device, nbytes: int = COPY_BYTES, repeats: int = COPY_REPEATS
) -> float:
    """Median bandwidth of a device-to-device copy of `nbytes`, in bytes/s (read + written)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    src.fill_(1)
    times = []
    for i in range(COPY_WARMUPS + repeats):
        _synchronize(device)
        start = time.perf_counter()
        dst.copy_(src)
        _synchronize(device)
        if i >= COPY_WARMUPS:
            times.append(time.perf_counter() - start)
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * nbytes / statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    return str(device)


def decode_ceiling(
    device: torch.device, bandwidth: float, model: nn.Module, kv_bytes_per_token: int
) -> Ceiling:
    """The ceiling of `model` on `device` given a measured `bandwidth` (bytes/s)."""
    return Ceiling(
        device_name=device_name(device),
        bandwidth_gb_s=bandwidth / 1e9,
        weight_bytes=weight_bytes_per_step(model),
        kv_bytes_per_token=kv_bytes_per_token,
    )


def ceiling_fraction(ceiling: Ceiling, level: LevelResult) -> dict:
    """How close a level's aggregate decode rate came to the ceiling at its batch (requests in
    flight) and mean context (prompt plus half the output: the average over the decode)."""
    figures = level.runs[0]
    done = max(figures.num_requests - figures.num_errors, 1)
    context = figures.input_tokens / done + figures.output_tokens / done / 2
    batch = max(level.median("mean_in_flight"), 1.0)
    bound = ceiling.tok_s(batch, context)
    return {
        "batch": batch,
        "context_tokens": context,
        "bytes_per_step": ceiling.bytes_per_step(batch, context),
        "ceiling_tok_s": bound,
        "decode_tok_s": level.median("decode_tok_s"),
        "fraction": level.median("decode_tok_s") / bound,
    }
