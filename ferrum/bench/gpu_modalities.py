"""Transcription and embeddings on one GPU: ferrum against transformers on the same random weights.

    python -m ferrum.bench.gpu_modalities --out DIR [--tiny] [--skip whisper,bert,clip]

Each model is a real architecture with random weights, built by transformers from a config written
here, saved as safetensors with a stand-in tokenizer (no downloads: nothing is reachable from the
GPU machine), and loaded by ferrum through its ordinary loaders. Both engines then run the same
workload end to end, from raw inputs to outputs, in the same dtype (bf16 on CUDA):

1. whisper: large-v3-turbo (32 encoder / 4 decoder layers, d_model 1280, 128 mel bins, vocab
   51866). N_WINDOWS synthetic 30-s windows (noise-modulated harmonic tones), greedy, exactly
   NEW_TOKENS tokens each (end-of-text suppressed: random weights never stop sensibly), no
   timestamps. ferrum: log-mel on the device + `ferrum.audio.decoding.decode`; transformers:
   `WhisperFeatureExtractor` (on the device) + `generate` (sdpa, min = max new tokens).
2. bert: a BGE-large-size BERT (24 layers, hidden 1024). N_SENTENCES sentences of 5-120 words
   (one token per word). ferrum: `Embedder.embed` (packed, unpadded batches); transformers:
   `BertModel` + mean pooling, batches of HF_BATCH padded sentences sorted by length (as
   sentence-transformers sorts them).
3. clip: CLIP ViT-L/14. N_IMAGES random 224x224 images and N_CAPTIONS captions. ferrum:
   `Embedder.embed`; transformers: `CLIPImageProcessor` + `get_image_features`, and
   `get_text_features`, batches of HF_BATCH.

Figures are medians of `--repeats` timed runs after one warm-up. Embedding outputs are compared
row by row (cosine; >= MIN_COSINE passes); Whisper tokens are compared for information only
(greedy argmax over random weights flips on near-ties). A table is printed last; every figure
goes to DIR/gpu_modalities.json. `--tiny` shrinks every model and count so the whole run takes
well under a minute on a CPU (the test runs it that way).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ferrum.audio.io import SAMPLE_RATE
from ferrum.bench.environment import describe

T = TypeVar("T")
log = logging.getLogger("ferrum.bench")

MIN_COSINE = 0.99  # embeddings of the two engines must agree at least this well, every row
HF_BATCH = 64  # transformers' batch size for embeddings
ATTENTION = "sdpa"  # transformers' attention implementation (PyTorch's fused attention)
WINDOW_S = 30  # seconds of audio in one Whisper window
WHISPER_PROMPT_TOKENS = 4  # <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>

# --- model configs (transformers' names) ------------------------------------------------------

WHISPER_TURBO: dict[str, Any] = {  # openai/whisper-large-v3-turbo
    "vocab_size": 51866,
    "num_mel_bins": 128,
    "d_model": 1280,
    "encoder_layers": 32,
    "decoder_layers": 4,
    "encoder_attention_heads": 20,
    "decoder_attention_heads": 20,
    "encoder_ffn_dim": 5120,
    "decoder_ffn_dim": 5120,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}
WHISPER_TINY = {
    **WHISPER_TURBO,
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 256,
    "decoder_ffn_dim": 256,
}
BERT_LARGE: dict[str, Any] = {  # BAAI/bge-large-en-v1.5
    "vocab_size": 30522,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 512,
}
BERT_TINY = {
    **BERT_LARGE,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
}
CLIP_L14: dict[str, Any] = {  # openai/clip-vit-large-patch14
    "projection_dim": 768,
    "text_config": {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 1,
    },
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
    },
}
CLIP_TINY: dict[str, Any] = {
    "projection_dim": 32,
    "text_config": {
        **CLIP_L14["text_config"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
    "vision_config": {
        **CLIP_L14["vision_config"],
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    },
}
CLIP_PREPROCESSOR = {  # openai/clip-vit-large-patch14's preprocessor_config.json
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

# Whisper's multilingual vocabulary layout (large-v3: 100 languages)
W_EOT, W_SOT, W_N_LANGUAGES = 50257, 50258, 100
W_TRANSLATE = W_SOT + W_N_LANGUAGES + 1  # 50359
W_TRANSCRIBE, W_SOT_LM, W_SOT_PREV = W_TRANSLATE + 1, W_TRANSLATE + 2, W_TRANSLATE + 3
W_NO_SPEECH, W_NO_TIMESTAMPS = W_TRANSLATE + 4, W_TRANSLATE + 5  # 50363, 50364
W_SUPPRESS = list(range(1, 89))  # stand-in for the 88 non-speech symbol tokens turbo suppresses
W_SPACE = 220  # " " in the real vocabulary: never the first token
BERT_PAD, BERT_UNK, BERT_CLS, BERT_SEP, BERT_FIRST_WORD = 0, 100, 101, 102, 1000
CLIP_SOT, CLIP_EOT, CLIP_PAD, CLIP_FIRST_WORD = 49406, 49407, 1, 256


@dataclass(frozen=True)
class Sizes:
    """How much work each workload does."""

    windows: int  # Whisper: 30-s windows in the batch
    new_tokens: int  # Whisper: tokens decoded per window
    sentences: int  # BERT: sentences
    min_words: int
    max_words: int
    images: int  # CLIP: images
    captions: int  # CLIP: captions
    caption_words: tuple[int, int]  # CLIP: (min, max) words per caption
    repeats: int  # timed runs per figure (median), after one warm-up


FULL = Sizes(16, 64, 2000, 5, 120, 512, 2000, (5, 60), 3)
TINY = Sizes(2, 8, 48, 5, 40, 8, 32, (3, 20), 2)


@dataclass
class Figure:
    """One workload's result."""

    workload: str
    unit: str  # what the figures count per second
    ferrum: float  # units per wall second, median
    baseline: float  # transformers, units per wall second, median
    ratio: float  # ferrum / baseline
    ferrum_s: float  # median wall seconds of one run
    baseline_s: float
    check: str  # agreement of the outputs, in words
    passed: bool  # the agreement check passed (always True for information-only checks)
    extra: dict[str, Any] = field(default_factory=dict)


