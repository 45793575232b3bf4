"""Opening checkpoints: safetensors directories, and every way a checkpoint can be broken."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ferrum.errors import CheckpointError
from ferrum.loader.checkpoint import open_checkpoint
from ferrum.loader.resolve import ModelSource


def _dir_source(path):
    return ModelSource(str(path), "dir", path)


def _open_and_read(source):
    checkpoint = open_checkpoint(source)
    return dict(checkpoint.weights())


@pytest.fixture
def llama_copy(tmp_path, tiny_models):
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_models["llama"].dir, out)
    return out


def test_dir_checkpoint_weights_config_and_generation_config(tiny_models):
    model = tiny_models["qwen3"]
    checkpoint = open_checkpoint(_dir_source(model.dir))
    assert checkpoint.config["architectures"] == ["Qwen3ForCausalLM"]
    assert checkpoint.config["rope_theta"] == model.config["rope_parameters"]["rope_theta"]
    assert checkpoint.config["rope_scaling"] is None
    assert checkpoint.generation_config == {"eos_token_id": [2, 0]}
    weights = dict(checkpoint.weights())
    # save_pretrained drops the tied lm_head
    assert set(weights) == set(model.state_dict) - {"lm_head.weight"}
    assert all(torch.equal(weights[k], model.state_dict[k]) for k in weights)


def test_config_not_json(llama_copy):
    (llama_copy / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        open_checkpoint(_dir_source(llama_copy))


def test_config_without_architectures(llama_copy):
    config = json.loads((llama_copy / "config.json").read_text())
    del config["architectures"]
    (llama_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="architectures"):
        open_checkpoint(_dir_source(llama_copy))


def test_missing_tokenizer(llama_copy):
    (llama_copy / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        open_checkpoint(_dir_source(llama_copy))


def test_truncated_safetensors(llama_copy):
    weights = llama_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        _open_and_read(_dir_source(llama_copy))


def test_missing_shard(llama_copy):
    index = {"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                            "lm_head.weight": "model-00002-of-00002.safetensors"}}  # fmt: skip
    (llama_copy / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing"):
        open_checkpoint(_dir_source(llama_copy))


@pytest.mark.parametrize("keep", [0.5, 0.98, 0.001])
def test_truncated_gguf(tmp_path, tiny_ggufs, keep):
    original = tiny_ggufs[("llama", "Q8_0")]
    path = tmp_path / "cut.gguf"
    path.write_bytes(original.read_bytes()[: int(original.stat().st_size * keep)])
    with pytest.raises(CheckpointError, match="cut.gguf"):
        _open_and_read(ModelSource(str(path), "gguf", path))


def test_not_a_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"definitely not a gguf file" * 100)
    with pytest.raises(CheckpointError, match="not a readable GGUF"):
        open_checkpoint(ModelSource(str(path), "gguf", path))
