"""Split text into sentences for engines that read text, not phonemes (Qwen3-TTS).

Piper voices get their sentences from espeak-ng's clauses (ferrum/audio/phonemize.py); a
Qwen3-TTS model reads the text itself, in any of its languages, so its sentences are cut here: after
a run of sentence-ending punctuation (. ! ? …) that whitespace or the end follows (so "3.5" and
"example.com" stay whole), right after CJK full stops (。！？, which no space follows), and at blank
lines (a title or list item without punctuation). Closing quotes and brackets stay with their
sentence, and whitespace inside a sentence is collapsed to single spaces.
"""

from __future__ import annotations

import re

_CLOSERS = "\"'”’»)\\]」』）"  # characters that may follow the punctuation inside the sentence
_SENTENCE = re.compile(
    rf".*?(?:[.!?…]+[{_CLOSERS}]*(?=\s|$)|[。！？]+[{_CLOSERS}]*|\n[^\S\n]*\n|$)", re.DOTALL
)


def split_sentences(text: str) -> list[str]:
    """The sentences of `text` in order, each stripped and non-empty (none for blank text)."""
    sentences = (" ".join(m.group(0).split()) for m in _SENTENCE.finditer(text))
    return [s for s in sentences if s]
