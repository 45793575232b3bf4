"""The text tokenizer of an LLM checkpoint: encode, decode and the chat template.

Built on the `tokenizers` library (fast, and no transformers import at run time), from either an
HF checkpoint directory (`tokenizer.json` + `tokenizer_config.json`) or a GGUF file's metadata.
A GGUF stores only the vocabulary, merges, token types and special ids, so the HF tokenizer is
rebuilt from them the way llama.cpp reads them: `gpt2` = byte-level BPE (SmolLM2, Llama 3,
Qwen), `llama` = SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Mistral).

Chat templates are rendered the way transformers renders them (sandboxed jinja2 with the same
helpers), so a prompt is byte-identical to what the model was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from ferrum.errors import CheckpointError, InvalidInputError

if TYPE_CHECKING:
    from ferrum.loader.gguf_reader import GGUFFile

# llama.cpp token types (tokenizer.ggml.token_type).
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED = 1, 2, 3, 4
SPM_SPACE = "\u2581"  # SentencePiece's visible space

# Pre-tokenizer split patterns by `tokenizer.ggml.pre` (the ones of the model families ferrum runs).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZER_SPLITS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# Vocabularies trained with every digit split off on its own (SmolLM's tokenizer.json does this).
DIGIT_SPLIT_PRE = {"smollm"}


class Tokenizer:
    """Text <-> token ids for one model, plus its chat template and special tokens."""

    def __init__(
        self,
        backend: Backend,
        *,
        bos_token: str | None,
        eos_token: str | None,
        eos_token_ids: Sequence[int],
        chat_template: str | None,
    ) -> None:
        self._backend = backend
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id: int | None = backend.token_to_id(bos_token) if bos_token else None
        self.eos_token_ids: list[int] = list(dict.fromkeys(eos_token_ids))
        self.chat_template = chat_template
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)
        self._special_ids = {i for i, t in backend.get_added_tokens_decoder().items() if t.special}

    @classmethod
    def from_dir(cls, path: Path) -> Tokenizer:
        """The tokenizer of an HF checkpoint directory."""
        file = path / "tokenizer.json"
        if not file.exists():
            raise CheckpointError(
                f"{path}: no tokenizer.json (ferrum needs the fast tokenizer file of the model)"
            )
        try:
            backend = Backend.from_file(str(file))
        except Exception as e:
            raise CheckpointError(f"{file}: not a valid tokenizer file ({e})") from e
        config = _read_json(path / "tokenizer_config.json")
        generation = _read_json(path / "generation_config.json")
        bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
        eos_ids = _as_list(generation.get("eos_token_id"))
        eos_id = backend.token_to_id(eos) if eos else None
        if eos_id is not None:
            eos_ids.append(eos_id)
        return cls(
            backend,
            bos_token=bos,
            eos_token=eos,
            eos_token_ids=eos_ids,
            chat_template=_chat_template(path, config),
        )

    @classmethod
    def from_gguf(cls, reader: GGUFFile) -> Tokenizer:
        """The tokenizer described by a GGUF file's `tokenizer.*` metadata."""
        meta = _gguf_tokenizer_metadata(reader)
        tokens: list[str] = meta["tokens"]
        kind = meta.get("model")
        if kind == "gpt2":
            backend = _byte_level_bpe(meta)
        elif kind == "llama":
            backend = _sentencepiece_bpe(meta)
        else:
            raise CheckpointError(
                f"GGUF tokenizer model {kind!r} is not supported (supported: gpt2, llama)"
            )
        _add_gguf_special_tokens(backend, meta, byte_level=kind == "gpt2")

        def token(key: str) -> str | None:
            index = meta.get(key)
            return tokens[index] if index is not None and 0 <= index < len(tokens) else None

        bos = token("bos_token_id")
        add_bos = meta.get("add_bos_token", kind == "llama")
        add_eos = meta.get("add_eos_token", False)
        eos = token("eos_token_id")
        if add_bos or add_eos:
            _set_template_processor(backend, bos if add_bos else None, eos if add_eos else None)
        # llama.cpp stops at any end-of-generation token; Llama 3 files name eot/eom separately.
        eos_ids = [meta[k] for k in ("eos_token_id", "eot_token_id", "eom_token_id") if k in meta]
        return cls(
            backend,
            bos_token=bos,
            eos_token=eos,
            eos_token_ids=eos_ids,
            chat_template=meta.get("chat_template"),
        )

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text` (with BOS etc. when the model adds them and add_special_tokens)."""
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """The text of `ids`."""
        return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def is_special(self, token_id: int) -> bool:
        """Whether `token_id` is a special (control) token such as `<|im_end|>`."""
        return token_id in self._special_ids

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of an id (in the tokenizer's own spelling)."""
        return self._backend.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        """The id of a vocabulary entry, or None."""
        return self._backend.token_to_id(token)

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render `messages` ([{"role": ..., "content": ...}]) into the model's prompt text.
        Extra kwargs (enable_thinking, tools, ...) are visible to the template."""
        if not self.chat_template:
            raise InvalidInputError(
                "this model has no chat template; send a plain prompt (completion) instead of "
                "chat messages, or use an instruction-tuned model"
            )
        from jinja2.exceptions import TemplateError

        variables: dict[str, Any] = {
            "bos_token": self.bos_token or "",
            "eos_token": self.eos_token or "",
            **kwargs,
            "messages": [_flatten_content(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            return _compile_template(self.chat_template).render(**variables)
        except TemplateError as e:
            raise InvalidInputError(f"the chat template rejected the messages: {e}") from e


def _flatten_content(message: dict) -> dict:
    """Content given as OpenAI-style parts ([{"type": "text", "text": ...}]) becomes one string."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            raise InvalidInputError(
                f"message content part {part!r} is not text; this model only reads text parts"
            )
        texts.append(str(part.get("text", "")))
    return {**message, "content": "".join(texts)}


@cache
def _compile_template(source: str) -> Any:
    """A jinja2 template in the sandboxed environment transformers uses for chat templates."""
    import jinja2.ext
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        # Unlike jinja's own tojson this escapes no HTML characters (templates emit raw JSON).
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise CheckpointError(f"the model's chat template does not parse: {e}") from e


# --- HF directory helpers ---------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _token_text(token: Any) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as {"content": ...}."""
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _chat_template(path: Path, config: dict[str, Any]) -> str | None:
    # Newer checkpoints keep the template in its own file; older ones inline it (sometimes as a
    # list of named templates, of which "default" is the chat one).
    jinja_file = path / "chat_template.jinja"
    if jinja_file.exists():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    if template is None:
        legacy = _read_json(path / "chat_template.json")
        template = legacy.get("chat_template")
    return template if isinstance(template, str) else None


# --- GGUF helpers -----------------------------------------------------------------------------

_GGUF_KEYS = {
    "tokenizer.ggml.model": "model",
    "tokenizer.ggml.pre": "pre",
    "tokenizer.ggml.tokens": "tokens",
    "tokenizer.ggml.scores": "scores",
    "tokenizer.ggml.token_type": "token_type",
    "tokenizer.ggml.merges": "merges",
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.eot_token_id": "eot_token_id",
    "tokenizer.ggml.eom_token_id": "eom_token_id",
    "tokenizer.ggml.unknown_token_id": "unknown_token_id",
    "tokenizer.ggml.add_bos_token": "add_bos_token",
    "tokenizer.ggml.add_eos_token": "add_eos_token",
    "tokenizer.ggml.add_space_prefix": "add_space_prefix",
    "tokenizer.chat_template": "chat_template",
}


def _gguf_tokenizer_metadata(reader: GGUFFile) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, name in _GGUF_KEYS.items():
        field = reader.fields.get(key)
        if field is None:
            continue
        try:
            meta[name] = field.contents()
        except Exception as e:
            raise CheckpointError(f"GGUF tokenizer metadata {key!r} is unreadable ({e})") from e
    if not meta.get("tokens"):
        raise CheckpointError("the GGUF file has no tokenizer (tokenizer.ggml.tokens is missing)")
    return meta


@cache
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies are spelled in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _merges(meta: dict[str, Any], vocab: dict[str, int]) -> list[tuple[str, str]]:
    if meta.get("merges"):
        return [tuple(m.split(" ", 1)) for m in meta["merges"]]  # type: ignore[misc]
    # SentencePiece files carry scores instead of merges: every split of a token into two
    # vocabulary entries is a merge, ranked by the merged token's score (highest first).
    scores = meta.get("scores") or [-float(i) for i in range(len(meta["tokens"]))]
    ranked = []
    for token, score in zip(meta["tokens"], scores):
        pairs = [
            (token[:i], token[i:])
            for i in range(1, len(token))
            if token[:i] in vocab and token[i:] in vocab
        ]
        pairs.sort(key=lambda p: (vocab[p[0]], vocab[p[1]]))
        ranked += [(score, left, right) for left, right in pairs]
    ranked.sort(key=lambda m: (m[0], len(m[1]), len(m[2])), reverse=True)
    return [(left, right) for _, left, right in ranked]


def _byte_level_bpe(meta: dict[str, Any]) -> Backend:
    alphabet = _byte_alphabet()
    spelled = set(alphabet.values())
    vocab: dict[str, int] = {}
    for index, token in enumerate(meta["tokens"]):
        if not set(token) <= spelled:  # a token written as raw text: respell it in the alphabet
            token = "".join(alphabet[b] for b in token.encode("utf-8"))
        vocab[token] = index
    model = models.BPE(vocab=vocab, merges=_merges(meta, vocab), fuse_unk=False)
    backend = Backend(model)
    add_prefix = bool(meta.get("add_space_prefix", False))
    pre = meta.get("pre")
    if pre in PRE_TOKENIZER_SPLITS:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(PRE_TOKENIZER_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=add_prefix, use_regex=False),
            ]
        )
    elif pre in DIGIT_SPLIT_PRE:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=add_prefix, use_regex=True),
            ]
        )
    else:  # GPT-2's own split pattern (what llama.cpp uses for an unknown pre-tokenizer)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix)
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece_bpe(meta: dict[str, Any]) -> Backend:
    tokens = meta["tokens"]
    vocab = {token: index for index, token in enumerate(tokens)}
    unk_id = meta.get("unknown_token_id")
    unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
    model = models.BPE(
        vocab=vocab, merges=_merges(meta, vocab), unk_token=unk, fuse_unk=True, byte_fallback=True
    )
    backend = Backend(model)
    add_prefix = bool(meta.get("add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement=SPM_SPACE, prepend_scheme="first" if add_prefix else "never", split=False
    )
    steps = [decoders.Replace(SPM_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _add_gguf_special_tokens(backend: Backend, meta: dict[str, Any], byte_level: bool) -> None:
    """Control tokens become special added tokens and user-defined ones (`<think>`) plain added
    tokens, so both are matched whole in text instead of being cut into pieces."""
    spelled = set(_byte_alphabet().values())
    special, plain = [], []
    for token, kind in zip(meta["tokens"], meta.get("token_type") or ()):
        if kind in (TOKEN_CONTROL, TOKEN_UNKNOWN) and (not byte_level or set(token) <= spelled):
            special.append(AddedToken(token, special=True, normalized=False))
        elif kind == TOKEN_USER_DEFINED and backend.token_to_id(token) is not None:
            plain.append(AddedToken(token, special=False, normalized=False))
    if special:
        backend.add_special_tokens(special)
    if plain:
        backend.add_tokens(plain)


def _set_template_processor(backend: Backend, bos: str | None, eos: str | None) -> None:
    pieces = {"bos": f"{bos}:0 " if bos else "", "eos": f" {eos}:0" if eos else ""}
    ids = [(t, backend.token_to_id(t)) for t in (bos, eos) if t]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{pieces['bos']}$A:0{pieces['eos']}",
        pair=f"{pieces['bos']}$A:0{pieces['eos']} {pieces['bos']}$B:1{pieces['eos']}",
        special_tokens=list(dict.fromkeys(ids)),
    )
