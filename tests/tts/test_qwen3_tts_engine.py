"""The Qwen3-TTS continuous-batching engine against the reference and against itself.

Greedy codes through the engine equal the reference's (qwen-tts 0.1.1, the talker fixture) in
every mode, with whole prompts, prompts prefilled in chunks, and under preemption; requests
joining from other threads mid-flight get the codes they get alone; seeded sampling equals
`generate_codes` on each request by itself; cancelling frees the blocks. Long runs use a tiny
random model from `random_qwen3_tts`, which rarely stops (the fixture's stops after two frames).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch

from ferrum.audio.qwen3_tts_engine import Qwen3TTSEngine
from ferrum.audio.qwen3_tts_runner import TalkerRunner
from ferrum.errors import InvalidInputError, PromptTooLongError
from ferrum.layers.attention import build_metadata
from ferrum.models.qwen3_tts.generate import GenerationOptions, generate_codes
from ferrum.models.qwen3_tts.model import Qwen3TTS
from ferrum.models.qwen3_tts.prompt import SpeechRequest, VoiceClonePrompt
from ferrum.models.qwen3_tts.random_model import SPEAKER, random_qwen3_tts
from ferrum.models.qwen3_tts.row_sampling import first_codebook_scores
from ferrum.models.qwen3_tts.sampling import SamplingOptions, process_first_codebook

from .test_qwen3_tts_talker import (  # noqa: F401 (pytest fixtures)
    CLONE_TEXTS,
    checkpoint,
    custom_requests,
    load,
    reference,
)

WAIT_S = 30.0  # longest a test waits for the engine thread
BLOCK = 4  # KV block size: small, so requests span many blocks
LONG_FRAMES = 40  # codebook-0 tokens of a long request (the tiny random model rarely stops)


def expect_reference(codes: list[torch.Tensor], name: str, fixture: tuple) -> None:
    meta, ref = fixture
    assert len(codes) == meta["cases"][name]["count"]
    for i, c in enumerate(codes):
        np.testing.assert_array_equal(c.numpy(), ref[f"{name}.{i}"], err_msg=f"{name}[{i}]")


def mode_cases(folder: Path, fixture: tuple) -> list[tuple[str, Qwen3TTS, list]]:
    meta, ref = fixture
    embedding = torch.from_numpy(ref["speaker_embedding"])
    codes = torch.from_numpy(ref["ref_codes"].astype(np.int64))
    voices = [VoiceClonePrompt(embedding), VoiceClonePrompt(embedding, codes, meta["ref_text"])]
    design = [
        SpeechRequest(
            "The quick brown fox.", "English", instruct="A calm deep voice, speaking slowly."
        ),
        SpeechRequest("你好世界", "Auto"),
    ]
    custom, base = load(folder, "custom_voice"), load(folder, "base")
    cases = [
        ("custom_voice", custom, custom_requests()),
        ("custom_voice_streaming", custom, custom_requests(False)),
        ("voice_design", load(folder, "voice_design"), design),
    ]
    for name, non_streaming in (("voice_clone", None), ("voice_clone_non_streaming", True)):
        clone = [
            SpeechRequest(t, "English", voice=v, non_streaming=non_streaming)
            for t, v in zip(CLONE_TEXTS, voices, strict=True)
        ]
        cases.append((name, base, clone))
    return cases


@pytest.mark.parametrize(
    ("budget", "tight_cache"),
    [(2048, False), (5, False), (2048, True)],
    ids=["whole-prompts", "chunked-prefill", "preemption"],
)
def test_greedy_codes_equal_the_reference_in_every_mode(
    checkpoint: Path,  # noqa: F811
    reference: tuple,  # noqa: F811
    budget: int,
    tight_cache: bool,
) -> None:
    meta, _ = reference
    options = GenerationOptions.greedy(meta["max_new_tokens"])
    preemptions = 0
    for name, tts, requests in mode_cases(checkpoint, reference):
        memory = None
        if tight_cache:  # room for the longest request and one block: the other is preempted
            longest = max(tts.prompts.build(r).embeds.shape[0] for r in requests)
            blocks = -(-(longest + meta["max_new_tokens"]) // BLOCK) + 1
            memory = blocks * BLOCK * TalkerRunner(tts, BLOCK).kv_bytes_per_token
        engine = Qwen3TTSEngine(
            tts, max_batch=4, kv_cache_memory=memory, max_num_batched_tokens=budget,
            block_size=BLOCK,
        )  # fmt: skip
        try:
            expect_reference(engine.generate(requests, options), name, reference)
            assert engine.num_free_blocks == engine.block_manager.num_blocks
            preemptions += engine.scheduler.num_preemptions
        finally:
            engine.close()
    assert (preemptions > 0) == tight_cache


@pytest.fixture(scope="module")
def tiny() -> Qwen3TTS:
    return random_qwen3_tts("tiny", seed=3)


def tiny_requests() -> list[SpeechRequest]:
    return [
        SpeechRequest("Hello there.", "english", speaker=SPEAKER),
        SpeechRequest("A longer sentence, to be spoken slowly.", "auto", speaker=SPEAKER),
        SpeechRequest("你好世界", "chinese", speaker=SPEAKER, non_streaming=False),
    ]


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the engine thread did not get there in time"
        time.sleep(0.001)


def test_requests_joining_from_threads_get_their_codes_alone(tiny: Qwen3TTS) -> None:
    """Three threads submit one after another, each while the earlier requests are mid-flight;
    each request's codes equal `generate_codes` on it alone (greedy, and seeded sampling)."""
    argmax = SamplingOptions(do_sample=False)
    greedy = GenerationOptions(argmax, argmax, max_new_tokens=LONG_FRAMES, ignore_eos=True)
    seeded = GenerationOptions(max_new_tokens=LONG_FRAMES, seed=11, ignore_eos=True)
    jobs = list(zip(tiny_requests(), [greedy, seeded, greedy], strict=True))
    alone = [tiny.generate([r], o)[0] for r, o in jobs]
    assert all(a.shape[0] == LONG_FRAMES - 1 for a in alone)  # long enough to overlap
    engine = Qwen3TTSEngine(tiny, max_batch=4, block_size=BLOCK)
    futures: list[Future] = []
    overlapped: list[bool] = []

    def submit(request: SpeechRequest, options: GenerationOptions) -> None:
        futures.append(engine.submit(request, options))

    try:
        for request, options in jobs:
            thread = threading.Thread(target=submit, args=(request, options))
            thread.start()
            thread.join()
            wait_for(lambda: len(engine.scheduler.running) == len(futures))  # it has joined
            overlapped.append(not any(f.done() for f in futures))
        codes = [f.result(timeout=WAIT_S) for f in futures]
    finally:
        engine.close()
    assert all(overlapped)
    for got, expected in zip(codes, alone, strict=True):
        assert torch.equal(got, expected)


