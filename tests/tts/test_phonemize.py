"""Phonemes as Piper voices were trained on them: espeak-ng IPA with clause punctuation."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ferrum.audio.phonemize import BOS, EOS, PAD, phoneme_ids, phonemize

# Sentences on which Debian's espeak-ng 1.51 and piper-phonemize's bundled fork agree.
AGREED = [
    'Hello, world! It costs $3.50 on 12/05/2024. Dr. Smith said: "yes"? (Maybe) Well; ok.',
    "Wait... what?! Café naïve résumé, e.g. this; i.e. that",
    'He said "hi." Then left.',
    "Really?! Yes!!! Okay... fine.",
    "Mr. Brown met Mrs. Green at 5 p.m. today.",
    "I have 1,234,567 apples and 3.14 pies.",
    "Line one\nLine two\n\nPara two.",
    "Tab\tsep — dash – en; end…",
    "Version 2.0.1 was released on Jan. 3rd, 2021 — finally!",
    "Good morning.  How are you?   Fine, thanks.",
    "He paid £20 and €30 & more #hashtag @user.",
    "Semi;colon,comma:colon",
    "end with comma,",
]


def test_ids_interleave_pad_between_bos_and_eos() -> None:
    id_map = {PAD: [0], BOS: [1], EOS: [2], "a": [5], "b": [6], "ˈ": [7]}
    assert phoneme_ids(["a", "ˈ", "b"], id_map) == [1, 0, 5, 0, 7, 0, 6, 0, 2]


def test_unknown_phonemes_are_dropped() -> None:
    id_map = {PAD: [0], BOS: [1], EOS: [2], "a": [5]}
    assert phoneme_ids(["a", "☃", "a", "\u0361"], id_map) == [1, 0, 5, 0, 5, 0, 2]


def test_phonemes_match_piper_phonemize(espeak: None) -> None:
    piper = pytest.importorskip("piper_phonemize", reason="pip install piper-phonemize==1.1.0")
    for text in AGREED:
        assert phonemize(text, "en-us") == piper.phonemize_espeak(text, "en-us"), text


def test_clause_ipa_is_espeaks(espeak: None) -> None:
    """Without punctuation and spaces, our clauses are the lines the espeak-ng CLI prints."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("the espeak-ng command is not installed")
    text = "Hello, world! It costs $3.50; Dr. Smith (aged 42) said: yes? Café naïve."
    cli = subprocess.run(
        ["espeak-ng", "--ipa", "-q", "-v", "en-us", text], capture_output=True, text=True
    ).stdout
    strip = str.maketrans("", "", " \n.,!?;:")
    ours = "".join("".join(s) for s in phonemize(text, "en-us"))
    import unicodedata

    assert ours.translate(strip) == unicodedata.normalize("NFD", cli).translate(strip)


def test_sentences_and_punctuation(espeak: None) -> None:
    sentences = phonemize("Hello, world! Is it 3.50? Yes; it is: fine", "en-us")
    texts = ["".join(s) for s in sentences]
    assert len(texts) == 3  # "!" and "?" end sentences; ";" and ":" do not
    assert texts[0].endswith("!") and ", " in texts[0]
    assert "θɹˈiː pɔɪnt fˈaɪv" in texts[1] and texts[1].endswith("?")  # the number spoken
    assert "; " in texts[2] and ": " in texts[2] and texts[2][-1] not in ".!?"


def test_empty_text_has_no_sentences(espeak: None) -> None:
    assert phonemize("", "en-us") == []
    assert phonemize(" ... ", "en-us") == []


def test_unknown_espeak_voice_is_a_clear_error(espeak: None) -> None:
    from ferrum.errors import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="no voice"):
        phonemize("hello", "xx-nonexistent")
    assert phonemize("hello", "en-us")  # the handle still works afterwards
