"""Turning logits into the distribution a step samples from (temperature, top-p)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..config import SamplingConfig


def target_distribution(logits: mx.array, sampling: SamplingConfig) -> mx.array:
    """Rows of probabilities (..., vocab) after temperature and top-p (nucleus) filtering."""
    probs = mx.softmax(logits.astype(mx.float32) / sampling.temperature, axis=-1)
    if sampling.top_p >= 1.0:
        return probs
    order = mx.argsort(-probs, axis=-1)
    sorted_p = mx.take_along_axis(probs, order, axis=-1)
    # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
    keep_sorted = (mx.cumsum(sorted_p, axis=-1) - sorted_p) < sampling.top_p
    keep = mx.put_along_axis(mx.zeros_like(keep_sorted), order, keep_sorted, axis=-1)
    probs = mx.where(keep, probs, 0.0)
    return probs / probs.sum(axis=-1, keepdims=True)


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token from a probability vector by inverse CDF: exactly one uniform per token."""
    return sample_at(probs, rng.random())


def sample_at(probs: np.ndarray, u: float) -> int:
    """The inverse CDF at `u` in [0, 1) (float64 sums: the reference every path agrees with)."""
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
    i = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(i, len(cdf) - 1)


def sample_at_on_device(probs: mx.array, u: float) -> mx.array:
    """`sample_at` on device (float32 sums): equal to it except when `u` falls within rounding
    of a CDF boundary; callers check against `sample_at` and redo the rare miss."""
    cdf = mx.cumsum(probs)
    i = mx.sum(cdf <= u * cdf[-1])
    return mx.minimum(i, probs.shape[-1] - 1)
