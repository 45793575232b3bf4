"""Images → model pixels with Pillow: load, convert to RGB, resize, center-crop, normalize.

The steps and their parameters come from the checkpoint's preprocessor_config.json and follow
transformers' Pillow image processors (CLIPImageProcessorPil, SiglipImageProcessorPil): the
resize is Pillow's, a shortest-edge target keeps the aspect ratio with the long side truncated
to an integer, the crop offsets round down, and transparency is composited onto white.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ferrum.errors import CheckpointError, InvalidInputError

PREPROCESSOR_CONFIG = "preprocessor_config.json"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESCALE_FACTOR = 1 / 255  # uint8 pixel → [0, 1]
PIL_BICUBIC = 3  # PILImageResampling.BICUBIC, the CLIP/SigLIP default


@dataclass(frozen=True)
class ImagePreprocess:
    """What a model's image processor does, read from preprocessor_config.json."""

    resize_shortest_edge: int | None = 224  # pixels; None when resizing to a fixed size
    resize_to: tuple[int, int] | None = None  # (height, width) pixels, aspect ratio not kept
    resample: int = PIL_BICUBIC  # Pillow resampling filter id
    crop_to: tuple[int, int] | None = (224, 224)  # (height, width) center crop; None: no crop
    rescale_factor: float = RESCALE_FACTOR
    mean: tuple[float, ...] = OPENAI_CLIP_MEAN
    std: tuple[float, ...] = OPENAI_CLIP_STD

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImagePreprocess:
        size = d.get("size", {"shortest_edge": 224})
        if isinstance(size, int):
            size = (
                {"shortest_edge": size}
                if not d.get("default_to_square", True)
                else {
                    "height": size,
                    "width": size,
                }
            )
        shortest = size.get("shortest_edge")
        resize_to = (size["height"], size["width"]) if "height" in size else None
        crop = d.get("crop_size", {"height": 224, "width": 224})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        return cls(
            resize_shortest_edge=shortest if d.get("do_resize", True) else None,
            resize_to=resize_to if d.get("do_resize", True) else None,
            resample=int(d.get("resample", PIL_BICUBIC)),
            crop_to=(crop["height"], crop["width"]) if d.get("do_center_crop", False) else None,
            rescale_factor=d.get("rescale_factor", RESCALE_FACTOR)
            if d.get("do_rescale", True)
            else 1.0,
            mean=tuple(d.get("image_mean", OPENAI_CLIP_MEAN))
            if d.get("do_normalize", True)
            else (0.0, 0.0, 0.0),
            std=tuple(d.get("image_std", OPENAI_CLIP_STD))
            if d.get("do_normalize", True)
            else (1.0, 1.0, 1.0),
        )

    @classmethod
    def from_dir(cls, directory: Path) -> ImagePreprocess:
        path = directory / PREPROCESSOR_CONFIG
        if not path.exists():
            raise CheckpointError(f"{directory}: no {PREPROCESSOR_CONFIG} for image inputs")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable image preprocessing config ({e})") from e


def load_image(source: str | Path | Image.Image) -> Image.Image:
    """Open an image file fully (so a truncated file fails here) as RGB; clear errors."""
    if isinstance(source, Image.Image):
        return to_rgb(source)
    path = Path(source)
    if not path.exists():
        raise InvalidInputError(f"image file not found: {path}")
    if not path.is_file():
        raise InvalidInputError(f"not an image file: {path} is a directory or special file")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except UnidentifiedImageError as e:
        raise InvalidInputError(f"{path}: not an image format Pillow can read") from e
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data
        raise InvalidInputError(f"{path}: the image is truncated or corrupt ({e})") from e


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto a white background."""
    if "A" in img.getbands() or img.info.get("transparency") is not None:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def shortest_edge_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """(height, width) with the short side at `shortest`, the long side scaled and truncated."""
    if width <= height:
        return int(shortest * height / width), shortest
    return shortest, int(shortest * width / height)


def preprocess(img: Image.Image, cfg: ImagePreprocess) -> np.ndarray:
    """RGB image → (3, H, W) float32 normalized pixels."""
    if cfg.resize_to is not None:
        size = cfg.resize_to
    elif cfg.resize_shortest_edge is not None:
        size = shortest_edge_size(img.height, img.width, cfg.resize_shortest_edge)
    else:
        size = (img.height, img.width)
    if size != (img.height, img.width):
        img = img.resize((size[1], size[0]), resample=cfg.resample)
    pixels = np.asarray(img)  # (H, W, 3) uint8
    if cfg.crop_to is not None:
        pixels = center_crop(pixels, cfg.crop_to)
    scaled = (pixels.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    return ((scaled - mean) / std).transpose(2, 0, 1).copy()  # (3, H, W)


def center_crop(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) → (h, w, C) around the center, zero-padding an image smaller than the crop."""
    height, width = pixels.shape[:2]
    crop_h, crop_w = size
    if height < crop_h or width < crop_w:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        pixels = np.pad(
            pixels, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
        )
        height, width = pixels.shape[:2]
    top = (height - crop_h) // 2
    left = (width - crop_w) // 2
    return pixels[top : top + crop_h, left : left + crop_w]
