"""/v1/audio/speech with Qwen3-TTS models (the tiny random CustomVoice, VoiceDesign and Base
folders of tests/tts), through the official openai SDK and raw HTTP. Every reply is compared with
the library run directly on the same model and seed (`ferrum.synthesize`); errors are 400s that
say what to fix, streamed or not."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile

import ferrum
from ferrum.audio.encode import encode_audio, to_pcm16
from ferrum.audio.io import load_audio
from ferrum.audio.tts import SpeechOptions
from ferrum.server.launch import load_synthesizer
from ferrum.server.protocol_audio import SpeechRequest
from ferrum.server.registry import ServedModel
from ferrum.server.speech import SPEECH_KIND, ServedSynthesizer
from ferrum.server.state import ServerState
from tests.tts.test_qwen3_tts_api import REF_TEXT, write_qwen3_models

from .conftest import running_server
from .test_errors import assert_error

TEXT = "Hello there. How are you today? Fine, thanks."  # three sentences
RATE = 24000
MP3_FRAME = 1152  # samples in one MPEG audio frame
NO_MEDIA = "base-no-media"  # the Base model again, served without --allowed-local-media


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_qwen3_models(tmp_path_factory.mktemp("qwen3_served"))


@pytest.fixture(scope="module")
def state(models: dict[str, Path]) -> Iterator[ServerState]:
    state = ServerState()
    media = models["clip"].parent
    for kind in ("custom_voice", "voice_design", "base"):
        loaded = load_synthesizer(str(models[kind]), device="cpu", allowed_local_media=media)
        state.models.add(loaded.model)
    bare = ServedSynthesizer(state.models.get("base", SPEECH_KIND).handle.synthesizer)
    state.models.add(ServedModel(NO_MEDIA, SPEECH_KIND, bare, close=bare.close))
    yield state
    state.models.close_all()


@pytest.fixture(scope="module")
def url(state: ServerState) -> Iterator[str]:
    with running_server(state) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


def library(state: ServerState, model: str, text: str = TEXT, **fields) -> np.ndarray:
    """What the library says for the same model, text and options."""
    synthesizer = state.models.get(model, SPEECH_KIND).handle.synthesizer
    return ferrum.synthesize(text, synthesizer, options=SpeechOptions(**fields)).samples


def data_url(path: Path) -> str:
    return "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "pcm"])
def test_custom_voice_formats_equal_the_library(client, state, fmt):
    expected = library(state, "custom_voice", speaker="vivian", seed=7)
    assert len(expected) > 0 and np.abs(expected).max() > 1e-3
    r = client.audio.speech.create(
        model="custom_voice", voice="Vivian", input=TEXT, response_format=fmt,
        extra_body={"seed": 7},
    )  # fmt: skip
    assert r.content == encode_audio(expected, RATE, fmt)
    if fmt != "pcm":
        samples, rate = soundfile.read(io.BytesIO(r.content), dtype="float32")
        assert rate == RATE and abs(len(samples) - len(expected)) < (2000 if fmt == "mp3" else 1)


def test_voice_picks_the_speaker(http, state):
    body = {"model": "custom_voice", "input": TEXT, "response_format": "pcm", "seed": 3}
    dylan = http.post("/v1/audio/speech", json={**body, "voice": "dylan"})
    assert dylan.status_code == 200
    assert dylan.content == to_pcm16(library(state, "custom_voice", speaker="dylan", seed=3))
    assert dylan.headers["x-sample-rate"] == str(RATE)
    # (the tiny random talker speaks alike for both speakers: check the mapping itself)
    handle = state.models.get("custom_voice", SPEECH_KIND).handle
    assert [handle.speaker(v) for v in ("DYLAN", "vivian", "custom_voice")] == [
        "dylan",
        "vivian",
        None,
    ]


def test_instructions_are_the_voice_design(client, state):
    instruction = "A deep calm voice, speaking slowly."
    r = client.audio.speech.create(
        model="voice_design", voice="voice_design", input=TEXT, response_format="pcm",
        instructions=instruction, extra_body={"seed": 2, "language": "english"},
    )  # fmt: skip
    expected = library(state, "voice_design", instruct=instruction, seed=2, language="english")
    assert r.content == to_pcm16(expected)
    plain = library(state, "voice_design", seed=2, language="english")
    assert r.content != to_pcm16(plain)


@pytest.mark.parametrize("how", ["data_url", "relative_path", "absolute_path"])
def test_voice_clone_from_a_data_url_or_an_allowed_path(http, state, models, how):
    clip = models["clip"]
    ref = {"data_url": data_url(clip), "relative_path": clip.name, "absolute_path": str(clip)}
    body = {
        "model": "base", "input": TEXT, "response_format": "pcm", "seed": 5,
        "ref_audio": ref[how], "ref_text": REF_TEXT,
    }  # fmt: skip
    r = http.post("/v1/audio/speech", json=body)
    assert r.status_code == 200, r.text
    expected = library(state, "base", ref_audio=clip, ref_text=REF_TEXT, seed=5)
    assert r.content == to_pcm16(expected)


@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3", "flac"])
def test_streamed_speech_is_the_same_audio(url, state, tmp_path, fmt):
    expected = library(state, "custom_voice", speaker="vivian", seed=9)
    body = {"model": "custom_voice", "voice": "vivian", "input": TEXT, "response_format": fmt}
    with httpx.stream(
        "POST", f"{url}/v1/audio/speech", json={**body, "seed": 9, "stream": True}, timeout=120
    ) as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        data = b"".join(r.iter_bytes())
    if fmt in ("wav", "pcm"):
        assert data.endswith(to_pcm16(expected)) and len(data) - len(to_pcm16(expected)) in (0, 44)
    elif fmt == "mp3" and len(expected) < 2 * MP3_FRAME:
        # the tiny model speaks a few ms: less than ffmpeg needs to probe an mp3 stream
        assert data.startswith(b"ID3") and b"\xff\xf3" in data
    else:
        path = tmp_path / f"stream.{fmt}"
        path.write_bytes(data)
        slack = 2000 if fmt == "mp3" else 1  # mp3's encoder delay and frame padding
        assert abs(len(load_audio(path, RATE)) - len(expected)) < slack


def test_speech_as_server_sent_events(http, state, models):
    clip = models["clip"]
    body = {
        "model": "base", "input": TEXT, "response_format": "pcm", "seed": 1,
        "ref_audio": data_url(clip), "stream_format": "sse",
    }  # fmt: skip
    r = http.post("/v1/audio/speech", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 3 + ["speech.audio.done"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert audio == to_pcm16(library(state, "base", ref_audio=clip, seed=1))  # x-vector only


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"voice": "alloy"}, "dylan, vivian"),
        ({"voice": None}, "needs a speaker"),
        ({"input": ""}, "empty"),
        ({"input": " \n "}, "empty"),
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 2.0}, "speed"),
        ({"instructions": "Shout."}, "does not follow"),
        ({"language": "klingon"}, "klingon"),
        ({"ref_audio": "clip.wav"}, "needs a Base model"),
        ({"stream": True, "voice": "dave"}, "unknown voice"),
        ({"stream_format": "sse", "language": "klingon"}, "klingon"),
        ({"model": "base", "voice": None}, "reference clip"),
        (
            {"model": "base", "voice": None, "ref_audio": "data:audio/wav;base64,aGVsbG8="},
            "decodable",
        ),
        ({"model": "base", "voice": None, "ref_audio": "data:audio/wav;base64,@@"}, "base64"),
        ({"model": "base", "voice": None, "ref_audio": "data:audio/wav,RIFF"}, "base64"),
        ({"model": "base", "voice": None, "ref_audio": "https://x.org/a.wav"}, "not fetched"),
        ({"model": "base", "voice": None, "ref_audio": "/etc/hostname"}, "outside the folder"),
        ({"model": "base", "voice": None, "ref_audio": "../x.wav"}, "outside the folder"),
        ({"model": "base", "voice": None, "ref_audio": "none.wav"}, "none.wav"),
        ({"model": NO_MEDIA, "voice": None, "ref_audio": "clip.wav"}, "--allowed-local-media"),
        ({"model": "base", "voice": None, "ref_text": "hi"}, "give the clip"),
    ],
)
def test_bad_requests_are_400s(http, fields, expected):
    body = {"model": "custom_voice", "voice": "vivian", "input": TEXT, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    error = assert_error(http.post("/v1/audio/speech", json=body), 400)
    assert expected in error["message"]


def test_health_lists_voices(http):
    health = {m["name"]: m for m in http.get("/health").json()["models"]}
    assert health["custom_voice"]["voices"] == ["dylan", "vivian"]
    assert health["voice_design"]["voices"] == ["voice_design"]
    assert health["base"]["sample_rate"] == RATE


def test_serve_wires_the_speech_model_and_media_folder(models):
    from ferrum.commands.serve import _load_others

    media = models["clip"].parent
    (loaded,) = _load_others(None, None, str(models["base"]), "cpu", "auto", str(media))
    try:
        handle = loaded.model.handle
        assert handle.qwen3 and handle.allowed_media == media.resolve()
        assert loaded.model.kind == SPEECH_KIND and loaded.model.name == "base"
    finally:
        loaded.model.close()


def test_piper_voices_reject_qwen3_fields(tmp_path):
    from ferrum.audio.tts import Synthesizer
    from tests.tts.conftest import write_tiny_voice

    handle = ServedSynthesizer(Synthesizer(write_tiny_voice(tmp_path), device="cpu"))
    try:
        for field in ("instructions", "language", "ref_audio", "ref_text"):
            body = SpeechRequest(input="Hi.", **{field: "x"})
            with pytest.raises(ferrum.FerrumError, match=f"{field} is not supported"):
                handle.options(body)
        assert handle.options(SpeechRequest(input="Hi.", voice="bob", speed=2.0)).speed == 2.0
    finally:
        handle.close()
