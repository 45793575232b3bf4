"""Incremental detokenization never emits broken UTF-8 and never leaks a stop string."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from ferrum.engine.detokenizer import IncrementalDetokenizer
from ferrum.sampling_params import SamplingParams
from tests.conftest import write_tokenizer


class Dec:
    def __init__(self, tok):
        self.tok = tok

    def decode(self, ids, skip_special_tokens=True):
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)


def tokenizer(tmp_path: Path) -> Dec:
    write_tokenizer(tmp_path)
    return Dec(Tokenizer.from_file(str(tmp_path / "tokenizer.json")))


TEXT = "Zürich 🦀 is ✓ 日本語 — naïve 🚀🚀 done"


def test_multibyte_characters_are_never_split(tmp_path):
    dec = tokenizer(tmp_path)
    ids = dec.tok.encode(TEXT).ids
    # the emoji must really be split across tokens for this test to mean anything
    assert any("\ufffd" in dec.decode([i]) for i in ids)
    d = IncrementalDetokenizer(dec, [], SamplingParams())
    deltas = []
    for i in ids:
        d.add(i)
        deltas.append(d.take_delta(False))
    assert all("\ufffd" not in x for x in deltas)
    assert "".join(deltas) == TEXT


def test_stop_string_held_back_then_cut(tmp_path):
    dec = tokenizer(tmp_path)
    ids = dec.tok.encode(TEXT).ids
    d = IncrementalDetokenizer(dec, [], SamplingParams(stop=["日本語"]))
    out = ""
    for i in ids:
        d.add(i)
        out += d.take_delta(False)
        assert "日" not in out
        if d.stop_string:
            break
    out += d.take_delta(True)
    assert d.stop_string == "日本語" and out == TEXT[: TEXT.index("日本語")]
