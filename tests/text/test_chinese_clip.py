"""Chinese-CLIP: ferrum's towers against transformers' ChineseCLIPModel on the same tiny
weights and real images, and `ferrum embed --similarity` over text and images."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ferrum.commands import _register, app
from ferrum.text.embed import Embedder
from tests.text.chinese_clip_checkpoint import PROJECTION_DIM, make_tiny_chinese_clip
from tests.text.conftest import sample_images

TEXTS = ["一只猫的照片", "杰尼龟 and a Pikachu, 皮卡丘!", "北京", "a photo of a dog"]
ATOL = 1e-4
TEXT_LIMIT = 64  # tokens: the tiny text tower's max_position_embeddings


@pytest.fixture(scope="module")
def tiny_chinese_clip(tmp_path_factory):
    return make_tiny_chinese_clip(tmp_path_factory.mktemp("tiny-chinese-clip"))


def reference(path, texts, images):
    """transformers' features through its own tokenizer and Pillow image processor."""
    from PIL import Image
    from transformers import AutoTokenizer, ChineseCLIPModel
    from transformers.models.chinese_clip.image_processing_pil_chinese_clip import (
        ChineseCLIPImageProcessorPil,
    )

    model = ChineseCLIPModel.from_pretrained(path).eval()
    inputs = AutoTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    processor = ChineseCLIPImageProcessorPil.from_pretrained(path)
    pixels = processor([Image.open(p) for p in images], return_tensors="pt").pixel_values
    with torch.no_grad():
        text = model.get_text_features(**inputs).pooler_output.numpy()
        image = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
        both = model(**inputs, pixel_values=pixels)
    return text, image, both


def test_chinese_clip_matches_transformers(tiny_chinese_clip, tmp_path):
    images = sample_images(tmp_path)
    ref_text, ref_image, ref_both = reference(tiny_chinese_clip, TEXTS, images)
    with Embedder(str(tiny_chinese_clip), device="cpu", dtype="float32") as emb:
        raw = emb.embed(texts=TEXTS, images=images, normalize=False)
        unit = emb.embed(texts=TEXTS, images=images)
    n = len(TEXTS)
    assert raw.dims == PROJECTION_DIM and unit.normalized
    np.testing.assert_allclose(raw.embeddings[:n], ref_text, atol=ATOL)
    np.testing.assert_allclose(raw.embeddings[n:], ref_image, atol=ATOL)
    np.testing.assert_allclose(unit.embeddings[:n], ref_both.text_embeds.numpy(), atol=ATOL)
    np.testing.assert_allclose(unit.embeddings[n:], ref_both.image_embeds.numpy(), atol=ATOL)
    # text-against-image cosines are the model's logits without the temperature
    temperature = ref_both.logits_per_text.numpy() / unit.similarity()[:n, n:]
    np.testing.assert_allclose(temperature, temperature[0, 0], rtol=1e-3)


def test_over_long_text_is_cut_at_the_position_limit(tiny_chinese_clip):
    from transformers import AutoTokenizer, ChineseCLIPModel

    long_text = "北京是中国的首都。" * 20
    tok = AutoTokenizer.from_pretrained(tiny_chinese_clip)
    assert len(tok(long_text)["input_ids"]) > TEXT_LIMIT
    inputs = tok([long_text], truncation=True, max_length=TEXT_LIMIT, return_tensors="pt")
    with torch.no_grad():
        model = ChineseCLIPModel.from_pretrained(tiny_chinese_clip).eval()
        expected = model.get_text_features(**inputs).pooler_output.numpy()
    with Embedder(str(tiny_chinese_clip), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=[long_text, "北京"], normalize=False)
    assert out.truncated == 1 and out.token_counts[0] == TEXT_LIMIT
    np.testing.assert_allclose(out.embeddings[:1], expected, atol=ATOL)


def test_cli_similarity_of_text_and_images(tiny_chinese_clip, tmp_path):
    _register()  # the whole command tree, as the console script sees it
    images = [str(p) for p in sample_images(tmp_path)[-2:]]
    args = [a for t in TEXTS[:2] for a in ("--text", t)]
    args += [a for p in images for a in ("--image", p)]
    result = CliRunner().invoke(
        app, ["embed", "-m", str(tiny_chinese_clip), "--similarity", "-f", "csv", *args]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["input", *TEXTS[:2], *images]
    sim = np.array([[float(x) for x in row[1:]] for row in rows[1:]])
    with Embedder(str(tiny_chinese_clip), device="cpu") as emb:
        e = emb.embed(texts=TEXTS[:2], images=images).embeddings
    np.testing.assert_allclose(sim, e @ e.T, atol=1e-5)
