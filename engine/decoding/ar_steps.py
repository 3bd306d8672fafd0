"""Target-alone (root-only) passes launched one step ahead: mlx-lm's `async_eval` pattern.

While the host reads step n's token (one `.item()`), builds its event and runs the policy's
bookkeeping, the device already computes step n + 1: its one-token forward is built on step
n's lazy token and started with `mx.async_eval`. Greedy: the token is the argmax on device.
Sampled: the step's uniform is drawn from the seeded generator in advance (one per token, in
order, as before), the inverse CDF runs on device in float32, and the host checks it against
the float64 reference (`sample_at`); on the rare miss the pass ahead is redone with the
reference token, so seeded output is unchanged. Resident targets only (a streamed target
evaluates its layers inside the call).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..config import SamplingConfig
from .sampling import sample_at, sample_at_on_device, target_distribution


@dataclass
class Launched:
    """One root-only pass in flight."""

    token: mx.array  # the next token, lazy (device argmax or device inverse CDF)
    finite: mx.array  # all the pass's scores are finite (NaN/Inf: broken weights), lazy
    probs: mx.array | None = None  # sampled: the distribution it was drawn from, (vocab,)
    u: float = 0.0  # sampled: the uniform it was drawn with
    argmax: mx.array | None = None  # sampled, if asked: the greedy token (the n-gram pool's)


class ArAhead:
    """Starts root-only passes of `model` over its KV `cache` without waiting."""

    def __init__(self, model, cache, sampling: SamplingConfig, rng: np.random.Generator,
                 want_argmax: bool = False):
        self.model, self.cache, self.sampling, self.rng = model, cache, sampling, rng
        self.want_argmax = want_argmax and not sampling.greedy  # greedy: the token is the argmax
        self.redone = 0  # sampled passes ahead redone after a float32 / float64 miss

    @staticmethod
    def usable(model) -> bool:
        return not hasattr(model, "io_stats")

    def launch(self, token: int | mx.array) -> Launched:
        """Append `token` (an int, or the lazy token of the previous pass) to the cache and start
        its forward; returns the next token, lazy."""
        x = token.reshape(1, 1) if isinstance(token, mx.array) else mx.array([[token]])
        logits = self.model(x, cache=self.cache)[0, -1]  # (vocab,)
        finite = mx.all(mx.isfinite(logits))
        if self.sampling.greedy:
            out = Launched(mx.argmax(logits, axis=-1), finite)
        else:
            u = self.rng.random()
            probs = target_distribution(logits[None], self.sampling)[0]
            argmax = mx.argmax(logits, axis=-1) if self.want_argmax else None
            out = Launched(sample_at_on_device(probs, u), finite, probs, u, argmax)
        mx.async_eval(*[a for a in (out.token, out.finite, out.argmax) if a is not None])
        return out

    def read(self, now: Launched, ahead: Launched | None) -> tuple[int, Launched | None]:
        """The token of `now` (the one host sync of the step); `ahead` was launched on it and is
        redone if the host's reference token differs from the device's."""
        if now.probs is None:
            return now.token.item(), ahead
        token = sample_at(np.array(now.probs), now.u)
        if ahead is not None and token != now.token.item():
            for c in self.cache:
                c.trim(1)
            self.redone += 1
            x = mx.array([[token]])
            ahead = self._relaunch(x, ahead)
        return token, ahead

    def _relaunch(self, x: mx.array, ahead: Launched) -> Launched:
        logits = self.model(x, cache=self.cache)[0, -1]
        probs = target_distribution(logits[None], self.sampling)[0]
        finite = mx.all(mx.isfinite(logits))
        argmax = mx.argmax(logits, axis=-1) if self.want_argmax else None
        out = Launched(sample_at_on_device(probs, ahead.u), finite, probs, ahead.u, argmax)
        mx.async_eval(*[a for a in (out.token, out.finite, out.argmax) if a is not None])
        return out
