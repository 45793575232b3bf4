"""Text to phonemes with espeak-ng, the way Piper voices saw them in training (piper-phonemize).

Design note. piper-phonemize asks a patched libespeak-ng for one clause at a time together with
the clause's terminator (comma, period, question mark …) and rebuilds the sentence from them:
the clause's IPA (split into code points after NFD), then the terminator's punctuation (", " for
comma, colon and semicolon; "." "?" "!" for sentence ends, which also start a new sentence).
Stock libespeak-ng (Debian's 1.51) has `espeak_TextToPhonemes`, which returns the same clauses but
not the terminator. It does advance the text pointer past what it read: the clause, its
punctuation, and at most one character of look-ahead after the spaces. So the terminator is read
back from that consumed text: the punctuation run that only spaces, quotes or brackets (and the
one look-ahead character) follow.

Phonemes then become ids through the voice's `phoneme_id_map`: BOS "^", a pad "_" after it and
after every phoneme, EOS "$" (unknown phonemes are dropped, as Piper does).

libespeak-ng keeps global state (the current voice, its buffers), so every call holds one lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ferrum.errors import InvalidInputError, UnsupportedModelError

BOS = "^"  # beginning of an utterance
EOS = "$"  # end of an utterance
PAD = "_"  # placed after BOS and after every phoneme

# libespeak-ng API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02

# Clause terminators as espeak-ng classifies them, with the punctuation Piper appends for each.
# Dashes close a clause like a semicolon; fullwidth forms behave like their ASCII twins.
_TERMINATORS: dict[str, str] = {
    ".": ".",
    "?": "?",
    "!": "!",
    ",": ",",
    ":": ":",
    ";": ";",
    "\u2013": ";",  # en dash
    "\u2014": ";",  # em dash
    "\u3002": ".",  # ideographic full stop
    "\uff0e": ".",
    "\uff1f": "?",
    "\uff01": "!",
    "\u3001": ",",  # ideographic comma
    "\uff0c": ",",
    "\uff1a": ":",
    "\uff1b": ";",
}
_SENTENCE_ENDS = frozenset(".?!")
_ELLIPSIS = "\u2026"
_PUNCT_CLASS = "".join(re.escape(c) for c in [*_TERMINATORS, _ELLIPSIS])
# A clause's punctuation run, then only non-word characters, then one look-ahead character.
_TERMINATED_MID = re.compile(rf"([{_PUNCT_CLASS}]+)[\W_]*\w?$")
_TERMINATED_END = re.compile(rf"([{_PUNCT_CLASS}]+)[\W_]*$")
_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")
_LANGUAGE_FLAG = re.compile(r"\([^)]*\)")  # "(fr)" … "(en)" around words of another language


@dataclass(frozen=True)
class Clause:
    """One clause as espeak-ng read it."""

    ipa: str  # espeak's IPA for the clause (no punctuation)
    punctuation: str  # what Piper appends: "." "?" "!" ", " ": " "; " or ""
    ends_sentence: bool


class _Espeak:
    """The process-wide libespeak-ng handle (loaded on first use)."""

    _lock = threading.Lock()
    _instance: _Espeak | None = None

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng")
        if path is None:
            raise UnsupportedModelError(
                "Piper voices need espeak-ng for phonemes, and libespeak-ng is not installed: "
                "install it with `apt-get install espeak-ng` (or `brew install espeak-ng`)."
            )
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 0) < 0:
            raise UnsupportedModelError(f"libespeak-ng ({path}) failed to initialize its data")
        self.lib = lib
        self.voice: str | None = None

    @classmethod
    def get(cls) -> _Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def clauses(self, text: str, voice: str) -> list[Clause]:
        """espeak-ng's clauses of `text` in `voice`, each with its terminator."""
        data = text.encode("utf-8")
        buffer = ctypes.create_string_buffer(data)
        start = ctypes.addressof(buffer)
        with self._lock:
            self._set_voice(voice)
            pointer = ctypes.c_void_p(start)
            consumed: list[tuple[str, str]] = []
            while pointer.value:
                before = pointer.value - start
                ipa = self.lib.espeak_TextToPhonemes(
                    ctypes.byref(pointer), _ESPEAK_CHARS_UTF8, _PHONEMES_IPA
                )
                after = pointer.value - start if pointer.value else len(data)
                seen = data[before:after].decode("utf-8", errors="replace")
                consumed.append(((ipa or b"").decode("utf-8", errors="replace"), seen))
        last = len(consumed) - 1
        return [_clause(ipa, seen, i == last) for i, (ipa, seen) in enumerate(consumed)]

    def _set_voice(self, voice: str) -> None:
        if voice == self.voice:
            return
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UnsupportedModelError(
                f"espeak-ng has no voice {voice!r} (the voice config's espeak.voice); "
                "see `espeak-ng --voices` for the installed ones"
            )
        self.voice = voice


def _clause(ipa: str, seen: str, is_last: bool) -> Clause:
    """Rebuild a clause's terminator from the text espeak consumed for it."""
    match = (_TERMINATED_END if is_last else _TERMINATED_MID).search(seen)
    if match is None:
        return Clause(ipa, "", ends_sentence=bool(_PARAGRAPH.search(seen)))
    run = match.group(1)
    if _ELLIPSIS in run or run.startswith(".."):
        return Clause(ipa, "", ends_sentence=False)  # espeak pauses here but names no terminator
    mark = _TERMINATORS[run[0]]
    if mark in _SENTENCE_ENDS:
        return Clause(ipa, mark, ends_sentence=True)
    return Clause(ipa, mark + " ", ends_sentence=False)


def phonemize(text: str, voice: str) -> list[list[str]]:
    """Phonemes of `text` per sentence, as piper-phonemize gives them: espeak-ng IPA code points
    (NFD, so "ç" is "c" + U+0327) with the clause punctuation kept."""
    sentences: list[list[str]] = []
    current: list[str] | None = None
    for clause in _Espeak.get().clauses(text, voice):
        if current is None:
            current = []
            sentences.append(current)
        ipa = _LANGUAGE_FLAG.sub("", unicodedata.normalize("NFD", clause.ipa))
        current.extend(ipa)
        current.extend(clause.punctuation)
        if clause.ends_sentence:
            current = None
    return [s for s in sentences if any(not p.isspace() for p in s)]


def phoneme_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> list[int]:
    """Piper's id sequence: BOS, pad, then each known phoneme followed by a pad, then EOS."""
    for marker in (BOS, EOS, PAD):
        if marker not in id_map:
            raise InvalidInputError(f"the voice's phoneme_id_map has no {marker!r} entry")
    ids = [*id_map[BOS], *id_map[PAD]]
    for phoneme in phonemes:
        mapped = id_map.get(phoneme)
        if mapped is None:
            continue  # Piper drops phonemes its voice never saw
        ids.extend(mapped)
        ids.extend(id_map[PAD])
    ids.extend(id_map[EOS])
    return ids
