"""The talker's prompt for one request, built exactly as the reference builds it.

The talker reads two streams summed position by position: text (projected text embeddings) and
codec (codec-token embeddings). The prompt is

    [instruction]            "<|im_start|>user\\n{instruct}<|im_end|>\\n", text only (VoiceDesign)
    role                     "<|im_start|>assistant\\n", text only
    codec prefix             think/nothink, think_bos, [language], think_eos, [speaker], pad
                             under tts_pad on the text side, the last one under tts_bos
    first text token         + codec bos                                  (streaming text)
  | whole text, tts_eos      + codec pad each, then tts_pad + codec bos   (non-streaming text)
  | reference text + text    summed with codec bos + the clip's frames    (voice clone, ICL)

and what is left of the text ("trailing text", ending in tts_eos) is added to the talker's input
one token a frame while it speaks; once it runs out, tts_pad is added instead. The speaker is a
codec-table row (CustomVoice) or the x-vector of a reference clip (Base).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from torch import Tensor

from ferrum.errors import InvalidInputError
from ferrum.models.qwen3_tts.config import Qwen3TTSConfig
from ferrum.models.qwen3_tts.talker import Talker

ROLE_TOKENS = 3  # "<|im_start|>", "assistant", "\n" open every assistant turn
TEXT_TAIL_TOKENS = 5  # "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n" close the text
REF_TAIL_TOKENS = 2  # "<|im_end|>", "\n" close the reference transcript
DIALECT_LANGUAGES = ("chinese", "auto")  # languages a dialect speaker speaks in dialect
SIZES_WITHOUT_INSTRUCT = ("0b6",)  # CustomVoice sizes that ignore an instruction


@dataclass(frozen=True)
class VoiceClonePrompt:
    """A reference voice for the Base models, from `Qwen3TTS.voice_clone_prompt`."""

    speaker_embedding: Tensor  # (hidden,) x-vector of the reference clip
    ref_codes: Tensor | None = None  # (frames, Q) codec codes of the clip: in-context mode
    ref_text: str | None = None  # transcript of the clip (required with ref_codes)


@dataclass(frozen=True)
class SpeechRequest:
    """One utterance to speak."""

    text: str
    language: str = "auto"  # a language of the model, or "auto"
    speaker: str | None = None  # CustomVoice: one of the model's speakers
    instruct: str | None = None  # VoiceDesign (and CustomVoice 1.7B): how to speak
    voice: VoiceClonePrompt | None = None  # Base: the voice to clone
    non_streaming: bool | None = None  # whole text in the prompt; None: the mode's default


@dataclass(frozen=True)
class TalkerPrompt:
    """What the talker starts from."""

    embeds: Tensor  # (T, hidden) the prompt
    trailing_text: Tensor  # (L, hidden) text added to the input of frames 0..L-1


def assistant_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


def reference_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n"


def instruct_text(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n"


class PromptBuilder:
    """Turns requests into talker prompts for one model."""

    def __init__(self, talker: Talker, config: Qwen3TTSConfig, tokenizer: Tokenizer) -> None:
        self.talker = talker
        self.config = config
        self.tokenizer = tokenizer

    def _tensor(self, ids: list[int]) -> Tensor:
        return torch.tensor(ids, dtype=torch.long, device=self.talker.codec_head.weight.device)

    def _ids(self, text: str) -> Tensor:
        return self._tensor(self.tokenizer.encode(text).ids)

    def _codec(self, ids: list[int]) -> Tensor:
        return self.talker.embed_codec(self._tensor(ids))

    def special_text(self) -> tuple[Tensor, Tensor, Tensor]:
        """Projected tts_bos, tts_eos, tts_pad embeddings, each (1, hidden)."""
        t = self.config.text_ids
        embeds = self.talker.embed_text(self._tensor([t.tts_bos, t.tts_eos, t.tts_pad]))
        return embeds[0:1], embeds[1:2], embeds[2:3]

    def build(self, request: SpeechRequest) -> TalkerPrompt:
        """The prompt of one request (validated against the model's mode)."""
        check_request(self.config, request)
        codec_ids = self.config.talker.codec
        text_ids = self._ids(assistant_text(request.text))
        tts_bos, tts_eos, tts_pad = self.special_text()

        prefix = self._codec(self._codec_prefix(request))  # (C0, hidden)
        speaker = self._speaker_embedding(request)
        if speaker is not None:
            prefix = torch.cat((prefix, speaker.to(prefix.dtype)[None]), dim=0)
        prefix = torch.cat((prefix, self._codec([codec_ids.pad, codec_ids.bos])), dim=0)
        role = self.talker.embed_text(text_ids[:ROLE_TOKENS])
        under = torch.cat((tts_pad.expand(prefix.shape[0] - 2, -1), tts_bos), dim=0)
        parts = [role, under + prefix[:-1]]

        body = text_ids[ROLE_TOKENS:-TEXT_TAIL_TOKENS]
        voice = request.voice
        if voice is not None and voice.ref_codes is not None:
            ref_ids = self._ids(reference_text(voice.ref_text or ""))
            ref_body = ref_ids[ROLE_TOKENS:-REF_TAIL_TOKENS]
            icl, trailing = self._in_context(ref_body, body, voice.ref_codes, request)
            parts.append(icl)
        elif self._non_streaming(request):
            text = torch.cat((self.talker.embed_text(body), tts_eos), dim=0)
            parts.append(text + self._codec([codec_ids.pad] * text.shape[0]))
            parts.append(tts_pad + self._codec([codec_ids.bos]))
            trailing = tts_pad
        else:
            first = text_ids[ROLE_TOKENS : ROLE_TOKENS + 1]
            parts.append(self.talker.embed_text(first) + prefix[-1:])
            rest = text_ids[ROLE_TOKENS + 1 : -TEXT_TAIL_TOKENS]
            trailing = torch.cat((self.talker.embed_text(rest), tts_eos), dim=0)
        if request.instruct and self._uses_instruct():
            parts.insert(0, self.talker.embed_text(self._ids(instruct_text(request.instruct))))
        return TalkerPrompt(torch.cat(parts, dim=0), trailing)

    def _in_context(
        self, ref_body: Tensor, body: Tensor, ref_codes: Tensor, request: SpeechRequest
    ) -> tuple[Tensor, Tensor]:
        """Voice clone with the clip's transcript and codes: (prompt part, trailing text)."""
        codec_ids = self.config.talker.codec
        _, tts_eos, tts_pad = self.special_text()
        text = self.talker.embed_text(torch.cat((ref_body, body)))
        text = torch.cat((text, tts_eos), dim=0)  # (T1, hidden)
        frames = self.talker.embed_frame(ref_codes.to(body.device))  # (frames, hidden)
        codec = torch.cat((self._codec([codec_ids.bos]), frames.to(text.dtype)), dim=0)
        if self._non_streaming(request):
            text = text + self._codec([codec_ids.pad] * text.shape[0])
            return torch.cat((text, codec + tts_pad), dim=0), tts_pad
        if text.shape[0] > codec.shape[0]:
            return text[: codec.shape[0]] + codec, text[codec.shape[0] :]
        padded = torch.cat((text, tts_pad.expand(codec.shape[0] - text.shape[0], -1)), dim=0)
        return padded + codec, tts_pad

    def _codec_prefix(self, request: SpeechRequest) -> list[int]:
        talker = self.config.talker
        language = request.language.lower()
        language_id = None if language == "auto" else talker.language_ids[language]
        speaker = (request.speaker or "").lower()
        dialect = talker.speaker_dialects.get(speaker) if request.voice is None else None
        if language in DIALECT_LANGUAGES and dialect:
            language_id = talker.language_ids[dialect]
        c = talker.codec
        if language_id is None:
            return [c.nothink, c.think_bos, c.think_eos]
        return [c.think, c.think_bos, language_id, c.think_eos]

    def _speaker_embedding(self, request: SpeechRequest) -> Tensor | None:
        if request.voice is not None:
            return request.voice.speaker_embedding.to(self.talker.codec_head.weight.device)
        if not request.speaker:
            return None
        speaker_id = self.config.talker.speaker_ids[request.speaker.lower()]
        return self._codec([speaker_id])[0]

    def _non_streaming(self, request: SpeechRequest) -> bool:
        if request.non_streaming is not None:
            return request.non_streaming
        return self.config.model_type != "base"  # the reference wrapper's defaults

    def _uses_instruct(self) -> bool:
        if self.config.model_type == "voice_design":
            return True
        return (
            self.config.model_type == "custom_voice"
            and self.config.model_size not in SIZES_WITHOUT_INSTRUCT
        )


def check_request(config: Qwen3TTSConfig, request: SpeechRequest) -> None:
    """Raise InvalidInputError for a request this model cannot speak, saying how to fix it."""
    if not request.text.strip():
        raise InvalidInputError("there is no text to speak")
    if request.language.lower() not in config.supported_languages:
        raise InvalidInputError(
            f"language {request.language!r} is not supported by this model; "
            f"choose one of: {', '.join(config.supported_languages)}"
        )
    kind = config.model_type
    speakers = sorted(config.talker.speaker_ids)
    if kind == "custom_voice":
        if not request.speaker or request.speaker.lower() not in config.talker.speaker_ids:
            raise InvalidInputError(
                f"this CustomVoice model needs a speaker, one of: {', '.join(speakers)}"
            )
    elif request.speaker:
        raise InvalidInputError(
            f"this is a {kind} model, which has no named speakers (use a CustomVoice model)"
        )
    if kind == "base" and request.voice is None:
        raise InvalidInputError(
            "this Base model clones a voice: give a reference clip (and its transcript)"
        )
    if kind != "base" and request.voice is not None:
        raise InvalidInputError(f"this is a {kind} model; voice cloning needs a Base model")
    voice = request.voice
    if voice is not None and voice.ref_codes is not None and not (voice.ref_text or "").strip():
        raise InvalidInputError(
            "in-context voice cloning needs the reference clip's transcript (or use x-vector "
            "only mode, without the clip's codes)"
        )
