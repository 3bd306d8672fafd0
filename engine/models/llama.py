"""Llama-family decoder (Llama 2/3, SmolLM, Mistral-style) with per-token positions.

Weight names follow mlx-lm / Hugging Face (`model.layers.N.self_attn.q_proj.weight`, ...), so
mlx-community checkpoints load as they are. Unlike mlx-lm's forward, every call can take
per-token positions and an additive attention mask over (cached + new) tokens: that is what a
token tree needs (siblings share a position and must not see each other).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.rope_utils import initialize_rope


@dataclass
class ModelArgs:
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    rms_norm_eps: float
    vocab_size: int
    head_dim: int | None = None
    max_position_embeddings: int | None = None
    num_key_value_heads: int | None = None
    attention_bias: bool = False
    qkv_bias: bool = False  # Qwen2: biases on q/k/v only
    mlp_bias: bool = False
    rope_theta: float = 10000.0
    rope_traditional: bool = False
    rope_scaling: dict | None = None
    tie_word_embeddings: bool = True

    REQUIRED = (
        "hidden_size",
        "num_hidden_layers",
        "intermediate_size",
        "num_attention_heads",
        "rms_norm_eps",
        "vocab_size",
    )

    @classmethod
    def from_dict(cls, params: dict) -> ModelArgs:
        names = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in params.items() if k in names})

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads


def apply_rope(rope: nn.Module, x: mx.array, offset: int, positions: mx.array | None) -> mx.array:
    """RoPE at `offset + arange(L)`, or at explicit per-token `positions` (shape (L,)).

    mx.fast.rope takes one offset per batch row, so per-token positions move the token axis
    into the batch axis: (1, H, L, D) -> (L, H, 1, D).
    """
    if positions is None:
        return rope(x, offset=offset)
    y = rope(x.transpose(2, 1, 0, 3), offset=positions)
    return y.transpose(2, 1, 0, 3)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        dim = args.hidden_size
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5
        qkv_bias = args.attention_bias or args.qkv_bias
        self.q_proj = nn.Linear(dim, self.n_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, dim, bias=args.attention_bias)
        self.rope = initialize_rope(
            self.head_dim,
            args.rope_theta,
            args.rope_traditional,
            args.rope_scaling,
            args.max_position_embeddings,
        )

    def __call__(self, x, mask, cache, positions=None):
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        q = apply_rope(self.rope, q, offset, positions)
        k = apply_rope(self.rope, k, offset, positions)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        if isinstance(mask, mx.array) and mask.dtype != q.dtype:
            mask = mask.astype(q.dtype)  # an additive fp32 mask cannot promote to fp16/bf16
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=args.mlp_bias)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=args.mlp_bias)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=args.mlp_bias)

    def __call__(self, x):
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x, mask=None, cache=None, positions=None):
        h = x + self.self_attn(self.input_layernorm(x), mask, cache, positions)
        return h + self.mlp(self.post_attention_layernorm(h))


class Backbone(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


class Model(nn.Module):
    """Embedding, blocks and head, callable whole or piece by piece (for streamed layers)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model = Backbone(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    @property
    def layers(self) -> list[TransformerBlock]:
        return self.model.layers

    def embed(self, tokens: mx.array) -> mx.array:
        return self.model.embed_tokens(tokens)

    def head(self, h: mx.array) -> mx.array:
        h = self.model.norm(h)
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)

    def __call__(self, tokens, cache=None, positions=None, mask=None):
        """Logits for `tokens` (shape (1, L)).

        Args:
            cache: one KV cache per layer, or None.
            positions: (L,) int positions, or None for offset + arange(L).
            mask: additive (L, offset + L) mask, "causal", or None (causal when L > 1).
        """
        return self.head(self.hidden(tokens, cache, positions, mask))

    def hidden(self, tokens, cache=None, positions=None, mask=None):
        """The last block's output for `tokens`, before the final norm and the head (a draft
        with a vocabulary subset applies its own head rows: engine.decoding.draft_vocab)."""
        if mask is None and tokens.shape[1] > 1:
            mask = "causal"
        h = self.embed(tokens)
        caches = cache if cache is not None else [None] * len(self.layers)
        for layer, c in zip(self.layers, caches):
            h = layer(h, mask, c, positions)
        return h

    def sanitize(self, weights: dict) -> dict:
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.args.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
        return weights
