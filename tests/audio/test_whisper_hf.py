"""Our Whisper on a Hugging Face checkpoint decodes exactly what transformers' generate does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ferrum.audio.checkpoint import load_whisper
from ferrum.audio.decoding import DecodingOptions, decode
from ferrum.audio.io import load_audio
from ferrum.audio.mel import log_mel_spectrogram, pad_or_trim
from ferrum.device import Backend

from .conftest import make_tiny_hf_whisper


def _mel(path: Path, n_mels: int) -> torch.Tensor:
    audio = torch.from_numpy(load_audio(path))
    return log_mel_spectrogram(pad_or_trim(audio), n_mels)[None]  # (1, n_mels, 3000)


def _reference_tokens(
    directory: Path, mel: torch.Tensor, new_tokens: int, timestamps: bool
) -> list[int]:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(directory).eval()
    with torch.inference_mode():
        out = model.generate(mel, max_new_tokens=new_tokens, return_timestamps=timestamps)
    sequence = (out if isinstance(out, torch.Tensor) else out["sequences"])[0].tolist()
    return sequence[:new_tokens]


@pytest.mark.parametrize("timestamps", [False, True])
def test_greedy_tokens_match_transformers(
    tiny_hf_dir: Path, jfk_path: Path, timestamps: bool
) -> None:
    new_tokens = 40 if not timestamps else 24  # within transformers' first timestamped segment
    mel = _mel(jfk_path, 80)
    expected = _reference_tokens(tiny_hf_dir, mel, new_tokens, timestamps)
    checkpoint = load_whisper(str(tiny_hf_dir), Backend.resolve("cpu", "float32"))
    options = DecodingOptions(without_timestamps=not timestamps, sample_len=new_tokens)
    result = decode(checkpoint, mel, options)[0]
    assert list(result.tokens) == expected
    if timestamps:
        assert any(t >= checkpoint.tokenizer.special.timestamp_begin for t in result.tokens)


def test_128_mel_model_matches_transformers(
    tmp_path: Path, tiny_en_ct2_dir: Path, jfk_path: Path
) -> None:
    directory = make_tiny_hf_whisper(tmp_path, tiny_en_ct2_dir, n_mels=128, seed=1)
    mel = _mel(jfk_path, 128)
    expected = _reference_tokens(directory, mel, 30, timestamps=False)
    checkpoint = load_whisper(str(directory), Backend.resolve("cpu", "float32"))
    result = decode(checkpoint, mel, DecodingOptions(without_timestamps=True, sample_len=30))[0]
    assert list(result.tokens) == expected


def test_encoder_and_logits_match_transformers(tiny_hf_dir: Path, jfk_path: Path) -> None:
    from transformers import WhisperForConditionalGeneration

    reference = WhisperForConditionalGeneration.from_pretrained(tiny_hf_dir).eval()
    ours = load_whisper(str(tiny_hf_dir), Backend.resolve("cpu", "float32")).model
    mel = _mel(jfk_path, 80)
    prompt = torch.tensor([[50257, 50362, 843, 523]])
    with torch.inference_mode():
        expected = reference(input_features=mel, decoder_input_ids=prompt).logits
        features = ours.encoder(mel)
        logits, _ = ours.decoder(prompt, ours.decoder.new_cache(features))
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
