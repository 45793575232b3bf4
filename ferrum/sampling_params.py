"""Per-request sampling options, named as in vLLM so users' code carries over."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferrum.errors import InvalidInputError

# Below this temperature sampling is greedy (argmax); vLLM uses the same cut-off.
GREEDY_EPSILON = 1e-5


@dataclass
class SamplingParams:
    """How to sample one request's completion(s). Validated on construction."""

    n: int = 1  # completions per prompt
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus: smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # keep the k most likely tokens; 0 or -1 = all
    min_p: float = 0.0  # drop tokens less likely than min_p × the most likely one
    presence_penalty: float = 0.0  # subtracted once from every token already generated
    frequency_penalty: float = 0.0  # subtracted per occurrence in the generated text
    repetition_penalty: float = 1.0  # divides (or multiplies, if negative) prompt+output logits
    seed: int | None = None  # same seed, same output, whatever else is in the batch
    stop: list[str] | str | None = None  # strings that end the completion (not included)
    stop_token_ids: list[int] | None = None  # token ids that end the completion
    ignore_eos: bool = False  # keep going past the model's end-of-sequence token
    max_tokens: int | None = 256  # None = until the context is full
    logprobs: int | None = None  # return the sampled token's logprob and this many top ones
    prompt_logprobs: int | None = None  # reserved name (vLLM); prompt logprobs are not computed
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    stop_list: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stop_list = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        checks = [
            (self.n >= 1, "n must be at least 1"),
            (self.temperature >= 0, "temperature must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (or -1 for all tokens)"),
            (0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (0 < self.repetition_penalty <= 2, "repetition_penalty must be in (0, 2]"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens must be at least 1"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs must be in [0, 20]"),
            (all(s for s in self.stop_list), "stop strings must not be empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_EPSILON

    @property
    def has_penalties(self) -> bool:
        return (
            self.presence_penalty != 0
            or self.frequency_penalty != 0
            or self.repetition_penalty != 1.0
        )
