"""Distil the target's recorded distributions into the draft, in interruptible slices.

Sparse update (PockEngine): only LoRA factors on the draft's last blocks train. The frozen prefix
(embedding + earlier blocks) runs once per recorded sequence under `mx.stop_gradient` and its
hidden states are reused every epoch, so no step runs or back-propagates through it.
Loss: forward KL from the target's top-k (renormalised) to the draft's full softmax, averaged
over the recorded positions of a sequence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from ..config import AdaptConfig
from ..errors import CanopyError
from .lora import Adapter, LoRATail, last_layers
from .record import Sequence


@dataclass(frozen=True)
class AdaptProgress:
    """One slice done. Losses are mean KL per position (nats); agreement is the share of
    held-out positions where the draft's argmax equals the target's (an acceptance proxy)."""

    slice: int
    epoch: int
    steps: int  # optimizer steps so far
    train_loss: float
    holdout_loss: float | None  # set on slices that end an epoch
    holdout_agreement: float | None
    seconds: float  # since the start
    finished: bool = False
    cancelled: bool = False


@dataclass
class Batch:
    hidden: mx.array  # (1, T, D) frozen-prefix hidden states
    positions: mx.array  # (n,)
    topk_ids: mx.array  # (n, k)
    target_p: mx.array  # (n, k) renormalised over the kept k
    target_top1: mx.array  # (n,)


class Trainer:
    """LoRA distillation of one draft model on recorded sequences (see module docstring)."""

    def __init__(self, model, train: list[Sequence], holdout: list[Sequence],
                 config: AdaptConfig | None = None, initial: Adapter | None = None):
        self.config = config = config or AdaptConfig()
        if not train or not holdout:
            raise CanopyError("Adaptation needs at least two recorded generations (one is held "
                              "out to judge the adapters); chat some more, then adapt.")
        self.model = model
        layers = last_layers(model, config.layers)
        self.first = layers[0]
        self.tail = LoRATail(model, layers, config.rank, config.scale, config.seed)
        if initial is not None and self.tail.compatible(initial):
            self.tail.load_adapter(initial)  # continue from the adopted adapter
        self.optimizer = optim.Adam(learning_rate=config.learning_rate)
        self.train_set, self.holdout_set = train, holdout
        self._batches: dict[int, Batch] = {}
        self.rng = np.random.default_rng(config.seed)
        self.baseline = self.evaluate(holdout)  # the draft as used now
        self.best = self.baseline
        self.best_adapter: Adapter | None = None
        self._value_and_grad = nn.value_and_grad(self.tail, self._loss)

    @property
    def trainable_parameters(self) -> int:
        return sum(a.size for _, a in _flat(self.tail.trainable_parameters()))

    def _batch(self, seq: Sequence) -> Batch:
        key = id(seq)
        if key not in self._batches:
            end = int(seq.positions.max()) + 1
            h = self.model.embed(mx.array(seq.ids[None, :end]))
            for block in self.model.layers[: self.first]:
                h = block(h, "causal", None)
            h = mx.stop_gradient(h)
            logp = mx.array(seq.topk_logprobs.astype(np.float32))
            ids = mx.array(seq.topk_ids)
            top1 = mx.take_along_axis(ids, mx.argmax(logp, axis=-1)[:, None], axis=-1)[:, 0]
            batch = Batch(h, mx.array(seq.positions), ids, mx.softmax(logp, axis=-1), top1)
            mx.eval(batch.hidden, batch.target_p, batch.target_top1)
            self._batches[key] = batch
        return self._batches[key]

    def _logits(self, b: Batch) -> mx.array:
        h = self.tail(b.hidden)[0, b.positions]  # (n, D)
        return self.model.head(h[None])[0].astype(mx.float32)  # (n, vocab)

    def _loss(self, b: Batch) -> mx.array:
        logits = self._logits(b)
        logq = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        q_k = mx.take_along_axis(logq, b.topk_ids, axis=-1)
        p = b.target_p
        return (p * (mx.log(mx.maximum(p, 1e-12)) - q_k)).sum(axis=-1).mean()

    def evaluate(self, seqs: list[Sequence]) -> tuple[float, float]:
        """(mean KL per position, argmax agreement) of the draft with the current adapters."""
        loss = agree = n = 0.0
        for seq in seqs:
            b = self._batch(seq)
            logits = self._logits(b)
            k = len(seq)
            loss += self._loss(b).item() * k
            agree += (mx.argmax(logits, axis=-1) == b.target_top1).sum().item()
            n += k
        return loss / n, agree / n

    def step(self, seq: Sequence) -> float:
        loss, grads = self._value_and_grad(self._batch(seq))
        self.optimizer.update(self.tail, grads)
        mx.eval(self.tail.parameters(), self.optimizer.state, loss)
        return loss.item()

    def slices(self, should_stop: Callable[[], bool] | None = None) -> Iterator[AdaptProgress]:
        """Train until early stopping or `max_epochs`, yielding after every slice.

        `should_stop` is checked before every optimizer step; stopping (or closing the
        generator) leaves the draft untouched and `best_adapter` the best one so far.
        """
        cfg, stop = self.config, should_stop or (lambda: False)
        start, steps, index, bad = time.perf_counter(), 0, 0, 0
        for epoch in range(1, cfg.max_epochs + 1):
            order = self.rng.permutation(len(self.train_set))
            losses = []
            for i, j in enumerate(order):
                if stop():
                    yield AdaptProgress(index, epoch, steps, _mean(losses), None, None,
                                        time.perf_counter() - start, True, True)
                    return
                losses.append(self.step(self.train_set[j]))
                steps += 1
                last = i == len(order) - 1
                if (i + 1) % cfg.steps_per_slice and not last:
                    continue
                held = self.evaluate(self.holdout_set) if last else None
                done = False
                if held is not None:
                    if held[0] < self.best[0]:
                        self.best, self.best_adapter, bad = held, self.tail.adapter(), 0
                    else:
                        bad += 1
                    done = bad > cfg.patience or epoch == cfg.max_epochs
                yield AdaptProgress(index, epoch, steps, _mean(losses),
                                    held[0] if held else None, held[1] if held else None,
                                    time.perf_counter() - start, done)
                index += 1
                losses = []
                if done:
                    return


def _mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def _flat(tree):
    from mlx.utils import tree_flatten

    return tree_flatten(tree)
