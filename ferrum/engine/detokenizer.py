"""Incremental detokenization with stop strings.

Text is decoded over a short sliding window of tokens (the approach of vLLM and TGI): decoding
ids[prefix:] against ids[prefix:read] gives the text the newest tokens added, and a window that
still ends in U+FFFD (half of a multi-byte character) is held until the next token completes it.
Stop strings are searched in the new text plus the tail that could begin one; while streaming,
text that might still turn into a stop string is held back, so a stop string never leaks.
"""

from __future__ import annotations

from typing import Protocol

from ferrum.sampling_params import SamplingParams

# Decode context kept before the new tokens: enough for tokenizers that merge a leading space or
# byte fallback pieces with what precedes them.
CONTEXT_TOKENS = 5
REPLACEMENT_CHAR = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Decoder, prompt_ids: list[int], params: SamplingParams):
        self.tokenizer = tokenizer
        self.params = params
        self.ids = list(prompt_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""  # output text so far, cut at a stop string if one was hit
        self.emitted = 0  # characters of `text` already handed out
        self.stop_string: str | None = None
        self._max_stop = max((len(s) for s in params.stop_list), default=0)

    def add(self, token_id: int) -> None:
        """Append one generated token; sets `stop_string` when the text hits one."""
        self.ids.append(token_id)
        skip = self.params.skip_special_tokens
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset], skip)
        full = self.tokenizer.decode(self.ids[self.prefix_offset :], skip)
        if len(full) <= len(prefix) or full.endswith(REPLACEMENT_CHAR):
            return  # nothing printable yet
        new = full[len(prefix) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        before = len(self.text)
        self.text += new
        if self._max_stop:
            self._check_stop(max(0, before - self._max_stop + 1))

    def defer(self, token_id: int) -> None:
        """Append a token without decoding it now; `flush` decodes what was deferred at once."""
        self.ids.append(token_id)

    def flush(self) -> None:
        """At the end, add the complete characters still held; a trailing partial character
        (cut by max_tokens) is dropped rather than emitted as U+FFFD."""
        if self.stop_string is not None or self.read_offset == len(self.ids):
            return
        skip = self.params.skip_special_tokens
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset], skip)
        full = self.tokenizer.decode(self.ids[self.prefix_offset :], skip)
        if len(full) > len(prefix):
            before = len(self.text)
            self.text += full[len(prefix) :].rstrip(REPLACEMENT_CHAR)
            if self._max_stop:
                self._check_stop(max(0, before - self._max_stop + 1))
        self.prefix_offset = self.read_offset = len(self.ids)

    def _check_stop(self, start: int) -> None:
        hits = [(self.text.find(s, start), s) for s in self.params.stop_list]
        hits = [(pos, s) for pos, s in hits if pos >= 0]
        if not hits:
            return
        pos, stop = min(hits)
        end = pos + len(stop) if self.params.include_stop_str_in_output else pos
        self.text = self.text[:end]
        self.stop_string = stop

    def _held_back(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        for n in range(min(self._max_stop - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.params.stop_list):
                return n
        return 0

    def take_delta(self, finished: bool) -> str:
        """Text not yet handed out that can no longer become part of a stop string."""
        end = len(self.text) if finished or self.stop_string else len(self.text) - self._held_back()
        delta = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return delta
