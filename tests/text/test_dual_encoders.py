"""CLIP and SigLIP: ferrum's towers against transformers' models on the same tiny weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferrum.errors import InvalidInputError
from ferrum.text.embed import Embedder
from tests.text.conftest import SIGLIP_TEXT_LEN, sample_images

TEXTS = ["a photo of a cat", "A much longer caption, with punctuation and ünïcödé!", "dog"]
ATOL = 1e-4


def _reference_clip(path, texts, images):
    from PIL import Image
    from transformers import CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    model = CLIPModel.from_pretrained(path).eval()
    tok = CLIPTokenizer.from_pretrained(path)
    inputs = tok(texts, padding=True, return_tensors="pt")
    pixels = CLIPImageProcessorPil.from_pretrained(path)(
        [Image.open(p) for p in images], return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        text = model.get_text_features(**inputs).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
        both = model(**inputs, pixel_values=pixels)
    return text.numpy(), image.numpy(), both


def test_clip_matches_transformers(tiny_clip, tmp_path):
    images = sample_images(tmp_path)
    ref_text, ref_image, ref_both = _reference_clip(tiny_clip, TEXTS, images)
    with Embedder(str(tiny_clip), device="cpu", dtype="float32") as emb:
        raw = emb.embed(texts=TEXTS, images=images, normalize=False)
        unit = emb.embed(texts=TEXTS, images=images)
    n = len(TEXTS)
    np.testing.assert_allclose(raw.embeddings[:n], ref_text, atol=ATOL)
    np.testing.assert_allclose(raw.embeddings[n:], ref_image, atol=ATOL)
    assert unit.normalized and raw.kinds == ("text",) * n + ("image",) * len(images)
    np.testing.assert_allclose(unit.embeddings[:n], ref_both.text_embeds.numpy(), atol=ATOL)
    np.testing.assert_allclose(unit.embeddings[n:], ref_both.image_embeds.numpy(), atol=ATOL)
    # text-against-image cosines are CLIP's logits without the temperature
    temperature = ref_both.logits_per_text.numpy() / unit.similarity()[:n, n:]
    np.testing.assert_allclose(temperature, temperature[0, 0], rtol=1e-3)


def test_siglip_matches_transformers(tiny_siglip, tmp_path):
    from PIL import Image
    from tokenizers import Tokenizer
    from transformers import SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    images = sample_images(tmp_path)
    model = SiglipModel.from_pretrained(tiny_siglip).eval()
    tok = Tokenizer.from_file(str(tiny_siglip / "tokenizer.json"))
    # The SigLIP processor's way: padding="max_length", truncation, no attention mask.
    tok.enable_padding(length=SIGLIP_TEXT_LEN, pad_id=1)
    tok.enable_truncation(SIGLIP_TEXT_LEN)
    ids = torch.tensor([e.ids for e in tok.encode_batch(TEXTS)])
    pixels = SiglipImageProcessorPil.from_pretrained(tiny_siglip)(
        [Image.open(p) for p in images], return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        ref_text = model.get_text_features(input_ids=ids).pooler_output.numpy()
        ref_image = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    with Embedder(str(tiny_siglip), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=TEXTS, images=images, normalize=False)
    n = len(TEXTS)
    np.testing.assert_allclose(out.embeddings[:n], ref_text, atol=ATOL)
    np.testing.assert_allclose(out.embeddings[n:], ref_image, atol=ATOL)


def test_clip_truncates_long_text_and_counts_it(tiny_clip):
    with Embedder(str(tiny_clip), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=["word " * 200, "short"])
    assert out.truncated == 1
    assert out.token_counts[0] == 77


def _truncated_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.linear_gradient("L").convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize(
    "kind, message",
    [("truncated", "truncated or corrupt"), ("text", "not an image format")],
)
def test_bad_images_fail_only_themselves(tiny_clip, tmp_path, kind, message):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(_truncated_jpeg() if kind == "truncated" else b"hello, not pixels")
    good = sample_images(tmp_path)[-1]
    with Embedder(str(tiny_clip), device="cpu", dtype="float32") as emb:
        with pytest.raises(InvalidInputError, match=message):
            emb.embed(images=[good, bad])
        futures = emb.submit_images([good, bad, good])
        assert futures[0].result().vector.shape == (16,)
        assert isinstance(futures[1].exception(), InvalidInputError)
        assert futures[2].result().vector.shape == (16,)
