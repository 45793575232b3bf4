"""Dequantize ggml tensor data (the blocks of a GGUF file) to float32, in torch, whole tensors at a
time.

Each ggml type packs a row into fixed-size blocks: a float16 scale (and for some a minimum) and
the packed integers. Every function below turns a (n_blocks, block_bytes) uint8 view into
(n_blocks, block_elements) float32 with vectorized torch ops, in the same order of float
operations as `gguf.quants.dequantize` (the reference), so results are bit-identical to it; the
tests check that for every type. Work is split into chunks of rows so the temporaries stay in
cache, and each chunk is written straight into the output tensor.

Layouts (block elements / bytes), from ggml-common.h:
  Q8_0 32/34: d f16, 32 x int8                          x = d * q
  Q4_0 32/18: d f16, 16 bytes of nibbles                 x = d * (q - 8)
  Q4_1 32/20: d f16, m f16, 16 bytes of nibbles          x = d * q + m
  Q4_K 256/144: d, dmin f16, 12 bytes of 6-bit scales and mins for 8 sub-blocks, 128 bytes of
       nibbles                                           x = d * sc * q - dmin * mn
  Q5_K 256/176: as Q4_K plus 32 bytes of fifth bits
  Q6_K 256/210: 128 bytes low nibbles, 64 bytes high 2 bits, 16 x int8 scales, d f16
                                                         x = d * sc * (q - 32)
In the nibble formats the low nibbles of a 16-byte group are the first 16 elements and the high
nibbles the next 16 (32 and 32 for the K-quants).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ferrum.errors import UnsupportedModelError

QK_K = 256  # elements in a K-quant super-block
CHUNK_ELEMENTS = 1 << 20  # elements dequantized per step: temporaries of a few MiB stay in cache

# Writes the float32 values of `blocks` (n, block bytes) into `out` (n, block elements).
BlockFn = Callable[[torch.Tensor, torch.Tensor], None]


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The float16 at byte `start` of every block, as (n_blocks, 1) float32."""
    return blocks[:, start : start + 2].contiguous().view(torch.float16).float()


def _nibbles_into(out: torch.Tensor, blocks: torch.Tensor, start: int, group: int) -> None:
    """Unpack the nibbles at bytes `start:` of each block into `out` (n, 2 k, group), any dtype:
    per group of `group` bytes, the low nibbles then the high ones.

    Why the detour through whole-block masks: torch runs elementwise ops on a strided (n, 16)
    slice with a 16-element inner loop, ten times slower than on contiguous memory, while its
    copy kernel handles strided slices (and the uint8 -> float conversion) at full speed."""
    n = blocks.shape[0]
    low, high = blocks & 0x0F, blocks >> 4  # (n, block bytes) each, contiguous
    pairs = out.view(n, -1, 2, group)  # (n, k, 2, group)
    pairs[:, :, 0].copy_(low[:, start:].view(n, -1, group))
    pairs[:, :, 1].copy_(high[:, start:].view(n, -1, group))


def _q8_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    out.copy_(blocks[:, 2:].view(torch.int8))  # (n, 32)
    out.mul_(_f16(blocks, 0))


def _q4_0(blocks: torch.Tensor, out: torch.Tensor) -> None:
    _nibbles_into(out, blocks, 2, 16)  # (n, 32) in 0..15
    out.sub_(8.0)  # exact on small integers, as the reference's int8 subtraction
    out.mul_(_f16(blocks, 0))


