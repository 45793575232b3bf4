"""The sentence-transformers folder layout that test checkpoints share."""

from __future__ import annotations

import json
from pathlib import Path

ST = "sentence_transformers.models"


def write_modules(path: Path, normalize: bool) -> None:
    """modules.json: Transformer → Pooling (→ Normalize), and the empty 1_Pooling folder."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": f"{ST}.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": f"{ST}.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": f"{ST}.Normalize"})
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
