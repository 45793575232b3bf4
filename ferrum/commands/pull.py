"""`ferrum pull SPEC`: download a model into the Hugging Face cache and print where it is."""

from __future__ import annotations

from typing import Annotated

import typer

from ferrum.commands import app


@app.command("pull")
def pull(
    spec: Annotated[str, typer.Argument(help="Alias (smollm2, qwen3:0.6b, …) or hub repo id.")],
) -> None:
    """Download a model (with progress) unless it is already local; print its local path."""
    from ferrum.loader.resolve import resolve_model

    source = resolve_model(spec, download=True)
    typer.echo(str(source.path))