def _q4_1(blocks: torch.Tensor, out: torch.Tensor) -> None:
    _nibbles_into(out, blocks, 4, 16)  # (n, 32)
    out.mul_(_f16(blocks, 0)).add_(_f16(blocks, 2))


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K/Q5_K's 12 bytes -> 8 six-bit scales and 8 six-bit mins per block, (n, 8) each.
    Bytes 0-3 hold scales 0-3 (low 6 bits) and the top bits of scales 4-7, bytes 4-7 the same for
    mins, bytes 8-11 the low 4 bits of scales 4-7 (low nibble) and mins 4-7 (high nibble)."""
    n = packed.shape[0]
    s = packed.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]  # (n, 4) each
    scales = torch.cat((d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)), dim=1)
    mins = torch.cat((m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)), dim=1)
    return scales, mins


def _k_scale_and_offset(blocks: torch.Tensor, out: torch.Tensor) -> None:
    """out (n, 8, 32) holding q -> d * scale * q - dmin * min, per sub-block of 32."""
    n = blocks.shape[0]
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)  # (n, 1)
    sc, mn = _k_scales(blocks[:, 4:16])
    out.mul_((d * sc.float()).reshape(n, 8, 1)).sub_((dmin * mn.float()).reshape(n, 8, 1))


def _q4_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    q = out.view(-1, 8, 32)
    _nibbles_into(q, blocks, 16, 32)  # (n, 8, 32)
    _k_scale_and_offset(blocks, q)


_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8).reshape(1, 8, 1)


def _q5_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    n = blocks.shape[0]
    low = torch.empty(n, 8, 32, dtype=torch.uint8)
    _nibbles_into(low, blocks, 48, 32)  # (n, 8, 32)
    qh = blocks[:, 16:48].reshape(n, 1, 32)  # bit j of byte i: fifth bit of element 32 j + i
    low |= ((qh >> _BIT_SHIFTS) & 1) << 4
    q = out.view(n, 8, 32)
    q.copy_(low)
    _k_scale_and_offset(blocks, q)


_CRUMB_SHIFTS = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).reshape(1, 1, 4, 1)


def _q6_k(blocks: torch.Tensor, out: torch.Tensor) -> None:
    n = blocks.shape[0]
    low = torch.empty(n, 8, 32, dtype=torch.uint8)
    _nibbles_into(low, blocks[:, :128], 0, 64)  # (n, 4, 64) seen as (n, 8, 32)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32)  # 2 bits of 4 elements per byte
    low |= (((qh >> _CRUMB_SHIFTS) & 3) << 4).reshape(n, 8, 32)
    q = out.view(n, 16, 16)
    q.copy_(low.view(n, 16, 16))
    q.sub_(32.0)  # exact, as the reference's int8 subtraction
    sc = blocks[:, 192:208].view(torch.int8).float()  # (n, 16)
    q.mul_((_f16(blocks, 208) * sc).reshape(n, 16, 1))


# ggml type name -> (elements per block, bytes per block, block function)
_BLOCK_TYPES: dict[str, tuple[int, int, BlockFn]] = {
    "Q8_0": (32, 34, _q8_0),
    "Q4_0": (32, 18, _q4_0),
    "Q4_1": (32, 20, _q4_1),
    "Q4_K": (QK_K, 144, _q4_k),
    "Q5_K": (QK_K, 176, _q5_k),
    "Q6_K": (QK_K, 210, _q6_k),
}
_FLOAT_TYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
SUPPORTED_TYPES = (*_FLOAT_TYPES, *_BLOCK_TYPES)


def dequantize(raw: torch.Tensor, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """ggml data `raw` (uint8, 1-D) of type `type_name` -> float32 tensor of `shape` (numpy
    order). F32 data comes back as a view of `raw`; everything else in new memory."""
    if type_name in _FLOAT_TYPES:
        return raw.view(_FLOAT_TYPES[type_name]).reshape(shape).float()
    if type_name not in _BLOCK_TYPES:
        raise UnsupportedModelError(
            f"GGUF type {type_name} cannot be dequantized by ferrum "
            f"(supported: {', '.join(SUPPORTED_TYPES)})"
        )
    block, block_bytes, fn = _BLOCK_TYPES[type_name]
    blocks = raw.view(-1, block_bytes)  # (n_blocks, block_bytes)
    out = torch.empty(blocks.shape[0], block, dtype=torch.float32)  # (n_blocks, block)
    step = max(1, CHUNK_ELEMENTS // block)
    for start in range(0, blocks.shape[0], step):
        fn(blocks[start : start + step], out[start : start + step])
    return out.reshape(shape)
