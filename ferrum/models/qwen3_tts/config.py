"""The Qwen3-TTS model configuration (talker, code predictor, speaker encoder, special ids),
read from the main `config.json` of a Qwen3-TTS checkpoint folder.

The codec (`speech_tokenizer/`) has its own config, read by `codec_config.py`. Defaults for keys a
config.json leaves out are those of the reference package's configuration classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferrum.errors import CheckpointError, UnsupportedModelError

MODEL_TYPES = ("base", "custom_voice", "voice_design")
SUPPORTED_ACTIVATIONS = ("silu",)
SPEAKER_SAMPLE_RATE = 24_000  # Hz of the clip the speaker encoder's mel is computed at


@dataclass(frozen=True)
class DecoderConfig:
    """One Qwen3-style decoder stack (the talker's or the code predictor's)."""

    vocab_size: int  # codec tokens (codebook entries plus, for the talker, control tokens)
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    num_code_groups: int  # codebooks per frame (Q)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], default_head_dim: int | None) -> DecoderConfig:
        act = raw.get("hidden_act", "silu")
        if act not in SUPPORTED_ACTIVATIONS:
            raise UnsupportedModelError(f"Qwen3-TTS: activation {act!r} is not supported")
        if raw.get("use_sliding_window"):
            raise UnsupportedModelError("Qwen3-TTS: sliding-window attention is not supported")
        scaling = raw.get("rope_scaling") or {}
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
        if rope_type != "default":
            raise UnsupportedModelError(f"Qwen3-TTS: rope type {rope_type!r} is not supported")
        hidden, heads = int(raw.get("hidden_size", 1024)), int(raw.get("num_attention_heads", 16))
        head_dim = raw.get("head_dim", default_head_dim or hidden // heads)
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(raw.get("rope_theta", 10_000)),
            num_code_groups=int(raw.get("num_code_groups", 32)),
        )


@dataclass(frozen=True)
class CodecTokenIds:
    """Control tokens of the talker's codec vocabulary (above the codebook entries)."""

    eos: int  # ends the speech
    pad: int
    bos: int
    think: int  # opens a prefix that names the language
    nothink: int  # opens a prefix without a language ("auto")
    think_bos: int
    think_eos: int


@dataclass(frozen=True)
class TalkerConfig:
    """The talker: a decoder over text+codec embeddings predicting codebook 0 of each frame."""

    decoder: DecoderConfig
    code_predictor: DecoderConfig  # predicts codebooks 1..Q-1 of a frame
    text_hidden_size: int
    text_vocab_size: int
    codec: CodecTokenIds
    speaker_ids: dict[str, int]  # CustomVoice speaker name (lower case) -> codec token
    speaker_dialects: dict[str, str]  # speaker -> dialect "language" used for chinese/auto
    language_ids: dict[str, int]  # language name (lower case) -> codec token

    @property
    def num_code_groups(self) -> int:
        return self.decoder.num_code_groups


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """The ECAPA-TDNN speaker encoder of the Base models (x-vector for voice cloning)."""

    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: tuple[int, ...] = (512, 512, 512, 512, 1536)
    enc_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    enc_dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = SPEAKER_SAMPLE_RATE


@dataclass(frozen=True)
class TextTokenIds:
    """Ids in the text vocabulary that frame the talker's prompt."""

    im_start: int = 151644
    im_end: int = 151645
    tts_pad: int = 151671  # text stream filler once the text has run out
    tts_bos: int = 151672
    tts_eos: int = 151673


@dataclass(frozen=True)
class Qwen3TTSConfig:
    """Everything of a Qwen3-TTS checkpoint's config.json that the text-to-codes path needs."""

    talker: TalkerConfig
    speaker_encoder: SpeakerEncoderConfig
    text_ids: TextTokenIds
    model_type: str  # "base" (voice clone), "custom_voice" (named speakers), "voice_design"
    model_size: str  # "0b6" or "1b7"

    @property
    def supported_languages(self) -> list[str]:
        names = [n for n in self.talker.language_ids if "dialect" not in n]
        return ["auto", *names]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Qwen3TTSConfig:
        model_type = raw.get("tts_model_type")
        if model_type not in MODEL_TYPES:
            raise UnsupportedModelError(
                f"Qwen3-TTS: tts_model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}"
            )
        try:
            talker = _talker(raw["talker_config"])
        except KeyError as e:
            raise CheckpointError(f"Qwen3-TTS config.json: missing key {e}") from e
        spk = raw.get("speaker_encoder_config") or {}
        known = SpeakerEncoderConfig.__dataclass_fields__
        speaker = SpeakerEncoderConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in spk.items() if k in known}
        )
        ids = {
            k: int(raw[f"{k}_token_id"])
            for k in TextTokenIds.__dataclass_fields__
            if f"{k}_token_id" in raw
        }
        return cls(
            talker=talker,
            speaker_encoder=speaker,
            text_ids=TextTokenIds(**ids),
            model_type=model_type,
            model_size=str(raw.get("tts_model_size") or ""),
        )

    @classmethod
    def from_dir(cls, path: Path) -> Qwen3TTSConfig:
        file = path / "config.json"
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: no config.json (not a Qwen3-TTS model folder)") from e
        except ValueError as e:
            raise CheckpointError(f"{file}: not valid JSON ({e})") from e
        if raw.get("model_type") != "qwen3_tts":
            raise UnsupportedModelError(
                f"{file}: model_type {raw.get('model_type')!r} is not qwen3_tts"
            )
        return cls.from_dict(raw)


def _talker(raw: dict[str, Any]) -> TalkerConfig:
    decoder = DecoderConfig.from_dict(raw, default_head_dim=None)
    predictor = DecoderConfig.from_dict(raw.get("code_predictor_config") or {}, 128)
    codec = CodecTokenIds(
        eos=int(raw.get("codec_eos_token_id", 4198)),
        pad=int(raw.get("codec_pad_id", 4196)),
        bos=int(raw.get("codec_bos_id", 4197)),
        think=int(raw.get("codec_think_id", 4202)),
        nothink=int(raw.get("codec_nothink_id", 4203)),
        think_bos=int(raw.get("codec_think_bos_id", 4204)),
        think_eos=int(raw.get("codec_think_eos_id", 4205)),
    )
    dialects = {k.lower(): v for k, v in (raw.get("spk_is_dialect") or {}).items() if v}
    return TalkerConfig(
        decoder=decoder,
        code_predictor=predictor,
        text_hidden_size=int(raw.get("text_hidden_size", 2048)),
        text_vocab_size=int(raw.get("text_vocab_size", 151936)),
        codec=codec,
        speaker_ids={k.lower(): _single_id(v) for k, v in (raw.get("spk_id") or {}).items()},
        speaker_dialects=dialects,
        language_ids={k.lower(): int(v) for k, v in (raw.get("codec_language_id") or {}).items()},
    )


def _single_id(value: Any) -> int:
    """Speaker ids are written as a number or as a one-element list."""
    if isinstance(value, list):
        if len(value) != 1:
            raise CheckpointError(f"Qwen3-TTS config.json: speaker id {value!r} is not one token")
        value = value[0]
    return int(value)
