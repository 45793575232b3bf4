"""embed-rate (`ferrum bench --task embed`): items per second embedded by ferrum against
sentence-transformers' `encode` (text models) or transformers' CLIPModel / SiglipModel (image and
text models), on the same weights and inputs, in the same run.

Workload: `num_items` sentences of 5–120 words drawn with a fixed seed from plain words of the
model's own vocabulary (one token each for a WordPiece vocabulary, so ≈64 tokens mean); for an
image model also `num_items // IMAGES_PER_TEXT` random images. Each baseline row also reports
the worst cosine between its embeddings and ferrum's: the rates compare the same computation.
"""

from __future__ import annotations

import json
import random
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferrum.bench.modality import (
    ITEM_UNIT,
    EngineSpec,
    NotInstalled,
    Pass,
    PassOutput,
    Say,
    TaskResult,
    measure,
)
from ferrum.errors import InvalidInputError

TEXT_BASELINES = ("sentence-transformers",)
IMAGE_BASELINES = ("transformers",)
DEFAULT_ITEMS = 2000  # BENCH.md embed-rate: 2,000 sentences
MIN_WORDS, MAX_WORDS = 5, 120  # words per sentence
BASELINE_BATCH = 32  # sentence-transformers' default encode batch size
IMAGES_PER_TEXT = 8  # image models: one random image per this many sentences
IMAGE_SIZE = 256  # pixels a side of the random images (the processors resize them)
WORD_PATTERN = re.compile(r"^[a-z]{3,9}$")  # plain lowercase words: one WordPiece token each
MIN_VOCAB_WORDS = 20  # fewer plain words than this in a vocabulary: use FALLBACK_WORDS too
FALLBACK_WORDS = (  # common English nouns
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea"
)


@dataclass(frozen=True)
class EmbedOptions:
    model: str | None = None  # an embedding spec (None: the embedded all-MiniLM-L6-v2)
    device: str = "auto"
    dtype: str = "auto"
    num_items: int = DEFAULT_ITEMS  # sentences (and num_items // IMAGES_PER_TEXT images)
    seed: int = 0
    repeats: int = 3
    baselines: tuple[str, ...] | None = None  # None: every baseline of the model's kind


def vocabulary_words(folder: Path) -> list[str]:
    """Plain lowercase words of a checkpoint's vocabulary (vocab.txt or tokenizer.json)."""
    if (folder / "vocab.txt").exists():
        tokens = (folder / "vocab.txt").read_text().split("\n")
    elif (folder / "tokenizer.json").exists():
        vocab = json.loads((folder / "tokenizer.json").read_text())["model"].get("vocab", {})
        entries = vocab.keys() if isinstance(vocab, dict) else (v[0] for v in vocab)
        # byte-level BPE marks a word start with Ġ, SentencePiece with ▁, CLIP a word end </w>
        tokens = [t.removeprefix("Ġ").removeprefix("▁").removesuffix("</w>") for t in entries]
    else:
        tokens = []
    words = sorted({t for t in tokens if WORD_PATTERN.match(t)})
    return words if len(words) >= MIN_VOCAB_WORDS else sorted({*words, *FALLBACK_WORDS.split()})


def make_sentences(words: list[str], count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(MIN_WORDS, MAX_WORDS))) for _ in range(count)]


