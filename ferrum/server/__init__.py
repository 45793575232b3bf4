"""The OpenAI-compatible HTTP server: `create_app(state)` and what it is made of.

    state = ServerState(config=ServerConfig(api_key="secret"))
    state.models.add(ServedModel("smollm2", LLM_KIND, ServedLLM.from_llm(LLM("smollm2"))))
    app = create_app(state)          # any ASGI server; `ferrum serve` runs it with uvicorn

Nothing outside `ferrum.commands` imports this package.
"""
