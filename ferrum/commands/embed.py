"""`ferrum embed`: text and image embeddings (or their cosine similarity matrix) on stdout."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ferrum.commands import app

if TYPE_CHECKING:
    import numpy as np

    from ferrum.text.embed import EmbeddingResult

FORMATS = ("json", "jsonl", "csv", "raw")
FLOAT_FORMAT = ".7g"  # float32 carries about 7 significant digits


@app.command("embed")
def embed(
    model: Annotated[
        str | None,
        typer.Option(
            "-m",
            "--model",
            help="Alias (minilm, bge-small, clip-vit-b32, …), hub id "
            "or folder. Default: the embedded all-MiniLM-L6-v2.",
        ),
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option(
            "--text",
            "-t",
            help="A text to embed (repeatable). Without --text/--image, "
            "texts are read from stdin, one per line.",
        ),
    ] = None,
    image: Annotated[
        list[Path] | None, typer.Option("--image", "-i", help="An image file (repeatable).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="json | jsonl | csv | raw")] = "json",
    normalize: Annotated[
        bool | None,
        typer.Option("--normalize/--no-normalize", help="L2-normalize (default: as the model)."),
    ] = None,
    similarity: Annotated[
        bool, typer.Option("--similarity", help="Print the cosine matrix of all inputs instead.")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | mps")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto | bfloat16 | float32")] = "auto",
) -> None:
    """Embed texts (and images, with CLIP/SigLIP models) and print the vectors."""
    from ferrum.errors import FerrumError, InvalidInputError

    try:
        if fmt not in FORMATS:
            raise InvalidInputError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
        texts = list(text or [])
        images = [str(p) for p in image or []]
        if not texts and not images and not sys.stdin.isatty():
            texts = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
        if not texts and not images:
            raise InvalidInputError("nothing to embed: pass --text, --image or lines on stdin")
        for path in images:
            if not Path(path).is_file():
                raise InvalidInputError(f"image file not found: {path}")
        from ferrum.text.embed import Embedder

        with Embedder(model, device=device, dtype=dtype) as embedder:
            result = embedder.embed(texts=texts, images=images, normalize=normalize)
    except FerrumError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    labels = texts + images
    if result.truncated:
        typer.echo(
            f"note: {result.truncated} text(s) truncated to the model's max length", err=True
        )
    if similarity:
        typer.echo(format_similarity(result.similarity(), labels, fmt, result.model), nl=False)
    else:
        typer.echo(format_embeddings(result, labels, fmt), nl=False)


def format_embeddings(result: EmbeddingResult, labels: list[str], fmt: str) -> str:
    rows = result.embeddings.tolist()
    records = [
        {"index": i, "kind": kind, "input": label, "tokens": tokens, "embedding": row}
        for i, (kind, label, tokens, row) in enumerate(
            zip(result.kinds, labels, result.token_counts, rows)
        )
    ]
    if fmt == "json":
        head = {
            "model": result.model,
            "dims": result.dims,
            "normalized": result.normalized,
            "total_tokens": result.total_tokens,
            "truncated": result.truncated,
        }
        return json.dumps({**head, "data": records}) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in records)
    if fmt == "csv":
        header = ["index", "kind", "input"] + [f"d{j}" for j in range(result.dims)]
        body = [
            [r["index"], r["kind"], r["input"], *(format(x, FLOAT_FORMAT) for x in r["embedding"])]
            for r in records
        ]
        return to_csv([header, *body])
    return "".join(" ".join(format(x, FLOAT_FORMAT) for x in row) + "\n" for row in rows)


def format_similarity(matrix: np.ndarray, labels: list[str], fmt: str, model: str) -> str:
    rows = matrix.tolist()
    if fmt == "json":
        return json.dumps({"model": model, "inputs": labels, "similarity": rows}) + "\n"
    if fmt == "jsonl":
        return "".join(
            json.dumps({"index": i, "input": label, "similarity": row}) + "\n"
            for i, (label, row) in enumerate(zip(labels, rows))
        )
    if fmt == "csv":
        body = [
            [label, *(format(x, FLOAT_FORMAT) for x in row)] for label, row in zip(labels, rows)
        ]
        return to_csv([["input", *labels], *body])
    return "".join(" ".join(format(x, FLOAT_FORMAT) for x in row) + "\n" for row in rows)


def to_csv(rows: list[list]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()
