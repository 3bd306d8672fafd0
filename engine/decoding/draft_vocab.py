"""A draft that scores only part of the vocabulary (FR-Spec, Zhao et al. 2025).

With a 152k-token vocabulary the LM head is a large share of a small draft's forward on a CPU.
The draft computes logits over a subset only: the lowest ids (BPE ids are roughly in merge order,
i.e. frequency order: a data-free proxy for the most frequent tokens), the special / added
tokens, and every token of the conversation so far (identifiers in the user's code stay
draftable). The target verifies with its full vocabulary, so the output does not change: greedy
ids equal the target's; a sampled draft token is drawn from q = softmax over the subset (zero
elsewhere) and acceptance uses exactly that q (DraftModel.over_vocab, verify.accept_sampled).
"""

from __future__ import annotations

from collections.abc import Iterable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..config import DRAFT_VOCAB_AUTO_ABOVE, DRAFT_VOCAB_AUTO_ROWS

QUANTIZED = (nn.QuantizedLinear, nn.QuantizedEmbedding)


def low_rows(setting: str | int, vocab: int) -> int | None:
    """Rows of the low-id block for a `draft_vocab` setting, or None: the full head."""
    if setting == "full":
        return None
    if setting == "auto":
        return DRAFT_VOCAB_AUTO_ROWS if vocab > DRAFT_VOCAB_AUTO_ABOVE else None
    return int(setting) if setting < vocab else None


def make_subset(model, setting: str | int, special: Iterable[int] = (),
                limit: int | None = None) -> DraftVocab | None:
    """The subset a `draft_vocab` setting gives this draft model, or None: its full head."""
    rows = low_rows(setting, model.args.vocab_size)
    return None if rows is None else DraftVocab(model, rows, special, limit)


def special_ids(tokenizer) -> list[int]:
    """Ids of the tokenizer's added / special tokens and its end-of-sequence tokens."""
    if tokenizer is None:
        return []
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    ids = set(getattr(inner, "added_tokens_decoder", None) or {})
    ids |= set(getattr(inner, "all_special_ids", None) or [])
    ids |= set(getattr(tokenizer, "eos_token_ids", None) or [])
    return sorted(int(i) for i in ids)


def head_module(model) -> nn.Module:
    """The module whose rows are the output vocabulary (the embedding when tied)."""
    return model.model.embed_tokens if model.args.tie_word_embeddings else model.lm_head


def head_rows(head: nn.Module, rows) -> dict[str, mx.array]:
    """The head's parameters restricted to `rows` (a slice, or an index array). Quantized
    heads keep their packed rows with the matching scales and biases."""
    names = ("weight", "scales", "biases") if isinstance(head, QUANTIZED) else ("weight",)
    params = {n: head[n][rows] for n in names if n in head}
    if isinstance(head, nn.Linear | nn.QuantizedLinear) and "bias" in head:
        params["bias"] = head["bias"][rows]
    return params


def apply_rows(head: nn.Module, params: dict[str, mx.array], x: mx.array) -> mx.array:
    """Logits of `x` (..., hidden) over the rows in `params`."""
    if isinstance(head, QUANTIZED):
        y = mx.quantized_matmul(
            x, params["weight"], scales=params["scales"], biases=params.get("biases"),
            transpose=True, group_size=head.group_size, bits=head.bits, mode=head.mode,
        )
    else:
        y = x @ params["weight"].T
    return y + params["bias"] if "bias" in params else y


class DraftVocab:
    """The rows a draft scores: ids [0, low) plus `extra` ids (special and conversation tokens,
    in the order they joined), local index j meaning id `ids[j]`; all below `limit` (ids the
    target has)."""

    def __init__(self, model, low: int, always: Iterable[int] = (), limit: int | None = None):
        self.model = model
        self.head = head_module(model)
        self.limit = min(limit or model.args.vocab_size, model.args.vocab_size)
        self.low = min(low, self.limit)
        self.extra: list[int] = []
        self.extra_set: set[int] = set()
        self.extra_params: dict[str, mx.array] | None = None
        self.ids = np.arange(self.low)
        self.include(always)

    def __len__(self) -> int:
        return len(self.ids)

    def include(self, ids: Iterable[int]) -> None:
        """Make `ids` draftable (ids below `low`, or the target lacks, need nothing)."""
        new = sorted({int(t) for t in ids if self.low <= t < self.limit} - self.extra_set)
        if not new:
            return
        # appended, never re-sorted: a local index keeps its token while a step's carried
        # draft distributions (engine.decoding.pipeline) still refer to it
        self.extra_set.update(new)
        self.extra += new
        self.extra_params = head_rows(self.head, mx.array(self.extra, dtype=mx.int32))
        mx.eval(self.extra_params)  # gathered once, not on every forward
        self.ids = np.concatenate([np.arange(self.low), np.array(self.extra)])

    def logits(self, h: mx.array) -> mx.array:
        """Logits (..., len(self)) of the last block's output `h` (before the final norm)."""
        x = self.model.model.norm(h)
        low = apply_rows(self.head, head_rows(self.head, slice(0, self.low)), x)
        if self.extra_params is None:
            return low
        return mx.concatenate([low, apply_rows(self.head, self.extra_params, x)], axis=-1)
