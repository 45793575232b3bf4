"""The LLaMA decoder (also Mistral, and the base of Qwen2/Qwen3) as a plain module over the
paged KV cache.

Pre-norm blocks: x + attn(norm(x)), then + mlp(norm(x)); the residual add is folded into the
next norm call (`norm(x, residual)`) so a fused kernel can replace both. q/k/v and gate/up are
each one fused matmul, filled from the separate checkpoint tensors at load time (see `map_name`).
The whole batch is one flat sequence of T new tokens; `AttentionMetadata` says which rows belong
to which sequence and where their cached context lives. Variants differ only by config flags:
q/k/v bias (Qwen2), per-head q/k RMSNorm before rope (Qwen3), o/MLP biases, tied embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from ferrum.kernels import interpreting
from ferrum.layers.activation import SiluAndMul
from ferrum.layers.attention import Attention, AttentionMetadata
from ferrum.layers.linear import TILE_ROWS, gate_up_linear, linear, project, qkv_linear
from ferrum.layers.norm import RMSNorm
from ferrum.layers.rotary import RotaryEmbedding
from ferrum.models.config import TransformerConfig

# Checkpoint projection name -> (our fused projection, shard id inside it).
FUSED_PROJECTIONS: dict[str, tuple[str, str | int]] = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}
# Computed rope tables some checkpoints carry; ours is rebuilt, never loaded.
IGNORED_SUFFIX = "rotary_emb.inv_freq"


class LlamaAttention(nn.Module):
    """Fused qkv projection, then (in `Attention.forward_qkv`) optional q/k norm, rope and paged
    attention, then the output projection."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = config.num_heads, config.num_kv_heads
        self.head_dim = config.head_dim
        self.qkv_proj = qkv_linear(
            config.hidden_size,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            config.attention_bias,
        )
        self.o_proj = nn.Linear(
            self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_out_bias
        )
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps) if config.qk_norm else None
        self.attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.head_dim**-0.5)
        self.tile_gemm = False  # EngineConfig.tile_gemm: decode batches on the tile GEMM

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        qkv = project(self.qkv_proj, x, self.tile_gemm)
        return project(self.o_proj, self.attend(qkv, cos, sin, meta), self.tile_gemm)

    def attend(
        self, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        """(T, H+2Hkv * D) projections -> (T, H * D) attention output, before o_proj."""
        tokens = qkv.shape[0]
        qkv = qkv.view(tokens, -1, self.head_dim)  # (T, H+2Hkv, D)
        out = self.attn.forward_qkv(qkv, cos, sin, meta, self.q_norm, self.k_norm)  # (T, H, D)
        return out.reshape(tokens, -1)


class LlamaMLP(nn.Module):
    """down(silu(gate(x)) * up(x)) with gate and up as one matmul."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.gate_up_proj = gate_up_linear(
            config.hidden_size, config.intermediate_size, config.mlp_bias
        )
        self.act_fn = SiluAndMul()
        self.down_proj = nn.Linear(
            config.intermediate_size, config.hidden_size, bias=config.mlp_bias
        )
        self.tile_gemm = False  # EngineConfig.tile_gemm: decode batches on the tile GEMM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = project(self.gate_up_proj, x, self.tile_gemm)
        return project(self.down_proj, self.act_fn(gate_up), self.tile_gemm)


class LlamaDecoderLayer(nn.Module):
    """One pre-norm block; carries the residual stream separately so norms can fuse the add.

    With `skinny` set (EngineConfig.skinny_gemm, one GPU) a step of one token (decoding a single
    sequence) runs its four projections as matrix-vector kernels with the norms and the activation
    folded in (four kernels instead of seven; `ferrum.kernels.skinny_gemm`). From two rows on,
    cuBLAS is as fast as the padded tensor-core path and the folded SiLU much slower."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)
        self.skinny = False

    def forward(
        self,
        x: torch.Tensor,  # (T, hidden): the previous block's output (or the embeddings)
        residual: torch.Tensor | None,  # (T, hidden): the stream before x was added, or None
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skinny and x.shape[0] == 1 and (x.is_cuda or interpreting()):
            return self._forward_skinny(x, residual, cos, sin, meta)
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(x, cos, sin, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual

    def _forward_skinny(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from ferrum.kernels import skinny_gemm

        attn, mlp = self.self_attn, self.mlp
        norm1, norm2 = self.input_layernorm, self.post_attention_layernorm

        def normed_linear(
            linear: nn.Linear, norm: RMSNorm, x: torch.Tensor, residual: torch.Tensor | None
        ) -> tuple[torch.Tensor, torch.Tensor]:
            out = skinny_gemm.skinny_linear(
                x, linear.weight, linear.bias, "rmsnorm", norm.weight, norm.eps, residual,
                preload=skinny_gemm.CHAIN_PRELOAD,
            )  # fmt: skip
            return (out, x) if residual is None else out  # (projection, residual stream)

        qkv, residual = normed_linear(attn.qkv_proj, norm1, x, residual)
        out = attn.attend(qkv, cos, sin, meta)
        # the o projection's first weights load while attention runs (memory idles there);
        # they also delay attention's own loads, which takes back most of what they gain
        # (H100, Llama-3.1-8B, a layer: attention 6.7 -> 9.1 us, o 14.5 -> 11.7 us)
        x = skinny_gemm.skinny_linear(
            out, attn.o_proj.weight, attn.o_proj.bias, preload=skinny_gemm.ATTENTION_PRELOAD,
            num_stages=skinny_gemm.ATTENTION_STAGES,
        )  # fmt: skip
        gate_up, residual = normed_linear(mlp.gate_up_proj, norm2, x, residual)
        down = mlp.down_proj
        down_out = skinny_gemm.skinny_linear(
            gate_up, down.weight, down.bias, "silu_mul", preload=skinny_gemm.CHAIN_PRELOAD
        )
        return down_out, residual


class LlamaModel(nn.Module):
    """Embeddings, the decoder stack and the final norm (HF's `model.` prefix)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        # _weight skips reset_parameters: normal_() on a meta tensor imports torch._dynamo (1-3 s)
        self.embed_tokens = nn.Embedding(
            config.vocab_size,
            config.hidden_size,
            _weight=torch.empty(config.vocab_size, config.hidden_size),
        )
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # one table for all layers, looked up once per forward
        self.rotary_emb = RotaryEmbedding(
            config.head_dim,
            config.max_position_embeddings,
            config.rope_theta,
            config.rope_scaling,
        )

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        x, residual = self.forward_layers(input_ids, positions, meta)
        if residual is None:  # no layers at all
            return self.norm(x)
        return self.norm(x, residual)[0]

    def forward_layers(
        self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last layer's output and the residual stream it is added to (None: no layers),
        before the final norm."""
        if self.layers and self.layers[0].skinny and (input_ids.is_cuda or interpreting()):
            # the decode kernels' path: both lookups in one kernel
            from ferrum.kernels.embed_rope import embed_and_rope

            weight = self.embed_tokens.weight
            x, both = embed_and_rope(
                input_ids, positions, weight, self.rotary_emb.table(weight.dtype)
            )
            cos, sin = both[:, :1], both[:, 1:]
        else:
            x = self.embed_tokens(input_ids)  # (T, hidden)
            cos, sin = self.rotary_emb(positions, x.dtype)  # (T, 1, D) each
        residual: torch.Tensor | None = None
        for layer in self.layers:
            x, residual = layer(x, residual, cos, sin, meta)
        return x, residual


class LlamaForCausalLM(nn.Module):
    """LLaMA-family causal LM: `forward` gives final hidden states, `compute_logits` the logits
    of the rows the caller picks (usually each sequence's last token)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        # tied: the logits reuse the embedding matrix, so there is no separate parameter
        self.lm_head = (
            None
            if config.tie_word_embeddings
            else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        self._argmax_word: torch.Tensor | None = None  # the greedy kernels', made at first use
        self.tile_gemm = False  # EngineConfig.tile_gemm: the logits of decode batches too

    def forward(
        self,
        input_ids: torch.Tensor,  # (T,) int64: the flat batch of new tokens
        positions: torch.Tensor,  # (T,) int64: each token's position in its sequence
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # (T, hidden): final hidden states, after the last norm
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, hidden) -> (N, vocab) float32."""
        return linear(hidden, self._lm_weight(), None, self.tile_gemm).float()

    def forward_greedy(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        meta: AttentionMetadata,
        logits: torch.Tensor,
        tokens: torch.Tensor,
    ) -> bool:
        """For one sequence on the skinny path, the whole step: the layers, then into `logits`
        (1, vocab) float32 the logits and into `tokens` (1,) their argmax, with the final norm
        folded into one product that writes float32 and folds its programs' maxima into one
        word, which a one-thread kernel turns into the token (`ferrum.kernels.logits`). False
        (nothing run) anywhere else: the caller takes the generic way."""
        layers = self.model.layers
        skinny = len(layers) > 0 and layers[0].skinny
        if not (skinny and self._plain_head() and input_ids.shape[0] == 1):
            return False
        if not (input_ids.is_cuda or interpreting()):
            return False
        from ferrum.kernels.logits import logits_and_greedy

        x, residual = self.model.forward_layers(input_ids, positions, meta)
        assert residual is not None  # skinny: there are layers
        norm = self.model.norm
        logits_and_greedy(
            x, self._lm_weight(), logits, tokens, (residual, norm.weight, norm.eps),
            self._argmax_words(x.device, 1),
        )  # fmt: skip
        return True

    def compute_logits_greedy(
        self, hidden: torch.Tensor, logits: torch.Tensor, tokens: torch.Tensor
    ) -> bool:
        """For a decode batch on the tile GEMM (17-64 rows): into `logits` (rows, vocab) float32
        what `compute_logits` gives, and into `tokens` (rows,) their argmax, folded in by the
        product itself (`ferrum.kernels.tile_gemm`). False (nothing run) anywhere else."""
        rows = hidden.shape[0]
        if not (self.tile_gemm and rows in TILE_ROWS and self._plain_head()):
            return False
        if not (hidden.is_cuda or interpreting()):
            return False
        from ferrum.kernels.logits import tokens_from_words
        from ferrum.kernels.tile_gemm import tile_linear

        words = self._argmax_words(hidden.device, rows)
        tile_linear(hidden, self._lm_weight(), None, out=logits, argmax_word=words)
        tokens_from_words(words, tokens)
        return True

    def _plain_head(self) -> bool:
        # not where compute_logits was replaced (a quantized or tensor-parallel head)
        return "compute_logits" not in vars(self) and (
            self.lm_head is None or type(self.lm_head) is nn.Linear
        )

    def _argmax_words(self, device: torch.device, rows: int) -> torch.Tensor:
        """The first `rows` of the model's argmax words (one set per model, made at first use:
        the graphs capture its address; the kernels leave it reset)."""
        from ferrum.kernels.logits import argmax_word

        words = self._argmax_word
        if words is None or words.device != device:
            words = self._argmax_word = argmax_word(device, TILE_ROWS[-1])
        return words[:rows]

    def _lm_weight(self) -> torch.Tensor:
        # tied: the embedding matrix
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def map_name(self, name: str) -> str | tuple[str, object] | None:
        """Where an HF checkpoint tensor goes: our name, (fused name, shard), or None to skip."""
        if name.endswith(IGNORED_SUFFIX):
            return None
        if name == "lm_head.weight" and self.lm_head is None:
            return None  # some tied checkpoints still store a copy
        module_path, _, leaf = name.rpartition(".")  # ("...self_attn.q_proj", "weight")
        parent, _, last = module_path.rpartition(".")
        fused = FUSED_PROJECTIONS.get(last)
        if fused is None:
            return name
        fused_name, shard = fused
        return f"{parent}.{fused_name}.{leaf}", shard
