"""Per-layer KV cache with the verbs speculative decoding needs: `trim` and `keep`."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx


class KVCache:
    """Keys/values of one attention layer, shape (B, n_kv_heads, capacity, head_dim).

    Grows in steps of `step` slots; `offset` is the number of valid entries.
    """

    step = 256

    def __init__(self):
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array):
        B, H, L, D = keys.shape
        need = self.offset + L
        if self.keys is None or need > self.keys.shape[2]:
            capacity = ((need + self.step - 1) // self.step) * self.step
            new_k = mx.zeros((B, H, capacity, D), keys.dtype)
            new_v = mx.zeros((B, H, capacity, values.shape[3]), values.dtype)
            if self.keys is not None and self.offset:
                new_k[..., : self.offset, :] = self.keys[..., : self.offset, :]
                new_v[..., : self.offset, :] = self.values[..., : self.offset, :]
            self.keys, self.values = new_k, new_v
        self.keys[..., self.offset : need, :] = keys
        self.values[..., self.offset : need, :] = values
        self.offset = need
        return self.keys[..., :need, :], self.values[..., :need, :]

    def trim(self, n: int) -> int:
        """Drop the last `n` entries; returns how many were dropped."""
        n = min(self.offset, max(0, n))
        self.offset -= n
        return n

    def keep(self, prefix: int, tail: Sequence[int]) -> None:
        """Keep entries 0..prefix-1 and then the entries at slots `tail` (ascending), moved up.

        The prefix is not touched; only the tail is gathered. This is how a verified tree
        collapses to its accepted path with no recomputation (cost independent of context).
        """
        tail = list(tail)
        while tail and tail[0] == prefix:  # already in place
            prefix += 1
            tail.pop(0)
        if tail:
            idx = mx.array(tail)
            k_tail = self.keys[..., idx, :]
            v_tail = self.values[..., idx, :]
            self.keys[..., prefix : prefix + len(tail), :] = k_tail
            self.values[..., prefix : prefix + len(tail), :] = v_tail
        self.offset = prefix + len(tail)

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes


def make_cache(num_layers: int) -> list[KVCache]:
    return [KVCache() for _ in range(num_layers)]


def cache_state(caches: list[KVCache]) -> list[mx.array]:
    """Arrays to `mx.eval` so a cache update is materialized."""
    return [a for c in caches if c.keys is not None for a in (c.keys, c.values)]
