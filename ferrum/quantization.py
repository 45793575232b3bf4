"""Weight-only quantization of a finished model: swap its Linear layers for int8 or int4 ones.

Decode at batch 1 reads every weight once per token, so on a CPU its speed is bytes of weights
per token: float32 SmolLM2-135M reads 540 MB a token, int8 about a quarter of that, int4 about an
eighth. The handler here (gpt-fast's style) runs after loading: `quantize_model(model, "int8")`
replaces each `nn.Linear` (fused ones included) by a module holding the quantized weight, and
gives the model a quantized logits projection too (always int8; for tied embeddings a quantized
copy of the embedding matrix: the lookup keeps the float table, which it reads one row at a time).
Model files know nothing of it.

The matmuls are PyTorch's weight-only CPU kernels:
  int8: per-output-channel symmetric scales, `aten._weight_int8pack_mm`;
  int4: groups of `group_size` inputs with a scale and a zero each,
        `aten._weight_int4pack_mm_for_cpu` on `_convert_weight_to_int4pack_for_cpu` packing.
Both are fast only with bfloat16 activations (with float32 ones they fall back to slow generic
loops), so a quantized layer casts its input to bfloat16 and its output back; everything
between layers (norms, rope, attention, the KV cache) keeps the model's dtype.
Asymmetric int4 in groups of 32 is exactly the grid of a GGUF Q4_0/Q4_1 file, so requantizing
such weights loses almost nothing beyond what the file already lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ferrum.errors import InvalidInputError

QUANTIZATION_MODES = ("int8", "int4")
COMPUTE_DTYPE = torch.bfloat16  # activations inside quantized matmuls (the kernels' fast path)
INT8_MAX = 127  # symmetric int8 range is [-127, 127]
INT4_LEVELS = 15  # int4 codes 0..15
INT4_ZERO_CODE = 8  # the kernel computes (code - 8) * scale + zero
DEFAULT_INT4_GROUP = 32  # inputs sharing one int4 scale and zero (GGUF's Q4 block size)
INT4_INNER_K_TILES = 2  # packing parameter of the CPU int4 kernel (its layout, not precision)
# The logits projection stays int8 under int4: an error there moves every logit at once (the
# greedy pick flips at the first close call), and llama.cpp's Q4 files keep it at Q8_0 too.
LOGITS_MODE = {"int8": "int8", "int4": "int8"}


@dataclass(frozen=True)
class QuantizationReport:
    """What `quantize_model` did."""

    mode: str
    layers: int  # linear layers swapped (the logits projection included)
    skipped: list[str]  # layers left in float: shapes the kernel cannot take
    weight_bytes_before: int  # bytes of the swapped layers' float weights
    weight_bytes_after: int  # bytes of their quantized weights, scales and zeros


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + bias, q int8 (out, in), one scale per output row."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        w = weight.detach().float()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / INT8_MAX  # (out,)
        q = torch.round(w / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.register_buffer("weight_int8", q)
        self.register_buffer("scale", scale.to(COMPUTE_DTYPE))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(COMPUTE_DTYPE)  # (T, in)
        y = torch.ops.aten._weight_int8pack_mm(rows, self.weight_int8, self.scale)  # (T, out)
        return _finish(y, self.bias, x)

    def dequantized(self) -> torch.Tensor:
        """The float32 weight this layer computes with, (out, in)."""
        return self.weight_int8.float() * self.scale.float()[:, None]


class Int4Linear(nn.Module):
    """y = x @ W.T + bias with W[o, i] = (code - 8) * scale[g, o] + zero[g, o] for the group
    g = i // group_size; codes are int4, packed for the CPU kernel."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group_size: int) -> None:
        super().__init__()
        w = weight.detach().float()  # (out, in)
        out_features, in_features = w.shape
        groups = w.reshape(out_features, in_features // group_size, group_size)  # (out, G, gs)
        low, high = groups.amin(dim=2), groups.amax(dim=2)  # (out, G)
        scale = ((high - low) / INT4_LEVELS).clamp(min=torch.finfo(torch.float32).tiny)
        codes = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, INT4_LEVELS)
        zero = low + INT4_ZERO_CODE * scale  # so that (code - 8) * scale + zero = low + code*scale
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            codes.reshape(out_features, in_features).to(torch.int32), INT4_INNER_K_TILES
        )
        scale_zero = torch.stack((scale.t(), zero.t()), dim=-1)  # (G, out, 2)
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("weight_int4", packed)
        self.register_buffer("scale_zero", scale_zero.to(COMPUTE_DTYPE).contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(COMPUTE_DTYPE)  # (T, in)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            rows, self.weight_int4, self.group_size, self.scale_zero
        )  # (T, out)
        return _finish(y, self.bias, x)