def random_images(count: int, seed: int) -> list[Any]:
    """RGB images: smooth colour fields (8x8 noise, upsampled) plus pixel noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = coarse.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        pixels = np.asarray(smooth, dtype=np.int16)  # (H, W, 3)
        noisy = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(noisy))
    return images


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The worst row-wise cosine of two (N, D) matrices."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return float(cos.min())


def run_embed(options: EmbedOptions, say: Say) -> TaskResult:
    from ferrum.text.embed import Embedder
    from ferrum.text.resolve import resolve_model

    if options.num_items < 1:
        raise InvalidInputError(f"--num-items must be at least 1, got {options.num_items}")
    resolved = resolve_model(options.model)
    say(f"loading ferrum's encoder for {resolved.name}")
    embedder = Embedder(str(resolved.path), device=options.device, dtype=options.dtype)
    precision = embedder.precision
    sentences = make_sentences(vocabulary_words(resolved.path), options.num_items, options.seed)
    images = (
        random_images(max(1, options.num_items // IMAGES_PER_TEXT), options.seed)
        if embedder.supports_images
        else []
    )
    known = IMAGE_BASELINES if embedder.supports_images else TEXT_BASELINES
    wanted = known if options.baselines is None else options.baselines
    unknown = [b for b in wanted if b not in known]
    if unknown:
        raise InvalidInputError(
            f"--baseline {', '.join(unknown)} does not run {resolved.name}; "
            f"its baselines: {', '.join(known)}"
        )
    outputs: dict[str, np.ndarray] = {}
    compute = str(precision.compute_dtype).removeprefix("torch.")
    weight = str(precision.weight_dtype).removeprefix("torch.")
    kinds: list[tuple[str, list[Any]]] = [("texts", sentences)]
    if images:
        kinds.append(("images", images))
    specs: list[EngineSpec] = []
    for kind, items in kinds:
        ours = f"ferrum {kind}" if images else "ferrum"
        specs.append(
            EngineSpec(
                ours, "ferrum", "ferrum", f"{compute} matmuls, packed batches",
                lambda stack, k=kind, i=items, o=ours: _ferrum_pass(embedder, k, i, outputs, o),
            )
        )  # fmt: skip
        for name in wanted:
            label = f"{name} {kind}" if images else name
            if name == "sentence-transformers":
                build = lambda stack, lb=label: _st_pass(resolved.path, precision, sentences,  # noqa: E731
                                                         outputs, lb)  # fmt: skip
                settings = f"{weight}, encode(batch_size={BASELINE_BATCH})"
            else:
                build = lambda stack, k=kind, i=items, lb=label: _hf_dual_pass(  # noqa: E731
                    resolved.path, precision, k, i, outputs, lb
                )
                settings = f"{weight}, get_{kind[:-1]}_features, batches of {BASELINE_BATCH}"
            specs.append(EngineSpec(label, name, name, settings, build, compare_to=ours))
    try:
        with ExitStack() as stack:
            rows = measure(specs, options.repeats, say, stack)
    finally:
        embedder.close()
    for row in rows:
        if row.compare_to is not None and row.ok:
            row.extra["min_cosine"] = min_cosine(outputs[row.compare_to], outputs[row.label])
    return TaskResult(
        task="embed",
        unit=ITEM_UNIT,
        model={
            "spec": options.model or "minilm",
            "name": resolved.name,
            "device": str(precision.device),
            "dtype": weight,
            "compute_dtype": compute,
        },
        workload={
            "name": "embed-rate",
            "sentences": len(sentences),
            "words_per_sentence": f"{MIN_WORDS}-{MAX_WORDS}",
            "images": len(images),
            "image_size": IMAGE_SIZE if images else None,
            "seed": options.seed,
            "repeats": options.repeats,
        },
        rows=rows,
    )


def _ferrum_pass(
    embedder: Any, kind: str, items: list[Any], outputs: dict[str, np.ndarray], label: str
) -> Pass:
    def run(warmup: bool) -> PassOutput:
        batch = items[: max(1, len(items) // 10)] if warmup else items
        result = embedder.embed(**{kind: batch})
        if not warmup:
            outputs[label] = result.embeddings
        extra = {"mean_tokens": result.total_tokens / len(batch)} if kind == "texts" else {}
        return PassOutput(len(batch), extra)

    return run


def _st_pass(
    folder: Path, precision: Any, sentences: list[str], outputs: dict[str, np.ndarray], label: str
) -> Pass:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise NotInstalled("pip install sentence-transformers") from e
    model = SentenceTransformer(str(folder), device=str(precision.device))
    model.to(precision.weight_dtype)

    def run(warmup: bool) -> PassOutput:
        batch = sentences[: max(1, len(sentences) // 10)] if warmup else sentences
        out = model.encode(batch, batch_size=BASELINE_BATCH, convert_to_numpy=False)
        matrix = np.stack([v.float().cpu().numpy() for v in out])
        if not warmup:
            outputs[label] = matrix
        return PassOutput(len(batch))

    return run


def _hf_dual_pass(
    folder: Path,
    precision: Any,
    kind: str,
    items: list[Any],
    outputs: dict[str, np.ndarray],
    label: str,
) -> Pass:
    import torch
    from transformers import AutoImageProcessor, AutoModel

    device, dtype = precision.device, precision.weight_dtype
    model = AutoModel.from_pretrained(folder, dtype=dtype).to(device).eval()
    siglip = model.config.model_type in ("siglip", "siglip2")
    if kind == "images":
        processor = AutoImageProcessor.from_pretrained(folder)
    else:
        tokenizer = _hf_tokenizer(folder, model.config.text_config.pad_token_id)
        max_len = model.config.text_config.max_position_embeddings

    def features(out: Any) -> torch.Tensor:
        # get_*_features: a tensor (transformers 4) or an output holding it (transformers 5)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.inference_mode()
    def embed(batch: list[Any]) -> torch.Tensor:
        if kind == "images":
            inputs = processor(images=batch, return_tensors="pt").to(device)
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            # SigLIP2 NaFlex also needs its patch mask and each image's patch grid
            return features(model.get_image_features(**inputs))
        # SigLIP was trained on texts padded to the full length; CLIP on unpadded ones;
        # SigLIP2 on lowercased ones
        padding = "max_length" if siglip else True
        if model.config.model_type == "siglip2":
            batch = [text.lower() for text in batch]
        enc = tokenizer(
            batch, padding=padding, truncation=True, max_length=max_len, return_tensors="pt"
        ).to(device)
        if siglip:
            return features(model.get_text_features(input_ids=enc["input_ids"]))
        return features(model.get_text_features(**enc))

    def run(warmup: bool) -> PassOutput:
        batch = items[: max(1, len(items) // 10)] if warmup else items
        parts = [
            embed(batch[at : at + BASELINE_BATCH]).float().cpu()
            for at in range(0, len(batch), BASELINE_BATCH)
        ]
        if not warmup:
            outputs[label] = torch.cat(parts).numpy()
        return PassOutput(len(batch))

    return run


def _hf_tokenizer(folder: Path, pad_id: int | None) -> Any:
    """The checkpoint's own tokenizer class, or its bare tokenizer.json when the folder has no
    tokenizer config (as ferrum reads it)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (ValueError, OSError):
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
        if pad_id is not None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad_id)
        return tokenizer
