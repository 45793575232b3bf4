"""SigLIP2: ferrum's NaFlex preprocessing and towers against transformers' on the same tiny weights.

The tiny checkpoints are laid out as google/siglip2-base-patch16-naflex and
google/siglip2-base-patch16-224 are: a Gemma-style BPE tokenizer.json whose tokenizer_config.json
says GemmaTokenizer with add_bos_token false / add_eos_token true (the tokenizer.json appends
<eos> and does not lowercase), <pad> = 0 while the model config keeps SigLIP's default
pad_token_id of 1 (<eos> in this vocabulary), and a text length of 64.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ferrum.text.embed import Embedder
from ferrum.vision.image import load_image
from ferrum.vision.naflex import NaflexPreprocess, naflex_patches
from tests.text.conftest import CORPUS, TINY, _randomize, sample_images

TEXTS = ["A photo of a CAT", "The quick brown fox jumps over the lazy dog.", "Paris", "héllo"]
TEXT_LEN = 64  # tokens: SigLIP2 pads every text to 64
PATCH = 8  # pixels
MAX_PATCHES = 64  # patches per image at most (the real NaFlex default is 256)
POSITION_GRID = 16  # learned position embeddings: 4 × 4, resized up and down per image
ATOL = 1e-4


def _write_tokenizer(path: Path, tokenizer_class: str) -> int:
    """A Gemma-layout BPE tokenizer (<pad> 0, <eos> 1, <bos> 2, <unk> 3); returns its size."""
    from tokenizers import Tokenizer, models, normalizers, processors, trainers
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    trained = Tokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Sequence(
        [normalizers.Lowercase(), normalizers.Replace(" ", "▁")]
    )
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=specials)
    trained.train_from_iterator(CORPUS, trainer)
    bpe = json.loads(trained.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in bpe["merges"]]
    tok = Siglip2Tokenizer(vocab=bpe["vocab"], merges=merges)
    tok.save_pretrained(path)
    # As the hub's tokenizer.json: no lowercasing, text then <eos> (add_eos_token), no <bos>
    backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.post_processor = processors.TemplateProcessing(
        single="$A <eos>", special_tokens=[("<eos>", 1)]
    )
    backend.save(str(path / "tokenizer.json"))
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.update(
        tokenizer_class=tokenizer_class,
        add_bos_token=False,
        add_eos_token=True,
        padding_side="right",
    )
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return len(tok)


def _text_config(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, max_position_embeddings=TEXT_LEN, **TINY)


def make_tiny_siglip2_naflex(path: Path) -> Path:
    import transformers
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    path.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_tokenizer(path, "GemmaTokenizer")
    config = transformers.Siglip2Config(
        text_config=_text_config(vocab_size),
        vision_config=dict(patch_size=PATCH, num_patches=POSITION_GRID, **TINY),
    )
    model = transformers.Siglip2Model(config).eval()
    _randomize(model, seed=7)
    model.save_pretrained(path, safe_serialization=True)
    Siglip2ImageProcessorPil(patch_size=PATCH, max_num_patches=MAX_PATCHES).save_pretrained(path)
    return path


def make_tiny_siglip2_fixed(path: Path) -> Path:
    """model_type "siglip" with SigLIP2's Gemma tokenizer, as the fixed-resolution checkpoints."""
    import transformers
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    path.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_tokenizer(path, "GemmaTokenizer")
    config = transformers.SiglipConfig(
        text_config=_text_config(vocab_size),
        vision_config=dict(image_size=32, patch_size=PATCH, **TINY),
    )
    model = transformers.SiglipModel(config).eval()
    _randomize(model, seed=8)
    model.save_pretrained(path, safe_serialization=True)
    # SigLIP2's processor: bilinear, mean/std 0.5
    SiglipImageProcessorPil(size={"height": 32, "width": 32}, resample=2).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_naflex(tmp_path_factory) -> Path:
    return make_tiny_siglip2_naflex(tmp_path_factory.mktemp("tiny-siglip2-naflex"))


def _images(tmp_path: Path) -> list[Path]:
    """Real photos plus Pillow-made extremes: very wide (its grid is 1-2 patches tall, so the
    position grid shrinks on one axis and grows on the other), tall, and tiny (upscaled)."""
    paths = sample_images(tmp_path)
    try:
        import matplotlib

        paths.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    except ImportError:
        pass
    wide = Image.linear_gradient("L").convert("RGB").resize((400, 30))
    wide.save(tmp_path / "wide.png")
    tall = Image.radial_gradient("L").convert("RGB").resize((50, 300))
    tall.save(tmp_path / "tall.png")
    return paths + [tmp_path / "wide.png", tmp_path / "tall.png"]


def _reference_pixels(path: Path, images: list[Image.Image]):
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    return Siglip2ImageProcessorPil.from_pretrained(path)(images, return_tensors="pt")


def test_naflex_patches_match_transformers(tiny_naflex, tmp_path):
    cfg = NaflexPreprocess.from_dir(tiny_naflex, PATCH)
    assert (cfg.patch_size, cfg.max_num_patches) == (PATCH, MAX_PATCHES)
    for path in _images(tmp_path):
        img = load_image(path)
        ref = _reference_pixels(tiny_naflex, [img])
        ours = naflex_patches(img, cfg)
        assert ours.grid == tuple(ref.spatial_shapes[0].tolist()), path
        n = ours.num_patches
        assert int(ref.pixel_attention_mask[0].sum()) == n
        np.testing.assert_allclose(ours.patches, ref.pixel_values[0, :n].numpy(), atol=1e-5)


