"""ferrum's own GGUF reader and torch dequantizer against the `gguf` package (the reference):
metadata, tensor directory and raw bytes equal; every supported ggml type dequantizes to
bit-identical float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smollm2_gguf

from ferrum.errors import CheckpointError, UnsupportedModelError
from ferrum.loader.dequant import SUPPORTED_TYPES, dequantize
from ferrum.loader.gguf_reader import read_gguf

gguf = pytest.importorskip("gguf")

ROWS, COLS = 24, 1024  # 4 K-quant super-blocks per row, 32 blocks of 32
# Byte offsets of the float16 scales inside one block of the formats gguf cannot quantize.
K_QUANT_SCALES = {"Q4_K": (144, [0, 2]), "Q5_K": (176, [0, 2]), "Q6_K": (210, [208])}


def _ggml_type(name: str) -> gguf.GGMLQuantizationType:
    return gguf.GGMLQuantizationType[name]


def _quantized_bytes(name: str, rng: np.random.Generator) -> np.ndarray:
    """(ROWS, bytes per row) uint8 of random data in ggml type `name`."""
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32) * 3
    if name == "F32":
        return x.view(np.uint8)
    if name in K_QUANT_SCALES:  # no quantizer in gguf: random bits with finite float16 scales
        block_bytes, scale_offsets = K_QUANT_SCALES[name]
        raw = rng.integers(0, 256, size=(ROWS * COLS // 256, block_bytes), dtype=np.uint8)
        for offset in scale_offsets:
            scale = (rng.standard_normal((raw.shape[0], 1)) * 0.1).astype(np.float16)
            raw[:, offset : offset + 2] = scale.view(np.uint8)
        return raw.reshape(ROWS, -1)
    return gguf.quants.quantize(x, _ggml_type(name)).view(np.uint8)


@pytest.mark.parametrize("name", SUPPORTED_TYPES)
def test_dequantize_is_bit_identical_to_gguf(name):
    raw = _quantized_bytes(name, np.random.default_rng(len(name)))
    expected = gguf.quants.dequantize(raw, _ggml_type(name)).reshape(ROWS, COLS)
    ours = dequantize(torch.from_numpy(raw.reshape(-1).copy()), name, (ROWS, COLS))
    assert ours.dtype == torch.float32 and tuple(ours.shape) == (ROWS, COLS)
    assert np.array_equal(ours.numpy().view(np.uint32), expected.view(np.uint32))


def test_dequantize_chunks_larger_than_one_step(monkeypatch):
    import ferrum.loader.dequant as dequant

    monkeypatch.setattr(dequant, "CHUNK_ELEMENTS", 3 * 32)  # forces many uneven chunks
    raw = _quantized_bytes("Q4_1", np.random.default_rng(1))
    expected = gguf.quants.dequantize(raw, _ggml_type("Q4_1")).reshape(ROWS, COLS)
    ours = dequantize(torch.from_numpy(raw.reshape(-1).copy()), "Q4_1", (ROWS, COLS))
    assert torch.equal(ours, torch.from_numpy(expected))


def test_unsupported_type_is_named():
    with pytest.raises(UnsupportedModelError, match="Q5_0"):
        dequantize(torch.zeros(22, dtype=torch.uint8), "Q5_0", (32,))


NESTED = "t.nested"  # gguf's contents() flattens nested arrays (its own FIXME); ours keeps them


def _assert_same_as_gguf(path: Path) -> None:
    ours = read_gguf(path)
    ref = gguf.GGUFReader(path)
    expected = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    metadata = dict(ours.metadata)
    if NESTED in metadata:
        assert [x for part in metadata.pop(NESTED) for x in part] == expected.pop(NESTED)
    assert metadata == expected
    assert {k: f.contents() for k, f in ours.fields.items() if k != NESTED} == expected
    assert len(ours.tensors) == len(ref.tensors)
    for mine, theirs in zip(ours.tensors, ref.tensors):
        assert mine.name == theirs.name
        assert mine.shape == tuple(int(n) for n in reversed(theirs.shape))
        assert mine.ggml_type == int(theirs.tensor_type)
        assert (mine.offset, mine.n_bytes) == (theirs.data_offset, theirs.n_bytes)
        expected_bytes = np.asarray(theirs.data).reshape(-1).view(np.uint8)
        assert np.array_equal(ours.tensor_bytes(mine), expected_bytes)


def _write_mixed_gguf(path: Path) -> Path:
    """Every metadata value type, nested and empty arrays, odd alignment, mixed tensor types."""
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_float64("t.f64", 0.1)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo — 日本語 🤗")
    w.add_string("t.empty", "")
    w.add_array("t.strings", ["a", "", "ü", "tok en"] * 50)
    w.add_array("t.ints", list(range(-5, 300)))
    w.add_array("t.floats", [0.5, -1.25, 3.0])
    w.add_array(NESTED, [[1, 2], [3]])
    w.add_array("t.none", [])
    w.add_tensor("a.f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("b.f16", rng.standard_normal((7,)).astype(np.float16))
    q8 = gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), _ggml_type("Q8_0"))
    w.add_tensor("c.q8", q8, raw_dtype=_ggml_type("Q8_0"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_reader_equals_gguf_on_every_value_type(tmp_path):
    path = _write_mixed_gguf(tmp_path / "mixed.gguf")
    _assert_same_as_gguf(path)
    assert read_gguf(path).metadata[NESTED] == [[1, 2], [3]]


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_reader_equals_gguf_on_tiny_models(arch, tiny_ggufs):
    _assert_same_as_gguf(tiny_ggufs[(arch, "Q8_0")])


def test_reader_rejects_bad_files(tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x07\x00\x00\x00" + bytes(16))
    with pytest.raises(CheckpointError, match="version 7"):
        read_gguf(junk)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.gguf"):
        read_gguf(empty)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(_write_mixed_gguf(tmp_path / "whole.gguf").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cut.gguf"):
        read_gguf(cut)


@pytest.mark.slow
def test_smollm2_reader_and_weights_equal_gguf():
    from ferrum.loader.gguf import gguf_config, gguf_tensors

    path = smollm2_gguf()
    _assert_same_as_gguf(path)
    reader = read_gguf(path)
    ref = {t.name: t for t in gguf.GGUFReader(path).tensors}
    config = gguf_config(reader, path)
    assert len(reader.tensors) == 272
    for (name, tensor), info in zip(gguf_tensors(reader, config, path), reader.tensors):
        theirs = ref[info.name]
        expected = gguf.quants.dequantize(theirs.data, theirs.tensor_type).reshape(info.shape)
        if ".attn_q." in info.name or ".attn_k." in info.name:
            continue  # un-permuted: checked against transformers in test_gguf.py
        assert torch.equal(tensor, torch.from_numpy(np.array(expected))), name
