"""`ferrum embed` through Typer's CliRunner: output shapes, similarity, stdin, errors."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ferrum.commands import _register, app
from ferrum.text.embed import Embedder
from tests.text.conftest import sample_images

_register()  # the whole command tree, as the console script sees it

TEXTS = ["the quick brown fox", "a photo of a cat", "capital of France"]


def invoke(*args: str, stdin: str | None = None):
    return CliRunner().invoke(app, ["embed", *args], input=stdin)


def text_args(texts=TEXTS) -> list[str]:
    return [a for t in texts for a in ("--text", t)]


def test_json_output_matches_the_library(tiny_bert):
    result = invoke("-m", str(tiny_bert), *text_args())
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dims"] == 32 and doc["normalized"] is True and doc["truncated"] == 0
    assert [d["input"] for d in doc["data"]] == TEXTS
    with Embedder(str(tiny_bert), device="cpu") as emb:
        expected = emb.embed(texts=TEXTS).embeddings
    got = np.array([d["embedding"] for d in doc["data"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "raw"])
def test_line_formats_have_one_row_per_input(tiny_bert, fmt):
    result = invoke("-m", str(tiny_bert), "--format", fmt, "--no-normalize", *text_args())
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in lines]
        assert [len(r["embedding"]) for r in rows] == [32] * 3
        assert rows[1]["input"] == TEXTS[1]
    elif fmt == "csv":
        rows = list(csv.reader(io.StringIO(result.stdout)))
        assert rows[0][:4] == ["index", "kind", "input", "d0"] and len(rows[0]) == 3 + 32
        assert len(rows) == 4 and rows[2][2] == TEXTS[1]
    else:
        matrix = np.loadtxt(io.StringIO(result.stdout))
        assert matrix.shape == (3, 32)
        assert not np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)


def test_stdin_lines_and_similarity(tiny_bert):
    result = invoke("-m", str(tiny_bert), "--similarity", stdin="\n".join(TEXTS) + "\n\n")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    sim = np.array(doc["similarity"])
    assert doc["inputs"] == TEXTS and sim.shape == (3, 3)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-5)
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)
    with Embedder(str(tiny_bert), device="cpu") as emb:
        e = emb.embed(texts=TEXTS).embeddings
    np.testing.assert_allclose(sim, e @ e.T, atol=1e-5)


def test_text_against_image_similarity_for_clip(tiny_clip, tmp_path):
    images = [str(p) for p in sample_images(tmp_path)[-2:]]
    args = [a for p in images for a in ("--image", p)]
    result = invoke("-m", str(tiny_clip), "--similarity", "-f", "csv", *text_args(TEXTS[:2]), *args)
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["input", *TEXTS[:2], *images]
    assert len(rows) == 5 and all(len(r) == 5 for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text", "x", "--image", "/no/such/picture.png"], "image file not found"),
        ([], "nothing to embed"),
        (["--text", "x", "--format", "xml"], "--format"),
    ],
)
def test_errors_exit_1_with_a_message(tiny_bert, args, message):
    result = invoke("-m", str(tiny_bert), *args, stdin="")
    assert result.exit_code == 1
    assert f"error: {message}" in result.stderr
    assert "Traceback" not in result.output


def test_image_with_a_text_only_model(tiny_bert, tmp_path):
    image = str(sample_images(tmp_path)[-1])
    result = invoke("-m", str(tiny_bert), "--image", image)
    assert result.exit_code == 1
    assert "embeds text only" in result.stderr and "clip-vit-b32" in result.stderr


def test_unknown_model_is_a_clear_error():
    result = invoke("-m", "no-such-model", "--text", "x")
    assert result.exit_code == 1 and "unknown embedding model" in result.stderr
