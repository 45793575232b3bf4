"""The machine and versions a figure was measured on (printed with every benchmark)."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass


@dataclass
class Environment:
    machine: str  # CPU model and cores, or GPU name and memory
    torch: str
    transformers: str | None
    python: str

    def as_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or what platform knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> Environment:
    import torch

    try:
        import transformers

        tf: str | None = transformers.__version__
    except ImportError:
        tf = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        machine = f"{p.name}, {p.total_memory / 2**30:.0f} GiB"
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return Environment(machine, torch.__version__, tf, platform.python_version())
