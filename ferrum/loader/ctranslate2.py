"""Read a CTranslate2 `model.bin` (binary spec version 6) tensor by tensor, without ctranslate2.

The file is little-endian: a header (binary version, spec name, spec revision), then
`num_variables` records of (name, rank, dims…, dtype id, byte count, raw bytes), then
`num_aliases` records of (alias, target name). Strings are a uint16 length (counting a trailing
NUL), the bytes, and the NUL. Quantized weights (int8/int16) come with a `<name>_scale` tensor
holding one factor per output row: the float weight is `q / scale`.

This module knows the container only; what the names mean is the model's business
(`ferrum.models.whisper` maps CTranslate2's Whisper names onto its parameters).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ferrum.errors import CheckpointError

MODEL_FILE = "model.bin"
SUPPORTED_BINARY_VERSIONS = (5, 6)

# CTranslate2's DataType enum, in declaration order (include/ctranslate2/types.h).
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),  # FLOAT32
    1: np.dtype("i1"),  # INT8
    2: np.dtype("<i2"),  # INT16
    3: np.dtype("<i4"),  # INT32
    4: np.dtype("<f2"),  # FLOAT16
    5: np.dtype("<u2"),  # BFLOAT16, reinterpreted below
}
_BFLOAT16_ID = 5


@dataclass
class Ct2Checkpoint:
    """Everything a `model.bin` holds: spec name and revision, tensors by name, aliases."""

    spec_name: str
    revision: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def scalar(self, name: str) -> int:
        """A scalar variable (e.g. `encoder/num_heads`) as a Python int."""
        if name not in self.tensors:
            raise CheckpointError(f"CTranslate2 model has no variable {name!r}")
        return int(self.tensors[name].item())

    def named_float_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every weight (rank ≥ 1), dequantized to float; scale tensors and scalars are left out.
        Aliases are yielded under their own name too (a tied projection, for instance)."""
        for name, tensor in self.tensors.items():
            if tensor.ndim == 0 or name.endswith("_scale"):
                continue
            yield name, self._dequantized(name, tensor)
        for alias, target in self.aliases.items():
            if target in self.tensors:
                yield alias, self._dequantized(target, self.tensors[target])

    def _dequantized(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_floating_point():
            return tensor
        scale = self.tensors.get(f"{name}_scale")
        if scale is None:
            return tensor
        # (out, in) / (out, 1): CTranslate2 scales each output row so its max |w| maps to 127.
        scale = scale.float().reshape(-1, *([1] * (tensor.ndim - 1)))
        return tensor.float() / scale


class _Reader:
    """A cursor over the bytes of a model.bin."""

    def __init__(self, buffer: bytearray, source: str) -> None:
        self.buffer = buffer
        self.offset = 0
        self.source = source

    def unpack(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.buffer):
            raise CheckpointError(f"{self.source}: file ends early (truncated download?)")
        (value,) = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += size
        return value

    def string(self) -> str:
        length = self.unpack("<H")
        raw = bytes(self.buffer[self.offset : self.offset + length - 1])
        self.offset += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{self.source}: not a CTranslate2 model.bin ({e})") from e

    def array(self, dtype_id: int, shape: list[int], num_bytes: int) -> torch.Tensor:
        if dtype_id not in _DTYPES:
            raise CheckpointError(f"{self.source}: unknown CTranslate2 dtype id {dtype_id}")
        if self.offset + num_bytes > len(self.buffer):
            raise CheckpointError(f"{self.source}: file ends early (truncated download?)")
        dtype = _DTYPES[dtype_id]
        count = num_bytes // dtype.itemsize
        # A view into the file's bytearray: the weights exist once in memory.
        data = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.offset)
        self.offset += num_bytes
        tensor = torch.from_numpy(data).reshape(shape)
        if dtype_id == _BFLOAT16_ID:
            tensor = tensor.view(torch.bfloat16)
        return tensor


def read_model_bin(parts: Path | Sequence[Path]) -> Ct2Checkpoint:
    """Parse a CTranslate2 model.bin into tensors. `parts` is the file, or the pieces of one
    file split for upload (concatenated in memory, in the order given)."""
    paths = [parts] if isinstance(parts, Path) else list(parts)
    source = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} part(s))"
    buffer = bytearray()
    try:
        for path in paths:
            with open(path, "rb") as f:
                buffer += f.read()
    except OSError as e:
        raise CheckpointError(f"{source}: cannot read CTranslate2 model ({e})") from e
    return _parse(buffer, source)


def _parse(buffer: bytearray, source: str) -> Ct2Checkpoint:
    reader = _Reader(buffer, source)
    version = reader.unpack("<I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CheckpointError(
            f"{source}: CTranslate2 binary version {version} is not supported "
            f"(ferrum reads {', '.join(map(str, SUPPORTED_BINARY_VERSIONS))})"
        )
    checkpoint = Ct2Checkpoint(spec_name=reader.string(), revision=reader.unpack("<I"))
    for _ in range(reader.unpack("<I")):
        name = reader.string()
        shape = [reader.unpack("<I") for _ in range(reader.unpack("<B"))]
        dtype_id = reader.unpack("<B")
        checkpoint.tensors[name] = reader.array(dtype_id, shape, reader.unpack("<I"))
    for _ in range(reader.unpack("<I")):
        alias = reader.string()
        checkpoint.aliases[alias] = reader.string()
    return checkpoint


def is_ct2_dir(directory: Path) -> bool:
    """A CTranslate2 model directory has a model.bin beside its config.json."""
    return (directory / MODEL_FILE).is_file()


def read_ct2_config(directory: Path) -> dict:
    """The directory's config.json (generation hints such as suppress_ids), or {} when absent."""
    path = directory / "config.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