# --- shared helpers ---------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], T], repeats: int, device: torch.device) -> tuple[float, T]:
    """(median wall seconds of `repeats` runs after one warm-up, the last output)."""
    out = fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def word_tokenizer(vocab: dict[str, int], unk: str, template: tuple[str, str] | None) -> Any:
    """A whitespace word-level tokenizer.json (one token per word), wrapped as `template` says."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if template is not None:
        first, last = template
        tok.post_processor = processors.TemplateProcessing(
            single=f"{first} $A {last}", special_tokens=[(first, vocab[first]), (last, vocab[last])]
        )
    return tok


def random_texts(
    rng: np.random.Generator, count: int, words: tuple[int, int], ids: tuple[int, int], prefix: str
) -> list[str]:
    """`count` texts of uniformly drawn lengths in `words`, of vocabulary words `prefix`{id}."""
    lengths = rng.integers(words[0], words[1] + 1, size=count)
    return [" ".join(f"{prefix}{i}" for i in rng.integers(*ids, size=n)) for n in lengths]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) matrices."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def cosine_figure(
    name: str, unit: str, count: int, times: tuple[float, float], sims: np.ndarray
) -> Figure:
    ours, theirs = count / times[0], count / times[1]
    worst = float(sims.min())
    return Figure(
        name, unit, ours, theirs, ours / theirs, times[0], times[1],
        f"min cosine {worst:.4f} (mean {float(sims.mean()):.4f}), need >= {MIN_COSINE}",
        worst >= MIN_COSINE,
    )  # fmt: skip


# --- 1. Whisper -------------------------------------------------------------------------------


def whisper_tokenizer_json(path: Path) -> None:
    """Whisper's multilingual special-token layout over placeholder text tokens."""
    vocab = {f"t{i}": i for i in range(W_EOT)}
    vocab["<|endoftext|>"], vocab["<|startoftranscript|>"] = W_EOT, W_SOT
    vocab["<|en|>"] = W_SOT + 1
    vocab |= {f"<|x{i}|>": W_SOT + 1 + i for i in range(1, W_N_LANGUAGES)}
    names = ["translate", "transcribe", "startoflm", "startofprev", "nospeech", "notimestamps"]
    vocab |= {f"<|{n}|>": W_TRANSLATE + i for i, n in enumerate(names)}
    vocab |= {f"<|{i * 0.02:.2f}|>": W_NO_TIMESTAMPS + 1 + i for i in range(1501)}
    word_tokenizer(vocab, "t0", None).save(str(path))


