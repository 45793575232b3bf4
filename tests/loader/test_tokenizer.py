"""Tokenizer parity: ours (from a directory and from GGUF metadata) against transformers'
AutoTokenizer on the same files, and chat templates against transformers' renderer."""

from __future__ import annotations

import gguf
import pytest
from conftest import smollm2_gguf, write_gguf

from ferrum.errors import InvalidInputError
from ferrum.loader.tokenizer import Tokenizer

TEXTS = [
    "Hello, world!",
    "  leading spaces\tand tabs\n\nand newlines  ",
    "Ünïcödé — naïve café, 日本語のテキスト, русский текст",
    "emoji 🤗🚀👍🏽 and a flag 🇫🇷",
    "def f(x):\n    return x ** 2  # 12345 67 8.9e-10\n",
    "I'm sure they'll've done it's 1234567890",
    "<|im_start|>user\nhi there<|im_end|>",
    "",
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {
        "role": "user",
        "content": [{"type": "text", "text": "And 3+3"}, {"type": "text", "text": "?"}],
    },
]


def _flat(messages):
    return [
        {**m, "content": "".join(p["text"] for p in m["content"])}
        if isinstance(m["content"], list)
        else m
        for m in messages
    ]


def _assert_parity(ours: Tokenizer, reference) -> None:
    prompt = ours.apply_chat_template(MESSAGES)
    expected = reference.apply_chat_template(
        _flat(MESSAGES), tokenize=False, add_generation_prompt=True
    )
    assert prompt == expected
    for text in [*TEXTS, prompt]:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ours.decode(ids, skip_special_tokens=False) == text
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_dir_tokenizer_matches_transformers(tiny_models):
    from transformers import AutoTokenizer

    path = tiny_models["llama"].dir
    ours = Tokenizer.from_dir(path)
    _assert_parity(ours, AutoTokenizer.from_pretrained(str(path)))
    assert ours.bos_token_id == 1 and ours.eos_token_ids == [2, 0]  # generation_config first
    assert ours.is_special(2) and not ours.is_special(300)


def test_gguf_tokenizer_matches_dir_and_transformers(tiny_models, tiny_ggufs):
    from transformers import AutoTokenizer

    path = tiny_ggufs[("llama", "F32")]
    ours = Tokenizer.from_gguf(gguf.GGUFReader(path))
    from_dir = Tokenizer.from_dir(tiny_models["llama"].dir)
    _assert_parity(ours, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name))
    for text in TEXTS:
        assert ours.encode(text) == from_dir.encode(text)
    assert ours.vocab_size == from_dir.vocab_size
    assert ours.bos_token_id == 1 and ours.eos_token_ids == [2]


def _sentencepiece_gguf(path):
    """A tiny SentencePiece-style vocabulary (scores, byte tokens, no merges) as llama.cpp writes
    Llama-2/TinyLlama/Mistral tokenizers."""
    pieces = ["▁", "▁t", "he", "▁the", "▁a", "an", "▁an", "d", "▁and", "in", "▁in", "g", "ing"]
    letters = list("abcdefghijklmnopqrstuvwxyzTHE,.!")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + letters + pieces
    scores = (
        [0.0] * 259 + [-100.0 - i for i in range(len(letters))] + [-float(i) for i in range(13)]
    )
    types = [2, 3, 3] + [6] * 256 + [1] * (len(letters) + len(pieces))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_sentencepiece_gguf_tokenizer_matches_transformers(tmp_path):
    from transformers import AutoTokenizer

    path = _sentencepiece_gguf(tmp_path / "spm.gguf")
    ours = Tokenizer.from_gguf(gguf.GGUFReader(path))
    reference = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for text in ["the thing and an inn", "The End!", "ünï 🤗 thing", " lead", "a\nb"]:
        ids = ours.encode(text)
        assert ids == reference.encode(text), text
        assert ids[0] == 1  # llama-type vocabularies add BOS by default
        assert ours.decode(ids) == reference.decode(ids, skip_special_tokens=True)


def test_no_chat_template_is_invalid_input(tmp_path, tiny_tokenizer_dir):
    (tmp_path / "tokenizer.json").write_bytes((tiny_tokenizer_dir / "tokenizer.json").read_bytes())
    ours = Tokenizer.from_dir(tmp_path)
    assert ours.chat_template is None
    with pytest.raises(InvalidInputError, match="no chat template"):
        ours.apply_chat_template([{"role": "user", "content": "hi"}])


def test_chat_template_kwargs_and_helpers(tiny_models):
    ours = Tokenizer.from_dir(tiny_models["qwen3"].dir)
    ours.chat_template = (
        "{% if enable_thinking is defined and not enable_thinking %}NO-THINK {% endif %}"
        "{{ bos_token }}{{ messages | tojson }}{% if tools %}{{ tools[0].name }}{% endif %}"
        "{% if messages | length > 3 %}{{ raise_exception('too many') }}{% endif %}"
    )
    out = ours.apply_chat_template(
        [{"role": "user", "content": "é"}], enable_thinking=False, tools=[{"name": "calc"}]
    )
    assert out == 'NO-THINK <|im_start|>[{"role": "user", "content": "é"}]calc'
    with pytest.raises(InvalidInputError, match="too many"):
        ours.apply_chat_template([{"role": "user", "content": "x"}] * 4)


@pytest.mark.slow
def test_smollm2_gguf_tokenizer_matches_transformers():
    from transformers import AutoTokenizer

    path = smollm2_gguf()
    ours = Tokenizer.from_gguf(gguf.GGUFReader(path))
    reference = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    _assert_parity(ours, reference)
    assert ours.vocab_size == 49152 and ours.bos_token_id == 1 and ours.eos_token_ids == [2]
    assert ours.is_special(ours.encode("<|im_end|>")[0])


def test_gguf_unknown_pre_tokenizer_uses_gpt2_split(tmp_path, tiny_models):
    path = write_gguf(tmp_path / "x.gguf", tiny_models["qwen2"], "F32", tokenizer_pre="unknown")
    ours = Tokenizer.from_gguf(gguf.GGUFReader(path))
    from_dir = Tokenizer.from_dir(tiny_models["qwen2"].dir)
    for text in TEXTS:
        assert ours.encode(text) == from_dir.encode(text)