def test_seeded_sampling_equals_one_request_at_a_time(tiny: Qwen3TTS) -> None:
    """Each seeded request draws from its own generator: batched with others (itself included,
    in any order) its codes equal `generate_codes` on it alone with the same seed, under the
    sampling knobs the reference exposes."""
    options = GenerationOptions(
        talker=SamplingOptions(True, 0.7, 20, 0.8),
        code_predictor=SamplingOptions(True, 1.2, 10, 0.6),
        repetition_penalty=1.3,
        max_new_tokens=LONG_FRAMES,
        seed=99,
    )
    requests = tiny_requests()
    with torch.inference_mode():
        tts_pad = tiny.prompts.special_text()[2]
        alone = [
            generate_codes(tiny.model.talker, [tiny.prompts.build(r)], tts_pad, options)[0]
            for r in requests
        ]
    engine = Qwen3TTSEngine(tiny, max_batch=8, block_size=BLOCK)
    try:
        batched = engine.generate([*requests, *requests[::-1]], options)
    finally:
        engine.close()
    for got, expected in zip(batched, [*alone, *alone[::-1]], strict=True):
        assert torch.equal(got, expected)
    assert not torch.equal(alone[0][:2], alone[1][:2])  # the requests' draws differ


def test_cancel_frees_the_blocks_at_once(tiny: Qwen3TTS) -> None:
    engine = Qwen3TTSEngine(tiny, max_batch=2, block_size=BLOCK)
    total = engine.block_manager.num_blocks
    try:
        request = tiny_requests()[1]
        future = engine.submit(request, GenerationOptions.greedy(engine.capacity // 2))
        prompt_blocks = -(-tiny.prompts.build(request).embeds.shape[0] // BLOCK)
        wait_for(lambda: engine.num_free_blocks < total - prompt_blocks - 1)  # decoding frames
        assert future.cancel()
        wait_for(lambda: engine.num_free_blocks == total)
        assert future.cancelled() and not engine.scheduler.has_unfinished()
        # and the engine goes on serving
        again = engine.generate([request], GenerationOptions.greedy(6))[0]
        assert torch.equal(again, tiny.generate([request], GenerationOptions.greedy(6))[0])
    finally:
        engine.close()


def test_bad_requests_raise_at_submit(tiny: Qwen3TTS) -> None:
    engine = Qwen3TTSEngine(tiny, max_batch=2, kv_cache_memory=1 << 16, block_size=BLOCK)
    try:
        with pytest.raises(InvalidInputError, match="speaker"):
            engine.submit(SpeechRequest("Hi.", "english", speaker="nobody"), GenerationOptions())
        with pytest.raises(PromptTooLongError, match="max_new_tokens"):
            engine.submit(tiny_requests()[0], GenerationOptions(max_new_tokens=engine.capacity))
    finally:
        engine.close()
    with pytest.raises(InvalidInputError, match="closed"):
        engine.submit(tiny_requests()[0], GenerationOptions())


def test_first_codebook_scores_equal_the_per_request_processors() -> None:
    eos, vocab = 1070, 1088
    logits = torch.randn(4, vocab, generator=torch.Generator().manual_seed(0)) * 3
    histories = [[], [5], [7, 3, 7, 7, 9], [1, 2]]
    penalties = [1.05, 1.3, 1.05, 1.0]
    allowed = [False, False, True, True]
    got = first_codebook_scores(
        logits, [list(dict.fromkeys(h)) for h in histories], penalties, allowed, eos
    )
    for i, history in enumerate(histories):
        row = process_first_codebook(
            logits[i : i + 1], torch.tensor([history], dtype=torch.long), eos, penalties[i]
        )
        if not allowed[i]:
            row[:, eos] = -float("inf")
        assert torch.equal(got[i : i + 1], row), i


def test_gpu_bench_runs_on_cpu(tmp_path: Path) -> None:
    from ferrum.bench.gpu_tts import main

    out = tmp_path / "tts.json"
    main(["--size", "tiny", "--device", "cpu", "--dtype", "float32", "--frames", "6",
          "--concurrency", "1", "3", "--repeats", "1", "--out", str(out)])  # fmt: skip
    figures = json.loads(out.read_text())["figures"]
    assert [f["frames"] for f in figures] == [6, 18]  # EOS ignored: exactly N frames each
    assert all(f["frames_per_s"] > 0 and f["decode_s"] > 0 for f in figures)


def test_paged_talker_equals_the_dense_decoder(tiny: Qwen3TTS) -> None:
    """The talker over the paged cache (blocks shuffled, prompts in two chunks, then a decode
    row) computes what the dense decoder computes for each sequence alone."""
    decoder = tiny.model.talker.model
    runner = TalkerRunner(tiny, BLOCK)
    runner.allocate_kv_cache(32)
    g = torch.Generator().manual_seed(1)
    lengths = [6, 13, 9]
    inputs = [torch.randn(n, decoder.config.hidden_size, generator=g) for n in lengths]
    free = torch.randperm(32, generator=g).tolist()
    tables = [[free.pop() for _ in range(-(-n // BLOCK))] for n in lengths]
    # a prompt chunk, the rest of the prompt, then one decode row
    cuts: list[Callable[[int], tuple[int, int]]] = [
        lambda n: (0, 3),
        lambda n: (3, n - 1),
        lambda n: (n - 1, n),
    ]
    got: list[list[torch.Tensor]] = [[] for _ in lengths]
    with torch.inference_mode():
        for cut in cuts:
            spans = [cut(n) for n in lengths]
            meta = build_metadata(
                [b - a for a, b in spans], [b for _, b in spans], tables, BLOCK, runner.device
            )
            rows = torch.cat([x[a:b] for x, (a, b) in zip(inputs, spans, strict=True)])
            positions = torch.cat([torch.arange(a, b) for a, b in spans])
            out = runner.paged(rows, positions, meta).split([b - a for a, b in spans])
            for i, o in enumerate(out):
                got[i].append(o)
        for x, pieces in zip(inputs, got, strict=True):
            n = x.shape[0]
            dense, _ = decoder(x[None], torch.arange(n)[None], torch.ones(1, n, dtype=bool), None)
            torch.testing.assert_close(torch.cat(pieces), dense[0], rtol=1e-5, atol=1e-5)
