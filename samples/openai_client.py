"""Talk to `ferrum serve` with the official openai SDK, unchanged.

    ferrum serve smollm2 --api-key secret          # in one terminal
    python samples/openai_client.py                # in another

Lists the models, asks one question (answer streamed as it is generated), then asks three at
once with the async client, as any OpenAI-compatible app would. FERRUM_URL / FERRUM_API_KEY
point it at another server.
"""

from __future__ import annotations

import asyncio
import os

from openai import AsyncOpenAI, OpenAI

BASE_URL = os.environ.get("FERRUM_URL", "http://127.0.0.1:8000/v1")
API_KEY = os.environ.get("FERRUM_API_KEY", "secret")  # anything works without --api-key


def stream_one(client: OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Explain in two sentences why the sky is blue."},
        ],
        max_tokens=120,
        temperature=0.3,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            print(
                f"\n[{chunk.usage.prompt_tokens} prompt + "
                f"{chunk.usage.completion_tokens} completion tokens]"
            )


async def ask_many(model: str) -> None:
    questions = ["What is a prime number?", "Name a planet with rings.", "What is 12 times 12?"]
    async with AsyncOpenAI(base_url=BASE_URL, api_key=API_KEY) as client:
        replies = await asyncio.gather(
            *(
                client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": q}],
                    max_tokens=48,
                    temperature=0,
                )
                for q in questions
            )
        )
    for question, reply in zip(questions, replies):
        print(f"- {question}\n  {reply.choices[0].message.content.strip()}")


def main() -> None:
    client = OpenAI(base_url=BASE_URL, api_key=API_KEY)
    model = client.models.list().data[0].id
    print(f"server at {BASE_URL} serves {model!r}\n")
    stream_one(client, model)
    print()
    asyncio.run(ask_many(model))


if __name__ == "__main__":
    main()
