"""A fast reader for GGUF files: header, metadata and tensor directory, with the tensor bytes left
in a memory map until they are asked for.

The format (little-endian): magic `GGUF`, version (u32), tensor count and metadata count (u64),
then metadata as typed key/value pairs (strings are a u64 length and UTF-8 bytes; arrays an item
type, a u64 count and the items), then one entry per tensor (name, dims in ggml's ne[] order,
ggml type, offset), then the tensor data, each tensor at `alignment`-aligned offsets after the
directory.

Why not `gguf.GGUFReader`: it wraps every value of the file in numpy views, which for a
tokenizer's 49k tokens and 49k merges costs seconds; here a string array is one tight loop over
the mapped bytes (tens of milliseconds). The `gguf` package stays the reference in tests.

What this does not do: dequantize (`dequant.py`) or name tensors the HF way (`gguf.py`).
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferrum.errors import CheckpointError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # version 1 used 32-bit counts and is long obsolete
DEFAULT_ALIGNMENT = 32  # bytes; a file may override it with general.alignment

# ggml tensor type id -> (name, elements per block, bytes per block). Types ferrum cannot
# dequantize are listed too, so an error can name them.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
}

# Metadata value types: id -> struct format of one scalar (STRING=8 and ARRAY=9 are handled apart).
_SCALAR_FORMATS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_NUMPY_DTYPES: dict[int, str] = {
    0: "<u1",
    1: "<i1",
    2: "<u2",
    3: "<i2",
    4: "<u4",
    5: "<i4",
    6: "<f4",
    7: "?",
    10: "<u8",
    11: "<i8",
    12: "<f8",
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One entry of the tensor directory."""

    name: str
    shape: tuple[int, ...]  # numpy/torch order (rows, cols): the reverse of ggml's ne[]
    ggml_type: int  # key of GGML_TYPES
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int  # size of the data; -1 for a type whose block size is unknown

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.ggml_type, (f"type {self.ggml_type}", 0, 0))[0]

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class MetadataField:
    """A metadata value with the `contents()` accessor of `gguf.ReaderField`, so code written
    against `gguf.GGUFReader.fields` reads this reader's fields too."""

    value: Any

    def contents(self) -> Any:
        return self.value


@dataclass
class GGUFFile:
    """An opened GGUF file: `metadata` (key -> Python value), `tensors` (the directory) and
    `tensor_bytes(info)` (a uint8 view of one tensor's data in the memory map)."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensorInfo]
    alignment: int
    _map: mmap.mmap = field(repr=False)

    @property
    def fields(self) -> dict[str, MetadataField]:
        """The metadata in `gguf.GGUFReader.fields` form (`fields[key].contents()`)."""
        return {key: MetadataField(value) for key, value in self.metadata.items()}

    def tensor_bytes(self, info: GGUFTensorInfo) -> np.ndarray:
        """The raw bytes of one tensor (uint8, 1-D), a view of the copy-on-write memory map:
        writable, yet writes never reach the file."""
        return np.frombuffer(self._map, dtype=np.uint8, count=info.n_bytes, offset=info.offset)


def read_gguf(path: Path) -> GGUFFile:
    """Open and parse a GGUF file; CheckpointError when it is not one, or is cut short."""
    try:
        with open(path, "rb") as f:
            # ACCESS_COPY: a private mapping, so the tensor views are writable (torch wants that)
            # while the file stays untouched.
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file ({e})") from e
    try:
        return _Parser(data, path).parse()
    except (struct.error, IndexError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: not a readable GGUF file ({type(e).__name__}: {e}); it may be truncated or "
            "corrupt — download it again"
        ) from e


class _Parser:
    """A cursor over the mapped bytes of the header."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def parse(self) -> GGUFFile:
        if self.data[:4] != GGUF_MAGIC:
            raise CheckpointError(
                f"{self.path}: not a readable GGUF file (it does not start with the GGUF magic)"
            )
        self.pos = 4
        version = self.u32()
        if version & 0xFFFF == 0:
            raise CheckpointError(
                f"{self.path}: a big-endian GGUF file, which ferrum does not read"
            )
        if version not in SUPPORTED_VERSIONS:
            raise CheckpointError(f"{self.path}: GGUF version {version} is not supported (2, 3)")
        n_tensors, n_metadata = self.u64(), self.u64()
        metadata = {}
        for _ in range(n_metadata):
            key = self.string()
            metadata[key] = self.value(self.u32())
        directory = [self.tensor_entry() for _ in range(n_tensors)]
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise CheckpointError(f"{self.path}: invalid general.alignment {alignment!r}")
        data_start = -(-self.pos // alignment) * alignment
        tensors = [self.locate(entry, data_start) for entry in directory]
        return GGUFFile(self.path, version, metadata, tensors, alignment, self.data)

    def u32(self) -> int:
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def u64(self) -> int:
        (value,) = _U64.unpack_from(self.data, self.pos)
        self.pos += 8
        return value

    def string(self) -> str:
        length = self.u64()
        end = self.pos + length
        if end > len(self.data):
            raise ValueError("a string runs past the end of the file")
        text = self.data[self.pos : end].decode("utf-8")
        self.pos = end
        return text

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            return self.array(self.u32(), self.u64())
        fmt = _SCALAR_FORMATS.get(kind)
        if fmt is None:
            raise ValueError(f"unknown metadata value type {kind}")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def array(self, kind: int, count: int) -> list[Any]:
        if kind == _STRING:
            return self.string_array(count)
        if kind == _ARRAY:
            return [self.array(self.u32(), self.u64()) for _ in range(count)]
        dtype = _NUMPY_DTYPES.get(kind)
        if dtype is None:
            raise ValueError(f"unknown metadata array item type {kind}")
        items = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += items.nbytes
        return items.tolist()

    def string_array(self, count: int) -> list[str]:
        # The hot loop of the whole reader (a vocabulary and its merges): locals only.
        data, pos, size = self.data, self.pos, len(self.data)
        unpack = _U64.unpack_from
        out: list[str] = []
        append = out.append
        for _ in range(count):
            (length,) = unpack(data, pos)
            pos += 8
            end = pos + length
            if end > size:
                raise ValueError("a string runs past the end of the file")
            append(data[pos:end].decode("utf-8"))
            pos = end
        self.pos = pos
        return out

    def tensor_entry(self) -> tuple[str, tuple[int, ...], int, int]:
        name = self.string()
        n_dims = self.u32()
        dims = struct.unpack_from(f"<{n_dims}Q", self.data, self.pos)
        self.pos += 8 * n_dims
        ggml_type = self.u32()
        return name, tuple(reversed(dims)), ggml_type, self.u64()

    def locate(
        self, entry: tuple[str, tuple[int, ...], int, int], data_start: int
    ) -> GGUFTensorInfo:
        name, shape, ggml_type, relative = entry
        offset = data_start + relative
        n_bytes = -1
        if ggml_type in GGML_TYPES:
            _, block, block_bytes = GGML_TYPES[ggml_type]
            n_elements = int(np.prod(shape, dtype=np.int64))
            if shape and shape[-1] % block:
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} has rows of {shape[-1]} elements, not a "
                    f"multiple of its {GGML_TYPES[ggml_type][0]} block of {block}"
                )
            n_bytes = n_elements // block * block_bytes
            if offset + n_bytes > len(self.data):
                raise CheckpointError(
                    f"{self.path}: tensor {name!r} runs past the end of the file; the file is "
                    "truncated — download it again"
                )
        return GGUFTensorInfo(name, shape, ggml_type, offset, n_bytes)