def _tokenized(path: Path, texts: list[str]) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    return tok(texts, padding="max_length", max_length=TEXT_LEN, truncation=True).input_ids


def test_naflex_matches_transformers(tiny_naflex, tmp_path):
    from transformers import Siglip2Model

    paths = _images(tmp_path)
    model = Siglip2Model.from_pretrained(tiny_naflex).eval()
    ids = torch.tensor(_tokenized(tiny_naflex, TEXTS))  # Siglip2Tokenizer: lowercase, + <eos>
    assert (ids[:, 0] != 2).all() and (ids == 1).sum() == len(TEXTS) and ids[0, -1] == 0
    inputs = _reference_pixels(tiny_naflex, [load_image(p) for p in paths])
    with torch.no_grad():
        ref_text = model.get_text_features(input_ids=ids).pooler_output.numpy()
        ref_image = model.get_image_features(**inputs).pooler_output.numpy()
    with Embedder(str(tiny_naflex), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=TEXTS, images=paths, normalize=False)
        assert emb.dims == 32
    n = len(TEXTS)
    np.testing.assert_allclose(out.embeddings[:n], ref_text, atol=ATOL)
    np.testing.assert_allclose(out.embeddings[n:], ref_image, atol=ATOL)


def test_mixed_aspect_ratios_batch_like_one_by_one(tiny_naflex, tmp_path):
    paths = _images(tmp_path)
    with Embedder(str(tiny_naflex), device="cpu", dtype="float32") as emb:
        work = emb.encoder.image_work
        items = [work.prepare(p) for p in paths]
        assert len({item.num_patches for item in items}) > 2  # really different lengths
        together = np.stack([e.vector for e in work.run(items)])
        alone = np.stack([work.run([item])[0].vector for item in items])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_fixed_resolution_siglip2_loads_and_matches(tmp_path):
    from transformers import SiglipModel
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    path = make_tiny_siglip2_fixed(tmp_path / "ckpt")
    paths = sample_images(tmp_path)
    model = SiglipModel.from_pretrained(path).eval()
    # transformers' GemmaTokenizer does not lowercase; SigLIP2 was trained on lowercased text
    ids = torch.tensor(_tokenized(path, [t.lower() for t in TEXTS]))
    assert ids[0, -1] == 0  # padded with <pad>, not with the config's pad_token_id (<eos>)
    pixels = SiglipImageProcessorPil.from_pretrained(path)(
        [load_image(p) for p in paths], return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        ref_text = model.get_text_features(input_ids=ids).pooler_output.numpy()
        ref_image = model.get_image_features(pixel_values=pixels).pooler_output.numpy()
    with Embedder(str(path), device="cpu", dtype="float32") as emb:
        out = emb.embed(texts=TEXTS, images=paths, normalize=False)
    n = len(TEXTS)
    np.testing.assert_allclose(out.embeddings[:n], ref_text, atol=ATOL)
    np.testing.assert_allclose(out.embeddings[n:], ref_image, atol=ATOL)


def test_cli_similarity(tiny_naflex, tmp_path):
    from typer.testing import CliRunner

    from ferrum.commands import _register, app

    _register()
    image = _images(tmp_path)[-1]
    args = ["embed", "-m", str(tiny_naflex), "--text", TEXTS[0], "--image", str(image)]
    result = CliRunner().invoke(app, [*args, "--similarity", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    sim = np.array(json.loads(result.stdout)["similarity"])  # (2, 2)
    with Embedder(str(tiny_naflex), device="cpu", dtype="float32") as emb:
        expected = emb.embed(texts=[TEXTS[0]], images=[image]).similarity()
    np.testing.assert_allclose(sim, expected, atol=1e-5)


def test_embeddings_endpoint_takes_images_of_any_shape(tiny_naflex, tmp_path):
    import base64
    import io

    import httpx

    from ferrum.server import launch
    from ferrum.server.state import ServerState
    from tests.server.conftest import running_server

    wide = Image.linear_gradient("L").convert("RGB").resize((300, 40))
    buffer = io.BytesIO()
    wide.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    state = ServerState()
    loaded = launch.load_embedder(str(tiny_naflex), device="cpu", dtype="float32")
    state.models.add(loaded.model)
    try:
        with running_server(state) as base:
            body = {
                "model": loaded.model.name,
                "input": [TEXTS[0], {"type": "image_url", "image_url": {"url": url}}],
            }
            r = httpx.post(f"{base}/v1/embeddings", json=body, timeout=60)
        assert r.status_code == 200, r.text
        got = np.array([d["embedding"] for d in r.json()["data"]])
        reference = state.models.get(loaded.model.name, "embedding").handle.embedder
        expected = reference.embed(texts=[TEXTS[0]], images=[wide]).embeddings
    finally:
        state.models.close_all()
    np.testing.assert_allclose(got, expected, atol=1e-5)
