"""Fixtures shared across the suite: tiny random-init checkpoints with a real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

CORPUS = (
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
    "héllo wörld, naïve café — 日本語のテキスト 🌍🚀 emoji and ünïcödé. "
    "def main():\n    return 42\n"
) * 20

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tokenizer(path: Path, vocab_size: int = 320) -> int:
    """A byte-level BPE trained on a small corpus (multi-byte characters split across tokens),
    with ChatML special tokens. Returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([CORPUS], trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "eos_token": "<|im_end|>",
                "bos_token": None,
                "chat_template": CHATML,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    return tok.get_vocab_size()


def make_tiny_model(path: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A 2-layer random-init model of `arch` saved as safetensors with a tokenizer."""
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(path)
    common = dict(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=2,  # <|im_end|>
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        config = transformers.LlamaConfig(**common, rope_theta=10000.0)
        cls = transformers.LlamaForCausalLM
    elif arch == "qwen3":
        config = transformers.Qwen3Config(**common, head_dim=32)
        cls = transformers.Qwen3ForCausalLM
    else:
        raise ValueError(arch)
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # larger weights give peaked, tie-free logits
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.15)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"), "qwen3")


def shared_sample(name: str) -> Path:
    """A real test input from shared/samples beside the checkout (where CI puts a copy)."""
    here = Path(__file__).resolve().parents[1]
    for root in (here.parent / "shared", here / "shared", Path("/work/shared")):
        if (root / "samples" / name).exists():
            return root / "samples" / name
    return here.parent / "shared" / "samples" / name  # missing: tests skip with this path
