"""Word timestamps: where in the audio each word was said, from the decoder's cross-attention.

Design note: a few (layer, head) pairs of Whisper's cross-attention follow the audio position of
the token being read (the checkpoint's "alignment heads"). Running the decoder once over a
window's final tokens gives, per token, a distribution over the 1500 encoder frames (20 ms each).
Those maps are normalized per frame, median-filtered, averaged over heads, and a monotonic path
through them (dynamic time warping) assigns each token a time; a word spans its tokens' times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ferrum.audio.checkpoint import WhisperCheckpoint
from ferrum.audio.io import SAMPLE_RATE
from ferrum.audio.mel import HOP_LENGTH

TOKENS_PER_SECOND = SAMPLE_RATE / HOP_LENGTH / 2  # encoder frames a second (50: 20 ms each)
MEDIAN_FILTER_WIDTH = 7  # frames smoothed over in each attention map
PREPEND_PUNCTUATION = "\"'“¿([{-"  # glued to the word that follows
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"  # glued to the word before


@dataclass(frozen=True)
class WordTiming:
    """One word and when it was said, relative to its window."""

    word: str  # the word's text, with its leading space
    tokens: tuple[int, ...]  # its tokens
    start: float  # seconds
    end: float  # seconds
    probability: float  # mean probability of its tokens


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window of the last dimension (reflect-padded)."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    flat = x.reshape(-1, 1, x.shape[-1])  # reflect padding wants (N, C, L)
    padded = F.pad(flat, (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(x.shape)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through `cost` (tokens, frames): (token, frame) indices."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    total[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c0, c1, c2 = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
            if c0 <= c1 and c0 <= c2:
                best, step = c0, 0
            elif c1 <= c2:
                best, step = c1, 1
            else:
                best, step = c2, 2
            total[i, j] = cost[i - 1, j - 1] + best
            trace[i, j] = step
    i, j = n, m
    path: list[tuple[int, int]] = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j] if i > 0 and j > 0 else (1 if i > 0 else 2)
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    indices = np.array(path)
    return indices[:, 0], indices[:, 1]


@torch.inference_mode()
def align_words(
    checkpoint: WhisperCheckpoint,
    mel: Tensor,
    sot_sequence: list[int],
    text_tokens: list[int],
    num_frames: int,
) -> list[WordTiming]:
    """Time every word of `text_tokens` within the window `mel` (n_mels, 3000), of which the
    first `num_frames` mel frames are audio."""
    if not text_tokens or not checkpoint.hints.alignment_heads:
        return []
    model, tokenizer = checkpoint.model, checkpoint.tokenizer
    special = tokenizer.special
    tokens = [*sot_sequence, special.no_timestamps, *text_tokens, special.eot]
    features = model.encoder(mel[None].to(next(model.parameters()).dtype))
    cache = model.decoder.new_cache(features)
    logits, qks = model.decoder(torch.tensor([tokens], device=mel.device), cache, return_qk=True)
    probs = logits[0, len(sot_sequence) :, : special.eot].float().softmax(dim=-1)
    token_probs = probs[torch.arange(len(text_tokens)), torch.tensor(text_tokens)].tolist()
    weights = torch.stack([qks[layer][0, head] for layer, head in checkpoint.hints.alignment_heads])
    weights = weights[:, :, : num_frames // 2].float().softmax(dim=-1)  # (heads, T, frames)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
    weights = median_filter((weights - mean) / std, MEDIAN_FILTER_WIDTH)
    matrix = weights.mean(dim=0)[len(sot_sequence) : -1]  # (text + 1, frames)
    text_indices, time_indices = dtw(-matrix.double().cpu().numpy())
    words, word_tokens = tokenizer.split_to_word_tokens([*text_tokens, special.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    starts, ends = jump_times[boundaries[:-1]], jump_times[boundaries[1:]]
    timings = []
    for k, (word, toks) in enumerate(zip(words[:-1], word_tokens[:-1], strict=True)):
        lo, hi = boundaries[k], boundaries[k + 1]
        probability = float(np.mean(token_probs[lo:hi]))
        timings.append(WordTiming(word, tuple(toks), float(starts[k]), float(ends[k]), probability))
    return merge_punctuation(timings)


def merge_punctuation(words: list[WordTiming]) -> list[WordTiming]:
    """Attach opening punctuation to the next word and closing punctuation to the previous."""
    merged: list[WordTiming] = []
    carry: WordTiming | None = None
    for word in words:
        stripped = word.word.strip()
        if stripped and stripped in PREPEND_PUNCTUATION and len(stripped) == 1:
            carry = word if carry is None else _join(carry, word)
            continue
        if carry is not None:
            word = _join(carry, word, keep_time_of_second=True)
            carry = None
        if (
            merged
            and stripped
            and all(ch in APPEND_PUNCTUATION for ch in stripped)
            and not word.word.startswith(" ")
        ):
            merged[-1] = _join(merged[-1], word, keep_time_of_second=False)
            continue
        merged.append(word)
    if carry is not None:
        merged.append(carry)
    return merged


def _join(first: WordTiming, second: WordTiming, keep_time_of_second: bool = True) -> WordTiming:
    n1, n2 = len(first.tokens), len(second.tokens)
    probability = (first.probability * n1 + second.probability * n2) / max(n1 + n2, 1)
    start, end = (second.start, second.end) if keep_time_of_second else (first.start, first.end)
    return WordTiming(
        first.word + second.word, first.tokens + second.tokens, start, end, probability
    )