def _finish(y: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    y = y.to(x.dtype)
    if bias is not None:
        y = y + bias
    return y.reshape(*x.shape[:-1], y.shape[-1])


def int4_group_size(in_features: int, preferred: int = DEFAULT_INT4_GROUP) -> int | None:
    """The group size for an int4 layer: `preferred` if it divides the input width, else the
    largest smaller power of two (at least 16) that does; None when none does."""
    size = preferred
    while size >= 16:
        if in_features % size == 0 and in_features // size >= 1:
            return size
        size //= 2
    return None


def quantized_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, mode: str, group_size: int
) -> nn.Module | None:
    """The quantized replacement of one linear layer, or None when its shape cannot be."""
    out_features, in_features = weight.shape
    if mode == "int8":
        return Int8Linear(weight, bias)
    group = int4_group_size(in_features, group_size)
    # the int4 packing works on pairs of inputs and blocks of output rows
    if group is None or in_features % 2 or out_features % 16:
        return None
    return Int4Linear(weight, bias, group)


@torch.no_grad()
def quantize_model(
    model: nn.Module, mode: str, group_size: int = DEFAULT_INT4_GROUP
) -> QuantizationReport:
    """Swap every nn.Linear of `model` (on the CPU) for a weight-only quantized one, in place, and
    quantize its logits projection (`compute_logits`) the same way."""
    if mode not in QUANTIZATION_MODES:
        raise InvalidInputError(
            f"unknown quantization {mode!r}; use one of: {', '.join(QUANTIZATION_MODES)}"
        )
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise InvalidInputError(
            f"--quantization {mode} runs on the CPU only (its kernels are PyTorch's CPU ones); "
            f"the model is on {device}"
        )
    with _intra_op_threads(1):
        return _swap_linears(model, mode, group_size)


def _swap_linears(model: nn.Module, mode: str, group_size: int) -> QuantizationReport:
    swapped, skipped, before, after = 0, [], 0, 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Linear) or (parent is model and child_name == "lm_head"):
                continue
            full = f"{parent_name}.{child_name}".lstrip(".")
            replacement = quantized_linear(child.weight, child.bias, mode, group_size)
            if replacement is None:
                skipped.append(full)
                continue
            setattr(parent, child_name, replacement)
            swapped += 1
            before += child.weight.numel() * child.weight.element_size()
            after += _buffer_bytes(replacement)
    head = _logits_weight(model)
    if head is not None:
        replacement = quantized_linear(head, None, LOGITS_MODE[mode], group_size)
        if replacement is None:
            skipped.append("lm_head")
        else:
            _install_logits(model, replacement)
            swapped += 1
            before += head.numel() * head.element_size()
            after += _buffer_bytes(replacement)
    return QuantizationReport(mode, swapped, skipped, before, after)


def _logits_weight(model: nn.Module) -> torch.Tensor | None:
    """The matrix `compute_logits` multiplies by: lm_head's, or the tied embedding's."""
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Linear):
        return head.weight
    inner = getattr(model, "model", None)
    embed = getattr(inner, "embed_tokens", None)
    if head is None and isinstance(embed, nn.Embedding) and hasattr(model, "compute_logits"):
        return embed.weight
    return None


def _install_logits(model: nn.Module, head: nn.Module) -> None:
    """Make `model.compute_logits` use the quantized projection (as an instance attribute: the
    model class keeps its float path for unquantized models)."""
    model.lm_head = head

    def compute_logits(hidden: torch.Tensor) -> torch.Tensor:
        """(N, hidden) -> (N, vocab) float32, through the quantized projection."""
        return head(hidden).float()

    model.compute_logits = compute_logits  # type: ignore[method-assign]


@contextmanager
def _intra_op_threads(count: int) -> Iterator[None]:
    """Quantizing is a stream of memory-bound whole-matrix ops: on a busy machine an OpenMP
    team waits at every op for its slowest (descheduled) thread, ten times slower than one
    thread; on an idle one, one thread costs a fraction of a second per 100M weights."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _buffer_bytes(module: nn.Module) -> int:
    return sum(b.numel() * b.element_size() for b in module.buffers() if b is not None)
