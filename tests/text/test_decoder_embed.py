"""Decoder embedding models (Qwen3-Embedding layout): ferrum against sentence-transformers'
`encode` on tiny random-init Qwen3 / Qwen2 folders, and through `/v1/embeddings`."""

from __future__ import annotations

import numpy as np
import pytest

from ferrum.errors import ModelNotFoundError, UnsupportedModelError
from ferrum.text.embed import Embedder
from ferrum.text.resolve import resolve_model
from tests.text.decoder_checkpoints import MAX_POSITIONS, make_tiny_decoder_embedder
from tests.text.test_sentence_embed import cosines, mixed_sentences

MAX_SEQ = 24  # tokens: the tiny folders' sentence_bert_config max_seq_length


def reference(path, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    """sentence-transformers' embeddings, and each text's full token count (EOS included)."""
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(path), device="cpu")
    full = [len(model.tokenizer(t, truncation=False)["input_ids"]) for t in texts]
    return model.encode(texts, convert_to_numpy=True), full


@pytest.mark.parametrize(
    "family, padding_side, normalize",
    [("qwen3", "left", True), ("qwen3", "right", True), ("qwen2", "right", False)],
)
def test_last_token_embeddings_match_sentence_transformers(
    tmp_path, family, padding_side, normalize
):
    path = make_tiny_decoder_embedder(
        tmp_path / family, family=family, padding_side=padding_side, normalize=normalize
    )
    texts = mixed_sentences(9, 1, 30, seed=3)  # 3 to 60-odd tokens: some cut at MAX_SEQ
    ref, full = reference(path, texts)
    with Embedder(str(path), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=texts)
    assert out.dims == 32 and out.normalized == normalize
    assert cosines(out.embeddings, ref).min() >= 0.99999
    np.testing.assert_allclose(out.embeddings, ref, atol=1e-5)
    # over-long texts are cut at the model's limit and counted, as sentence-transformers cuts
    assert list(out.token_counts) == [min(n, MAX_SEQ) for n in full]
    assert out.truncated == sum(n > MAX_SEQ for n in full) > 0


def test_limit_without_sentence_bert_config_is_the_tokenizer_and_position_limit(tmp_path):
    path = make_tiny_decoder_embedder(tmp_path / "nolimit", max_seq_length=None)
    texts = [" ".join(["capital of France"] * 40), "short"]
    ref, full = reference(path, texts)
    with Embedder(str(path), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=texts)
    assert full[0] > MAX_POSITIONS
    assert out.token_counts == (MAX_POSITIONS, full[1]) and out.truncated == 1
    assert cosines(out.embeddings, ref).min() >= 0.99999


def test_a_causal_lm_without_pooling_config_is_refused_clearly(tmp_path):
    path = make_tiny_decoder_embedder(tmp_path / "lm", sentence_transformers=False)
    with pytest.raises(UnsupportedModelError, match="not an embedding model.*qwen3-embedding"):
        Embedder(str(path), device="cpu")


def test_aliases_name_the_hub_models(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for alias, repo in [
        ("qwen3-embedding", "Qwen/Qwen3-Embedding-0.6B"),
        ("chinese-clip", "OFA-Sys/chinese-clip-vit-base-patch16"),
    ]:
        with pytest.raises(ModelNotFoundError, match=repo):
            resolve_model(alias)


def test_embeddings_endpoint_serves_a_decoder_model(tmp_path):
    from fastapi.testclient import TestClient

    from ferrum.server import launch
    from ferrum.server.app import create_app
    from ferrum.server.state import ServerState

    path = make_tiny_decoder_embedder(tmp_path / "served")
    texts = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France."]
    state = ServerState()
    loaded = launch.load_embedder(str(path), device="cpu", dtype="float32")
    loaded.model.name = "tiny-qwen3"
    state.models.add(loaded.model)
    try:
        with TestClient(create_app(state, extra_routers=launch.routers())) as client:
            body = {"model": "tiny-qwen3", "input": texts, "encoding_format": "float"}
            reply = client.post("/v1/embeddings", json=body)
            assert reply.status_code == 200, reply.text
            doc = reply.json()
        expected = loaded.model.handle.embedder.embed(texts=texts)
    finally:
        state.models.close_all()
    got = np.array([d["embedding"] for d in doc["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected.embeddings, rtol=1e-5, atol=1e-6)
    assert doc["usage"]["prompt_tokens"] == expected.total_tokens
    ref, _ = reference(path, texts)
    assert cosines(got, ref).min() >= 0.99999
