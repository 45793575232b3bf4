"""Pillow preprocessing against transformers' Pillow image processors (pixel_values)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ferrum.errors import InvalidInputError
from ferrum.vision.image import ImagePreprocess, load_image, preprocess
from tests.text.conftest import sample_images


@pytest.mark.parametrize("family", ["clip", "clip-336", "siglip"])
def test_pixels_match_transformers(family, tmp_path):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    if family == "siglip":
        processor = SiglipImageProcessorPil()
    elif family == "clip-336":
        processor = CLIPImageProcessorPil(
            size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}
        )
    else:
        processor = CLIPImageProcessorPil()
    processor.save_pretrained(tmp_path)  # ferrum reads what a checkpoint would ship
    cfg = ImagePreprocess.from_dir(tmp_path)
    for path in sample_images(tmp_path):
        expected = processor(Image.open(path), return_tensors="np").pixel_values[0]
        ours = preprocess(load_image(path), cfg)
        assert ours.shape == expected.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, expected, atol=1e-5, err_msg=str(path))


def test_load_image_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InvalidInputError, match="directory"):
        load_image(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InvalidInputError, match="not an image format"):
        load_image(tmp_path / "notes.txt")


def test_missing_preprocessor_config_is_a_clear_error(tmp_path):
    from ferrum.errors import CheckpointError

    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        ImagePreprocess.from_dir(tmp_path)
