"""What a benchmark sends: datasets of prompts with output lengths, and request arrival times.

Three datasets, the same for the in-process and the HTTP benchmark:
- `random`: prompts of random token ids, lengths drawn uniformly from a range;
- `shared-prefix`: one random prefix common to every prompt, then a random suffix (what a
  prefix cache is for: a long system prompt, few-shot examples);
- `jsonl`: one `{"prompt": "...", "output_len": N}` object a line (output_len optional).
Everything is drawn from one seeded generator, so a seed names the same work for ferrum and for
its baseline, and the first n requests are the same whatever n is.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ferrum.errors import InvalidInputError

DATASETS = ("random", "shared-prefix", "jsonl")
SWEEP_MIN_REQUESTS = 8  # requests per closed-loop level at least ...
SWEEP_ROUNDS = 4  # ... and this many per client (a level needs several turnovers per slot)
DEFAULT_SHARED_PREFIX_TOKENS = 256  # prefix length of the shared-prefix dataset
# Token ids of random prompts for a server whose vocabulary the client cannot see are drawn
# below this; every tokenizer in use has at least this many tokens (256 byte tokens).
ONLINE_RANDOM_VOCAB = 256


@dataclass(frozen=True)
class LengthRange:
    """A token count, fixed (`128`) or drawn uniformly from an inclusive range (`100:1024`)."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str | int, flag: str = "length") -> LengthRange:
        parts = str(text).strip().split(":")
        try:
            bounds = [int(p) for p in parts]
        except ValueError:
            bounds = []
        if len(bounds) not in (1, 2) or min(bounds) < 1 or bounds[0] > bounds[-1]:
            raise InvalidInputError(
                f"{flag} must be a positive token count (128) or a range LOW:HIGH (100:1024) "
                f"with LOW <= HIGH; got {text!r}"
            )
        return cls(bounds[0], bounds[-1])

    def draw(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


@dataclass
class BenchRequest:
    """One request of a workload: its prompt (token ids, or text from a JSONL file) and how many
    tokens it must generate (EOS is ignored, so it generates exactly that many)."""

    prompt: str | list[int]
    output_len: int

    @property
    def input_len(self) -> int | None:
        """Prompt tokens, when the prompt is token ids (text is counted by the tokenizer)."""
        return len(self.prompt) if isinstance(self.prompt, list) else None


@dataclass(frozen=True)
class WorkloadSpec:
    """A dataset and its parameters: enough to produce the same requests again."""

    dataset: str = "random"
    input_len: LengthRange = LengthRange(100, 1024)
    output_len: LengthRange = LengthRange(100, 1024)
    seed: int = 0
    vocab_size: int = ONLINE_RANDOM_VOCAB  # token ids are drawn from [0, vocab_size)
    prefix_len: int = DEFAULT_SHARED_PREFIX_TOKENS  # shared-prefix only
    dataset_path: str | None = None  # jsonl only

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise InvalidInputError(
                f"unknown dataset {self.dataset!r}; use one of {', '.join(DATASETS)}"
            )
        if self.dataset == "jsonl" and not self.dataset_path:
            raise InvalidInputError("the jsonl dataset needs --dataset-path FILE.jsonl")
        if self.vocab_size < 1:
            raise InvalidInputError("the vocabulary size must be at least 1")
        if self.dataset == "shared-prefix" and self.prefix_len < 1:
            raise InvalidInputError("--prefix-len must be at least 1 for the shared-prefix dataset")

    def requests(self, n: int, phase: str = "") -> list[BenchRequest]:
        """The first `n` requests of this workload. Lengths depend on the seed alone; token ids
        also on `phase`, so that each phase of a run (a concurrency level, a repeat) sends the
        same amount of work in fresh prompts, which a prefix cache filled by an earlier phase
        cannot serve."""
        lengths = random.Random(self.seed)
        if self.dataset == "jsonl":
            return _jsonl_requests(Path(self.dataset_path or ""), n, self.output_len, lengths)
        ids = random.Random(f"{self.seed}/{phase}")
        prefix: list[int] = []
        if self.dataset == "shared-prefix":
            prefix = _random_ids(ids, self.prefix_len, self.vocab_size)
        out = []
        for _ in range(n):
            input_len, output_len = self.input_len.draw(lengths), self.output_len.draw(lengths)
            prompt = prefix + _random_ids(ids, input_len, self.vocab_size)
            out.append(BenchRequest(prompt, output_len))
        return out

    def describe(self) -> dict:
        """The workload as it goes into a report."""
        d = {
            "dataset": self.dataset,
            "input_len": str(self.input_len),
            "output_len": str(self.output_len),
            "seed": self.seed,
            "ignore_eos": True,
            "sampling": "greedy",
        }
        if self.dataset == "shared-prefix":
            d["prefix_len"] = self.prefix_len
        if self.dataset == "jsonl":
            d["dataset_path"] = self.dataset_path
        else:
            d["token_ids_below"] = self.vocab_size
        return d


def _random_ids(rng: random.Random, n: int, vocab_size: int) -> list[int]:
    return [rng.randrange(vocab_size) for _ in range(n)]


def _jsonl_requests(
    path: Path, n: int, output_len: LengthRange, rng: random.Random
) -> list[BenchRequest]:
    """Requests from a JSONL file, in file order, cycling when `n` exceeds the lines."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as e:
        raise InvalidInputError(f"cannot read the dataset {path}: {e.strerror}") from None
    if not lines:
        raise InvalidInputError(f"the dataset {path} has no lines")
    rows: list[BenchRequest] = []
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInputError(f"{path}:{number}: not JSON ({e.msg})") from None
        prompt = item.get("prompt") if isinstance(item, dict) else None
        if not isinstance(prompt, str) or not prompt:
            raise InvalidInputError(f'{path}:{number}: each line needs {{"prompt": "non-empty"}}')
        length = item.get("output_len")
        if length is not None and (not isinstance(length, int) or length < 1):
            raise InvalidInputError(f"{path}:{number}: output_len must be a positive integer")
        rows.append(BenchRequest(prompt, length or output_len.draw(rng)))
    return [rows[i % len(rows)] for i in range(n)]


def sweep_size(concurrency: int, num_prompts: int, sweep_prompts: int | None = None) -> int:
    """Requests sent at one closed-loop level: `sweep_prompts` when given, else enough turnovers
    per client within `num_prompts`, and never fewer than the concurrency itself."""
    if sweep_prompts is not None:
        return sweep_prompts
    wanted = max(SWEEP_MIN_REQUESTS, SWEEP_ROUNDS * concurrency)
    return max(concurrency, min(num_prompts, wanted))


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """Send times (seconds from the start) of `n` requests arriving as a Poisson process of
    `rate` requests per second; all at 0 for an infinite rate."""
    if rate <= 0:
        raise InvalidInputError("--request-rate must be positive (inf: all at once)")
    if rate == float("inf"):
        return [0.0] * n
    rng = random.Random(seed)
    t, times = 0.0, []
    for _ in range(n):
        times.append(t)
        t += rng.expovariate(rate)
    return times
