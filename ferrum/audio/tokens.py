"""Whisper's tokenizer: text ↔ ids through tokenizer.json, plus the special tokens that steer
decoding (start of transcript, language, task, timestamps) and the split into words."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from ferrum.errors import CheckpointError, InvalidInputError

TIME_PRECISION = 0.02  # seconds per timestamp token
TASKS = ("transcribe", "translate")
_PUNCTUATION = set(string.punctuation)


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the tokens that are not text."""

    eot: int  # <|endoftext|>: ends a transcript
    sot: int  # <|startoftranscript|>
    translate: int  # <|translate|>: the task is X → English
    transcribe: int  # <|transcribe|>: the task is same-language text
    sot_prev: int  # <|startofprev|>: what follows is the previous window's text
    no_speech: int  # <|nospeech|> (<|nocaptions|> in older vocabularies)
    no_timestamps: int  # <|notimestamps|>: decode text only
    timestamp_begin: int  # <|0.00|>; timestamp i is timestamp_begin + i (0.02 s each)


class WhisperTokenizer:
    """Text and special tokens of one Whisper checkpoint."""

    def __init__(self, tokenizer: Tokenizer, multilingual: bool) -> None:
        self.tokenizer = tokenizer
        self.multilingual = multilingual
        ids = {name: self._id(f"<|{name}|>") for name in ("endoftext", "startoftranscript")}
        no_speech = tokenizer.token_to_id("<|nospeech|>")
        if no_speech is None:
            no_speech = self._id("<|nocaptions|>")
        no_timestamps = self._id("<|notimestamps|>")
        self.special = SpecialTokens(
            eot=ids["endoftext"],
            sot=ids["startoftranscript"],
            translate=self._id("<|translate|>"),
            transcribe=self._id("<|transcribe|>"),
            sot_prev=self._id("<|startofprev|>"),
            no_speech=no_speech,
            no_timestamps=no_timestamps,
            timestamp_begin=no_timestamps + 1,
        )
        # Language tokens sit between <|startoftranscript|> and <|translate|>.
        self.languages: dict[str, int] = {}
        for token_id in range(self.special.sot + 1, self.special.translate):
            token = tokenizer.id_to_token(token_id)
            if token and token.startswith("<|") and token.endswith("|>"):
                self.languages[token[2:-2]] = token_id

    @classmethod
    def from_file(cls, path: Path, multilingual: bool) -> WhisperTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)), multilingual)
        except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
            raise CheckpointError(f"{path}: not a usable Whisper tokenizer ({e})") from e

    def _id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise CheckpointError(f"the tokenizer has no {token} token: not a Whisper tokenizer")
        return token_id

    def language_token(self, language: str) -> int:
        code = language.lower()
        if code not in self.languages:
            shown = ", ".join(sorted(self.languages)[:20])
            raise InvalidInputError(f"unknown language {language!r}; use a code such as {shown}, …")
        return self.languages[code]

    def sot_sequence(self, language: str | None, task: str, timestamps: bool) -> list[int]:
        """The prompt that opens a window: start, language and task (multilingual models),
        and <|notimestamps|> when decoding text only."""
        if task not in TASKS:
            raise InvalidInputError(f"unknown task {task!r}; use transcribe or translate")
        tokens = [self.special.sot]
        if self.multilingual:
            tokens.append(self.language_token(language or "en"))
            tokens.append(
                self.special.translate if task == "translate" else self.special.transcribe
            )
        if not timestamps:
            tokens.append(self.special.no_timestamps)
        return tokens

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        """Text of `tokens`, special and timestamp tokens left out."""
        return self.tokenizer.decode([t for t in tokens if t < self.special.eot])

    def split_to_word_tokens(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """Group tokens into words: a word starts at a leading space or is punctuation; in
        languages written without spaces every decodable character group is a word."""
        subwords, subword_tokens = self._split_on_unicode(tokens)
        if not self.multilingual or " " in "".join(subwords):
            return self._merge_on_spaces(subwords, subword_tokens)
        return subwords, subword_tokens

    def _split_on_unicode(self, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
        """The shortest runs of tokens that decode to whole characters (byte-level BPE splits
        some characters across tokens)."""
        words: list[str] = []
        word_tokens: list[list[int]] = []
        current: list[int] = []
        for token in tokens:
            current.append(token)
            text = self.tokenizer.decode(current) if token < self.special.eot else ""
            if "\ufffd" not in text:
                words.append(text)
                word_tokens.append(current)
                current = []
        return words, word_tokens

    def _merge_on_spaces(
        self, subwords: list[str], subword_tokens: list[list[int]]
    ) -> tuple[list[str], list[list[int]]]:
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for subword, tokens in zip(subwords, subword_tokens, strict=True):
            special = tokens[0] >= self.special.eot
            starts_word = subword.startswith(" ") or subword.strip() in _PUNCTUATION
            if special or starts_word or not words:
                words.append(subword)
                word_tokens.append(list(tokens))
            else:
                words[-1] += subword
                word_tokens[-1].extend(tokens)
        return words, word_tokens
