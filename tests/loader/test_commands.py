"""`ferrum list` and `ferrum pull` through the Typer app."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from typer.testing import CliRunner

from ferrum.errors import ModelNotFoundError
from ferrum.loader.resolve import embedded_path


@pytest.fixture(scope="module")
def app():
    from ferrum import commands

    commands._register()
    return commands.app


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_models):
    """A hub cache holding one model under an alias's repo id and one under a plain repo id."""
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for repo_id in ("Qwen/Qwen3-0.6B", "someorg/tiny-qwen2"):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(tiny_models["qwen2"].dir, repo / "snapshots" / "c0ffee")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("c0ffee")
        (repo / "blobs").mkdir()
    return cache


def test_list_json_shows_embedded_and_cached_models(app, hub_cache):
    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["qwen3:0.6b"]["repo_id"] == "Qwen/Qwen3-0.6B"  # the alias names the repo
    assert rows["someorg/tiny-qwen2"]["format"] == "safetensors"
    assert rows["someorg/tiny-qwen2"]["path"].endswith("snapshots/c0ffee")
    assert rows["someorg/tiny-qwen2"]["size_bytes"] > 0
    if embedded_path("smollm2") is not None:
        assert rows["smollm2"]["format"] == "gguf"


def test_list_table_and_missing_cache(app, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "does-not-exist"))
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    if embedded_path("smollm2") is not None:
        assert "smollm2" in result.output and "gguf" in result.output
    else:
        assert "No local models" in result.output


def test_pull_of_a_cached_repo_prints_its_path(app, hub_cache):
    result = CliRunner().invoke(app, ["pull", "someorg/tiny-qwen2"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("snapshots/c0ffee")


def test_pull_offline_exits_1_fast_with_the_reason(app, hub_cache):
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["pull", "llama3.2:1b"])
    assert time.perf_counter() - start < 5.0
    assert result.exit_code == 1
    assert isinstance(result.exception, ModelNotFoundError)
    assert "meta-llama/Llama-3.2-1B-Instruct" in str(result.exception)
    assert "HF_TOKEN" in str(result.exception)


def test_main_prints_error_line_not_traceback(hub_cache, monkeypatch, capsys):
    from ferrum.commands import main

    monkeypatch.setattr("sys.argv", ["ferrum", "pull", "qwen2.5:7b"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot find model 'qwen2.5:7b'") and "Traceback" not in err
