"""Qwen3-TTS models of the released architectures (and a tiny one) with random weights, built in
memory: for benchmarks on machines without the checkpoints, and for engine tests.

The configurations are the released checkpoints' `config.json` (talker and code predictor sizes,
codec control-token ids), made CustomVoice with one speaker so a request needs no reference clip.
The text tokenizer is byte-level (one token per UTF-8 byte, plus the chat-frame tokens), so a
prompt is longer than with Qwen's BPE; the talker's work per frame does not depend on it.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from ferrum.errors import InvalidInputError
from ferrum.models.qwen3_tts.codec import CodecModel, SpeechCodec
from ferrum.models.qwen3_tts.codec_config import CodecConfig
from ferrum.models.qwen3_tts.config import Qwen3TTSConfig
from ferrum.models.qwen3_tts.model import Qwen3TTS, Qwen3TTSModel

SPEAKER = "bench"  # the one CustomVoice speaker of these models
WEIGHT_STD = 0.02  # like transformers' initializer_range
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "assistant", "user")  # one token each, as in Qwen


def _decoder(hidden: int, inner: int, layers: int, heads: int, kv: int, head_dim: int) -> dict:
    return {
        "hidden_size": hidden,
        "intermediate_size": inner,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
    }


def _real(size: str, hidden: int, inner: int) -> dict[str, Any]:
    """The released 12 Hz checkpoints: 28 talker layers, a 5-layer code predictor, 16 codebooks."""
    return {
        "model_type": "qwen3_tts",
        "tts_model_type": "custom_voice",
        "tts_model_size": size,
        "talker_config": {
            **_decoder(hidden, inner, 28, 16, 8, 128),
            "vocab_size": 3072,
            "text_vocab_size": 151936,
            "text_hidden_size": 2048,
            "num_code_groups": 16,
            "rope_theta": 1_000_000,
            "codec_bos_id": 2149,
            "codec_eos_token_id": 2150,
            "codec_pad_id": 2148,
            "codec_think_id": 2154,
            "codec_nothink_id": 2155,
            "codec_think_bos_id": 2156,
            "codec_think_eos_id": 2157,
            "codec_language_id": {"english": 2050, "chinese": 2055},
            "spk_id": {SPEAKER: 3000},
            "code_predictor_config": {
                **_decoder(1024, 3072, 5, 16, 8, 128),
                "vocab_size": 2048,
                "num_code_groups": 16,
                "rope_theta": 1_000_000,
            },
        },
    }


TINY: dict[str, Any] = {
    "model_type": "qwen3_tts",
    "tts_model_type": "custom_voice",
    "tts_model_size": "tiny",
    "tts_bos_token_id": 360,
    "tts_eos_token_id": 361,
    "tts_pad_token_id": 362,
    "talker_config": {
        **_decoder(32, 64, 2, 4, 2, 16),
        "vocab_size": 1088,
        "text_vocab_size": 365,
        "text_hidden_size": 24,
        "num_code_groups": 4,
        "codec_bos_id": 1069,
        "codec_eos_token_id": 1070,
        "codec_pad_id": 1068,
        "codec_think_id": 1074,
        "codec_nothink_id": 1075,
        "codec_think_bos_id": 1076,
        "codec_think_eos_id": 1077,
        "codec_language_id": {"english": 1080, "chinese": 1081},
        "spk_id": {SPEAKER: 1085},
        "code_predictor_config": {
            **_decoder(24, 48, 2, 4, 2, 8),
            "vocab_size": 64,
            "num_code_groups": 4,
        },
    },
}

CONFIGS: dict[str, dict[str, Any]] = {
    "0.6b": _real("0b6", 1024, 3072),
    "1.7b": _real("1b7", 2048, 6144),
    "tiny": TINY,
}


def byte_level_tokenizer() -> Tokenizer:
    """Byte-level text tokenizer: ids 0..255 are bytes, then the chat-frame tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in CHAT_TOKENS])
    return tokenizer


def random_qwen3_tts(
    size: str,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Qwen3TTS:
    """A CustomVoice Qwen3-TTS of architecture `size` ("0.6b", "1.7b", "tiny") with random
    weights (normal, std 0.02; norm scales 1), seeded; its speaker is `SPEAKER`."""
    if size not in CONFIGS:
        raise InvalidInputError(f"unknown Qwen3-TTS size {size!r}; choose one of {list(CONFIGS)}")
    config = Qwen3TTSConfig.from_dict(CONFIGS[size])
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = Qwen3TTSModel(config)
    model = model.to_empty(device=device or torch.device("cpu"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                values = torch.randn(p.shape, generator=generator) * WEIGHT_STD
                p.copy_(values.to(p.dtype))
    return Qwen3TTS.from_modules(config, model.to(dtype).eval(), byte_level_tokenizer())


# A codec small enough for CPU tests, matching the tiny talker's 4 codebooks of 64 entries.
TINY_CODEC: dict[str, Any] = {
    "encoder_valid_num_quantizers": 4,
    "decode_upsample_rate": 24,
    "encoder_config": {
        "hidden_size": 32, "num_filters": 4, "codebook_size": 64, "codebook_dim": 16,
        "num_quantizers": 8, "vector_quantization_hidden_dimension": 16, "num_hidden_layers": 2,
        "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
        "head_dim": 8,
    },
    "decoder_config": {
        "codebook_size": 64, "codebook_dim": 16, "hidden_size": 16, "latent_dim": 24,
        "head_dim": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 32, "sliding_window": 8, "num_hidden_layers": 2,
        "num_quantizers": 4, "upsample_rates": [2, 3], "upsampling_ratios": [2, 2],
        "decoder_dim": 16,
    },
}  # fmt: skip


def random_speech_codec(
    size: str,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> SpeechCodec:
    """The 12 Hz codec for a `random_qwen3_tts(size)` model: the released architecture (the
    config's defaults; `TINY_CODEC` for "tiny") with PyTorch's default random init, seeded."""
    config = CodecConfig.from_dict(TINY_CODEC if size == "tiny" else {})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CodecModel(config)
    return SpeechCodec(model.to(device or torch.device("cpu"), dtype), config)
