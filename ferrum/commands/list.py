"""`ferrum list`: the models on this machine (embedded packages and the hub cache)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ferrum.commands import app


@app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List local models: embedded packaged defaults and everything in the Hugging Face cache."""
    from ferrum.loader.resolve import hub_cache_dir, local_models

    models = local_models()
    if as_json:
        rows = [
            {
                "name": m.name,
                "repo_id": m.repo_id,
                "format": m.format,
                "size_bytes": m.size_bytes,
                "path": str(m.path),
            }
            for m in models
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not models:
        console.print(f"No local models (hub cache: {hub_cache_dir()}). Try `ferrum pull smollm2`.")
        return
    table = Table("name", "format", "size")
    table.add_column("path", overflow="fold")
    for m in models:
        table.add_row(m.name, m.format, _human_size(m.size_bytes), str(m.path))
    console.print(table)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
