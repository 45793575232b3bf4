"""The GPU modalities benchmark end to end on CPU with --tiny sizes: it must run through
`python -m`, agree with transformers on the same random weights (Whisper tokens, BERT and CLIP
embeddings), write its JSON, and import nothing the GPU machine lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ABSENT_ON_GPU_MACHINE = ("typer", "pydantic", "fastapi", "gguf")  # not installed there
TIMEOUT_S = 120


def test_tiny_run_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ferrum.bench.gpu_modalities",
         "--tiny", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & set(ABSENT_ON_GPU_MACHINE)

    report = json.loads((tmp_path / "gpu_modalities.json").read_text())
    figures = {f["workload"].split()[0] + f["unit"]: f for f in report["figures"]}
    assert set(figures) == {"whisperaudio s", "bertsentences", "clipimages", "clipcaptions"}
    for f in figures.values():
        assert f["passed"], f
        assert f["ferrum"] > 0 and f["baseline"] > 0
    whisper = figures["whisperaudio s"]
    # float32 on CPU: greedy decoding of the same weights agrees token for token
    assert f"first divergence at token {whisper['extra']['new_tokens']}.0" in whisper["check"]
    # the table comes last: card, versions, header, then one line per figure (+ decoder tokens)
    table = proc.stdout.strip().splitlines()[-8:]
    assert table[0].startswith("card:") and table[1].startswith("versions:")
    assert "ratio" in table[2] and table[3].startswith("whisper")
