"""The async driver: concurrent streams, cancellation frees blocks, validation errors surface."""

from __future__ import annotations

import asyncio

import pytest

from ferrum import LLM, SamplingParams
from ferrum.engine.async_engine import AsyncLLMEngine
from ferrum.errors import PromptTooLongError, QueueFullError


@pytest.fixture(scope="module")
def engine(tiny_llama):
    llm = LLM(str(tiny_llama), device="cpu", block_size=4)
    eng = AsyncLLMEngine(llm.engine)
    yield eng, llm
    eng.shutdown()


async def collect(eng, prompt, params):
    text, last = "", None
    async for out in eng.generate(prompt, params):
        text += out.outputs[0].delta_text
        last = out
    return text, last


def test_concurrent_streams_equal_offline_results(engine, tiny_llama):
    eng, llm = engine
    params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    prompts = ["The quick brown fox", "Paris is", "def main():", "naïve café"] * 4

    async def main():
        return await asyncio.gather(*(collect(eng, p, params) for p in prompts))

    results = asyncio.run(main())
    # a separate engine: the async engine's thread owns `llm.engine`
    offline = LLM(str(tiny_llama), device="cpu", block_size=4).generate(prompts, params)
    for (text, last), off in zip(results, offline):
        assert last.finished and last.outputs[0].token_ids == off.outputs[0].token_ids
        assert text == off.outputs[0].text
    bm = llm.engine.block_manager
    assert bm.num_free_blocks == bm.num_blocks


def test_leaving_a_stream_aborts_and_frees_blocks(engine):
    eng, llm = engine
    bm = llm.engine.block_manager

    async def main():
        agen = eng.generate("The quick brown fox", SamplingParams(max_tokens=200, ignore_eos=True))
        await agen.__anext__()
        await agen.aclose()
        for _ in range(100):
            stats = await eng.stats()
            if stats.num_running == 0 and stats.num_waiting == 0:
                return stats
            await asyncio.sleep(0.01)
        raise AssertionError("request still running after the stream was closed")

    asyncio.run(main())
    assert bm.num_free_blocks == bm.num_blocks


def test_errors_surface_before_streaming(engine):
    eng, llm = engine

    async def main():
        with pytest.raises(PromptTooLongError):
            async for _ in eng.generate([5] * llm.engine.max_model_len, SamplingParams()):
                pass

    asyncio.run(main())


def test_full_queue_is_refused(tiny_llama):
    llm = LLM(str(tiny_llama), device="cpu", max_num_seqs=1)
    eng = AsyncLLMEngine(llm.engine, max_waiting=0)
    try:

        async def main():
            with pytest.raises(QueueFullError):
                async for _ in eng.generate("hi", SamplingParams(max_tokens=2)):
                    pass

        asyncio.run(main())
    finally:
        eng.shutdown()
