"""Images → SigLIP2 NaFlex patches: aspect ratio kept, patch count capped, flattened patches.

Follows transformers' Siglip2ImageProcessorPil step by step: the image is resized (Pillow) to
the largest size whose sides are multiples of the patch size and whose patch count fits
`max_num_patches` (found by the same bisection over the scale, so sizes agree to the pixel), then
rescaled, normalized and cut into patches, each flattened row by row with channels last
(patch_size * patch_size * channels values). Padding to a batch is left to the model runner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ferrum.errors import CheckpointError, InvalidInputError
from ferrum.vision.image import PREPROCESSOR_CONFIG, RESCALE_FACTOR, ImagePreprocess, preprocess

PIL_BILINEAR = 2  # PILImageResampling.BILINEAR, the SigLIP2 default
SIGLIP2_MEAN = (0.5, 0.5, 0.5)
SIGLIP2_STD = (0.5, 0.5, 0.5)
DEFAULT_PATCH_SIZE = 16  # pixels
DEFAULT_MAX_NUM_PATCHES = 256
SCALE_SEARCH_EPS = 1e-5  # bisection stops when the scale interval is this narrow
SCALE_SEARCH_MAX = 100.0  # largest scale tried (upscaling a tiny image)


@dataclass(frozen=True)
class NaflexPreprocess:
    """What a NaFlex checkpoint's image processor does, read from preprocessor_config.json."""

    patch_size: int = DEFAULT_PATCH_SIZE  # pixels per patch side
    max_num_patches: int = DEFAULT_MAX_NUM_PATCHES  # patches per image at most
    resize: bool = True
    resample: int = PIL_BILINEAR  # Pillow resampling filter id
    rescale_factor: float = RESCALE_FACTOR  # 1.0 when rescaling is off
    mean: tuple[float, ...] = SIGLIP2_MEAN
    std: tuple[float, ...] = SIGLIP2_STD

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NaflexPreprocess:
        normalize = d.get("do_normalize", True)
        return cls(
            patch_size=int(d.get("patch_size", DEFAULT_PATCH_SIZE)),
            max_num_patches=int(d.get("max_num_patches", DEFAULT_MAX_NUM_PATCHES)),
            resize=bool(d.get("do_resize", True)),
            resample=int(d.get("resample", PIL_BILINEAR)),
            rescale_factor=d.get("rescale_factor", RESCALE_FACTOR)
            if d.get("do_rescale", True)
            else 1.0,
            mean=tuple(d.get("image_mean", SIGLIP2_MEAN)) if normalize else (0.0, 0.0, 0.0),
            std=tuple(d.get("image_std", SIGLIP2_STD)) if normalize else (1.0, 1.0, 1.0),
        )

    @classmethod
    def from_dir(cls, directory: Path, patch_size: int) -> NaflexPreprocess:
        """The checkpoint's settings; its patch size must be the vision tower's `patch_size`."""
        path = directory / PREPROCESSOR_CONFIG
        if not path.exists():
            raise CheckpointError(f"{directory}: no {PREPROCESSOR_CONFIG} for image inputs")
        try:
            cfg = cls.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable image preprocessing config ({e})") from e
        if cfg.patch_size != patch_size:
            raise CheckpointError(
                f"{path}: patch_size {cfg.patch_size} differs from the model's {patch_size}"
            )
        return cfg


@dataclass(frozen=True)
class NaflexPatches:
    """One image as the NaFlex vision tower reads it."""

    patches: np.ndarray  # (h * w, patch_size * patch_size * 3) float32, row-major over the grid
    grid: tuple[int, int]  # (h, w) patches

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]


def target_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """(height, width) in pixels: multiples of `patch_size`, at least one patch each, scaled from
    the image by the largest factor (to bisection precision) whose patch count fits."""

    def scaled(size: int, scale: float) -> int:
        return max(patch_size, math.ceil(size * scale / patch_size) * patch_size)

    low, high = SCALE_SEARCH_EPS / 10, SCALE_SEARCH_MAX
    while high - low >= SCALE_SEARCH_EPS:
        mid = (low + high) / 2
        patches = (scaled(height, mid) / patch_size) * (scaled(width, mid) / patch_size)
        if patches <= max_num_patches:
            low = mid
        else:
            high = mid
    return scaled(height, low), scaled(width, low)


def naflex_patches(img: Image.Image, cfg: NaflexPreprocess) -> NaflexPatches:
    """RGB image → normalized, flattened patches on the image's own (h, w) patch grid."""
    p = cfg.patch_size
    size = (img.height, img.width)
    if cfg.resize:
        size = target_size(img.height, img.width, p, cfg.max_num_patches)
    steps = ImagePreprocess(
        resize_shortest_edge=None,
        resize_to=size,
        resample=cfg.resample,
        crop_to=None,
        rescale_factor=cfg.rescale_factor,
        mean=cfg.mean,
        std=cfg.std,
    )
    pixels = preprocess(img, steps)  # (C, H, W) float32
    c, height, width = pixels.shape
    h, w = height // p, width // p
    if h == 0 or w == 0:  # only with resizing turned off in the checkpoint's config
        raise InvalidInputError(f"image of {width}x{height} pixels is smaller than one patch ({p})")
    grid = pixels[:, : h * p, : w * p].reshape(c, h, p, w, p)
    patches = grid.transpose(1, 3, 2, 4, 0).reshape(h * w, p * p * c)  # (h*w, p*p*C)
    return NaflexPatches(np.ascontiguousarray(patches), (h, w))