def synthetic_speech(rng: np.random.Generator, windows: int) -> list[np.ndarray]:
    """30-s windows of harmonic tones (a wandering 90-250 Hz pitch) under a syllable-rate (~4 Hz)
    envelope, plus a little noise: spectrally speech-like, so the mel has structure."""
    t = np.arange(WINDOW_S * SAMPLE_RATE) / SAMPLE_RATE
    out = []
    for _ in range(windows):
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 9))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t), 0, None) ** 2
        audio = 0.1 * envelope * voice + 0.005 * rng.standard_normal(t.size)
        out.append(audio.astype(np.float32))
    return out


def whisper_checkpoint(cfg: dict[str, Any], folder: Path, device: torch.device, dtype: torch.dtype):
    """A random-init transformers Whisper saved to `folder` with its tokenizer; returns it."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(
        **cfg,
        decoder_start_token_id=W_SOT,
        bos_token_id=W_EOT,
        eos_token_id=W_EOT,
        pad_token_id=W_EOT,
        attn_implementation=ATTENTION,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = WhisperForConditionalGeneration(config).to(dtype)
    gen = model.generation_config
    gen.decoder_start_token_id = W_SOT
    gen.eos_token_id = W_EOT
    gen.pad_token_id = W_EOT
    gen.suppress_tokens = W_SUPPRESS
    gen.begin_suppress_tokens = [W_SPACE, W_EOT]
    gen.is_multilingual = True
    gen.lang_to_id = {"<|en|>": W_SOT + 1}
    gen.task_to_id = {"translate": W_TRANSLATE, "transcribe": W_TRANSCRIBE}
    gen.no_timestamps_token_id = W_NO_TIMESTAMPS
    gen.max_initial_timestamp_index = 50
    gen.max_length = cfg["max_target_positions"]
    gen.forced_decoder_ids = None
    model.config.forced_decoder_ids = None
    model.save_pretrained(folder)
    whisper_tokenizer_json(folder / "tokenizer.json")
    return model.eval()


def bench_whisper(sizes: Sizes, cfg: dict, device: torch.device, dtype: torch.dtype) -> Figure:
    from transformers import WhisperFeatureExtractor

    from ferrum.audio.checkpoint import load_whisper
    from ferrum.audio.decoding import DecodingOptions, decode
    from ferrum.audio.mel import log_mel_spectrogram
    from ferrum.device import Backend

    audio = synthetic_speech(np.random.default_rng(0), sizes.windows)
    n_new = sizes.new_tokens
    with tempfile.TemporaryDirectory() as tmp:
        hf = whisper_checkpoint(cfg, Path(tmp), device, dtype)
        ours = load_whisper(tmp, Backend.resolve(str(device), dtype_name(dtype)))
    n_mels = ours.model.dims.n_mels
    options = DecodingOptions(
        language="en",
        without_timestamps=True,
        sample_len=n_new,
        suppress_tokens=(-1, W_EOT),  # fixed length: end-of-text never wins
    )
    batch = np.stack(audio)  # (N, 480000)

    def run_ferrum() -> list[tuple[int, ...]]:
        samples = torch.from_numpy(batch).to(device, non_blocking=True)
        mel = log_mel_spectrogram(samples, n_mels)  # (N, n_mels, 3000)
        return [r.tokens for r in decode(ours, mel, options)]

    extractor = WhisperFeatureExtractor(feature_size=n_mels)

    @torch.inference_mode()
    def run_hf() -> list[list[int]]:
        features = extractor(
            audio, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=str(device)
        ).input_features.to(device, dtype)  # (N, n_mels, 3000)
        out = hf.generate(
            input_features=features,
            language="en",
            task="transcribe",
            return_timestamps=False,
            min_new_tokens=n_new,
            max_new_tokens=n_new,
            do_sample=False,
            num_beams=1,
        )
        seqs = out if isinstance(out, torch.Tensor) else out["sequences"]
        return [_strip_prompt(row) for row in seqs.tolist()]

    t_ours, tokens_ours = timed(run_ferrum, sizes.repeats, device)
    t_hf, tokens_hf = timed(run_hf, sizes.repeats, device)
    seconds = sizes.windows * WINDOW_S
    lengths = sorted({len(t) for t in tokens_ours} | {len(t) for t in tokens_hf})
    agree = [_common_prefix(a, b) for a, b in zip(tokens_ours, tokens_hf, strict=True)]
    check = (
        f"tokens per window {lengths} (want [{n_new}]); first divergence at token "
        f"{statistics.mean(agree):.1f} on average (information only)"
    )
    ours_rate, hf_rate = seconds / t_ours, seconds / t_hf
    return Figure(
        "whisper large-v3-turbo arch", "audio s", ours_rate, hf_rate, ours_rate / hf_rate,
        t_ours, t_hf, check, lengths == [n_new],
        {"windows": sizes.windows, "new_tokens": n_new,
         "ferrum_tok_s": sizes.windows * n_new / t_ours,
         "baseline_tok_s": sizes.windows * n_new / t_hf},
    )  # fmt: skip


def _strip_prompt(row: list[int]) -> list[int]:
    """transformers' generated tokens without the 4-token prompt (<|startoftranscript|> <|en|>
    <|transcribe|> <|notimestamps|>; some versions return it, others not) or trailing EOT."""
    if row[:1] == [W_SOT]:
        row = row[WHISPER_PROMPT_TOKENS:]
    while row and row[-1] == W_EOT:
        row = row[:-1]
    return row


def _common_prefix(a: tuple[int, ...] | list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# --- 2. BERT sentence embeddings ---------------------------------------------------------------


def bert_checkpoint(cfg: dict[str, Any], folder: Path, device: torch.device, dtype: torch.dtype):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    with torch.device(device):
        model = BertModel(
            BertConfig(**cfg, attn_implementation=ATTENTION), add_pooling_layer=False
        ).to(dtype)
    model.save_pretrained(folder)
    vocab = {f"w{i}": i for i in range(cfg["vocab_size"])}
    names = {BERT_PAD: "[PAD]", BERT_UNK: "[UNK]", BERT_CLS: "[CLS]", BERT_SEP: "[SEP]"}
    vocab = {names.get(i, w): i for w, i in vocab.items()}
    tok = word_tokenizer(vocab, "[UNK]", ("[CLS]", "[SEP]"))
    tok.save(str(folder / "tokenizer.json"))
    return model.eval(), tok


def bench_bert(sizes: Sizes, cfg: dict, device: torch.device, dtype: torch.dtype) -> Figure:
    from ferrum.text.embed import Embedder

    rng = np.random.default_rng(1)
    texts = random_texts(
        rng,
        sizes.sentences,
        (sizes.min_words, sizes.max_words),
        (BERT_FIRST_WORD, cfg["vocab_size"]),
        "w",
    )
    with tempfile.TemporaryDirectory() as tmp:
        hf, tok = bert_checkpoint(cfg, Path(tmp), device, dtype)
        embedder = Embedder(tmp, device=str(device), dtype=dtype_name(dtype))
    tok.enable_padding(pad_id=BERT_PAD)

    def run_ferrum() -> np.ndarray:
        return embedder.embed(texts=texts, normalize=False).embeddings

    @torch.inference_mode()
    def run_hf() -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), hf.config.hidden_size), dtype=np.float32)
        for at in range(0, len(order), HF_BATCH):
            rows = order[at : at + HF_BATCH]
            enc = tok.encode_batch([texts[i] for i in rows])
            ids = torch.tensor([e.ids for e in enc], device=device)  # (B, T)
            mask = torch.tensor([e.attention_mask for e in enc], device=device)  # (B, T)
            hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask[..., None].float()
            out[rows] = ((hidden * m).sum(1) / m.sum(1)).cpu().numpy()  # mean pooling
        return out

    try:
        t_ours, ours = timed(run_ferrum, sizes.repeats, device)
    finally:
        embedder.close()
    t_hf, theirs = timed(run_hf, sizes.repeats, device)
    figure = cosine_figure(
        "bert bge-large arch", "sentences", len(texts), (t_ours, t_hf), cosines(ours, theirs)
    )
    tokens = sum(len(t.split()) + 2 for t in texts)
    figure.extra = {"sentences": len(texts), "mean_tokens": tokens / len(texts)}
    return figure


# --- 3. CLIP image and text embeddings ---------------------------------------------------------


def clip_checkpoint(cfg: dict[str, Any], folder: Path, device: torch.device, dtype: torch.dtype):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=cfg["text_config"],
        vision_config=cfg["vision_config"],
        projection_dim=cfg["projection_dim"],
        attn_implementation=ATTENTION,
    )
    with torch.device(device):
        model = CLIPModel(config).to(dtype)
    model.save_pretrained(folder)
    size = cfg["text_config"]["vocab_size"]
    vocab = {f"c{i}": i for i in range(size)}
    vocab = {
        {CLIP_SOT: "<|startoftext|>", CLIP_EOT: "<|endoftext|>"}.get(i, w): i
        for w, i in vocab.items()
    }
    tok = word_tokenizer(vocab, "c0", ("<|startoftext|>", "<|endoftext|>"))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    return model.eval(), tok


def random_images(rng: np.random.Generator, count: int) -> list[Any]:
    """224x224 RGB images: smooth colour fields (8x8 noise, upsampled) plus pixel noise."""
    from PIL import Image

    images = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((224, 224), Image.Resampling.BILINEAR), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(noisy))
    return images


def _features(out: Any) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output holds
    the projected features (transformers 5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def bench_clip(
    sizes: Sizes, cfg: dict, device: torch.device, dtype: torch.dtype
) -> tuple[Figure, Figure]:
    from transformers import CLIPImageProcessor

    from ferrum.text.embed import Embedder

    rng = np.random.default_rng(2)
    images = random_images(rng, sizes.images)
    vocab_end = cfg["text_config"]["vocab_size"] - 2  # below the two special tokens
    captions = random_texts(
        rng, sizes.captions, sizes.caption_words, (CLIP_FIRST_WORD, vocab_end), "c"
    )
    with tempfile.TemporaryDirectory() as tmp:
        hf, tok = clip_checkpoint(cfg, Path(tmp), device, dtype)
        embedder = Embedder(tmp, device=str(device), dtype=dtype_name(dtype))
    processor = CLIPImageProcessor(**CLIP_PREPROCESSOR)
    max_len = cfg["text_config"]["max_position_embeddings"]
    tok.enable_truncation(max_len)
    tok.enable_padding(pad_id=CLIP_PAD)

    @torch.inference_mode()
    def hf_images() -> np.ndarray:
        parts = []
        for at in range(0, len(images), HF_BATCH):
            pixels = processor(images=images[at : at + HF_BATCH], return_tensors="pt")
            pixels = pixels["pixel_values"].to(device, dtype)  # (B, 3, 224, 224)
            parts.append(_features(hf.get_image_features(pixel_values=pixels)).float().cpu())
        return torch.cat(parts).numpy()

    @torch.inference_mode()
    def hf_texts() -> np.ndarray:
        order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
        out = np.empty((len(captions), cfg["projection_dim"]), dtype=np.float32)
        for at in range(0, len(order), HF_BATCH):
            rows = order[at : at + HF_BATCH]
            enc = tok.encode_batch([captions[i] for i in rows])
            ids = torch.tensor([e.ids for e in enc], device=device)  # (B, T)
            mask = torch.tensor([e.attention_mask for e in enc], device=device)  # (B, T)
            feats = hf.get_text_features(input_ids=ids, attention_mask=mask)
            out[rows] = _features(feats).float().cpu().numpy()
        return out

    try:
        t_img, img_ours = timed(
            lambda: embedder.embed(images=images, normalize=False).embeddings,
            sizes.repeats,
            device,
        )
        t_txt, txt_ours = timed(
            lambda: embedder.embed(texts=captions, normalize=False).embeddings,
            sizes.repeats,
            device,
        )
    finally:
        embedder.close()
    t_img_hf, img_hf = timed(hf_images, sizes.repeats, device)
    t_txt_hf, txt_hf = timed(hf_texts, sizes.repeats, device)
    image_fig = cosine_figure(
        "clip vit-l/14 images", "images", len(images), (t_img, t_img_hf), cosines(img_ours, img_hf)
    )
    text_fig = cosine_figure(
        "clip vit-l/14 texts", "captions", len(captions), (t_txt, t_txt_hf),
        cosines(txt_ours, txt_hf),
    )  # fmt: skip
    return image_fig, text_fig


# --- driver -----------------------------------------------------------------------------------


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def release(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def table(figures: list[Figure], env: dict[str, Any], dtype: torch.dtype, tiny: bool) -> str:
    lines = [
        f"card: {env['machine']}",
        f"versions: torch {env['torch']}, transformers {env['transformers']}, "
        f"python {env['python']}; dtype {dtype_name(dtype)}" + ("; TINY sizes" if tiny else ""),
        f"{'workload':<30} {'unit/s':<10} {'ferrum':>10} {'transformers':>13} {'ratio':>7}  check",
    ]
    for f in figures:
        mark = "ok" if f.passed else "FAIL"
        lines.append(
            f"{f.workload:<30} {f.unit:<10} {f.ferrum:>10.1f} {f.baseline:>13.1f} "
            f"{f.ratio:>6.2f}x  {mark}: {f.check}"
        )
        if "ferrum_tok_s" in f.extra:
            lines.append(
                f"{'  (decoder tokens)':<30} {'tokens':<10} {f.extra['ferrum_tok_s']:>10.1f} "
                f"{f.extra['baseline_tok_s']:>13.1f} {f.ratio:>6.2f}x"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the JSON")
    parser.add_argument("--tiny", action="store_true", help="tiny models and counts (CPU test)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, else float32")
    parser.add_argument("--skip", default="", help="comma-separated: whisper, bert, clip")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per figure")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # generate() repeats the same length warnings every call
    device = torch.device(args.device)
    dtype_arg = args.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_arg)
    sizes = TINY if args.tiny else FULL
    if args.repeats:
        sizes = Sizes(**{**asdict(sizes), "repeats": args.repeats})
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    env = describe().as_dict()
    figures: list[Figure] = []
    started = time.perf_counter()
    if "whisper" not in skip:
        log.info("whisper ...")
        cfg = WHISPER_TINY if args.tiny else WHISPER_TURBO
        figures.append(bench_whisper(sizes, cfg, device, dtype))
        release(device)
    if "bert" not in skip:
        log.info("bert ...")
        figures.append(bench_bert(sizes, BERT_TINY if args.tiny else BERT_LARGE, device, dtype))
        release(device)
    if "clip" not in skip:
        log.info("clip ...")
        figures.extend(bench_clip(sizes, CLIP_TINY if args.tiny else CLIP_L14, device, dtype))
        release(device)
    report = {
        "environment": env,
        "dtype": dtype_name(dtype),
        "tiny": args.tiny,
        "sizes": asdict(sizes),
        "wall_s": time.perf_counter() - started,
        "figures": [asdict(f) for f in figures],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_modalities.json").write_text(json.dumps(report, indent=2))
    print(table(figures, env, dtype, args.tiny), flush=True)
    return 0 if all(f.passed for f in figures) else 1


if __name__ == "__main__":
    raise SystemExit(main())
