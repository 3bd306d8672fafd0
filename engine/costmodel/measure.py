"""Timing half of the cost model's calibration, measured on this machine and pair.

A draft forward over m tokens, target layers and head over n tokens (a few layers of the target,
evaluated lazily, so a target larger than memory works too), a cold read of a few target layers
(page cache bypassed), and the effective bandwidth of streamed passes (formula (4) inverted).
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..config import GenerationConfig, SamplingConfig
from ..decoding.draft_model import DraftModel
from ..decoding.draft_vocab import make_subset
from ..decoding.frontier import top_k
from ..decoding.tree import TokenTree
from ..models.cache import make_cache
from . import formulas as cm

TARGET_COUNTS = (1, 2, 4, 8, 16, 32, 48, 64)
DRAFT_COUNTS = (1, 2, 4, 8, 16, 32)


def min_seconds(fn, reps: int) -> float:
    """Fastest of `reps` after a warm-up: the curves' shape, least disturbed by other work."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def median_seconds(fn, reps: int) -> float:
    fn()  # warm-up: graph building, lazy weights, allocations
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def chain_tree(m: int) -> TokenTree:
    tree = TokenTree.with_root(11)
    for i in range(m):
        tree.add(12 + i, i, 0.5)
    return tree


def draft_forward(dm: DraftModel, tree: TokenTree, m: int, context: int, k: int) -> None:
    """One expansion of m nodes + top-k, then back to the root alone."""
    top_k(dm.expand(tree, list(range(1, m + 1)), context), k)
    dm.slot_nodes = [0]
    for c in dm.cache:
        c.trim(m)


def measure_draft(
    draft_model, counts=DRAFT_COUNTS, context: int = 64, reps: int = 3, k: int = 4
) -> cm.Curve:
    """d(m): one draft forward over m tree nodes (tree mask, positions) + top-k selection,
    over the rows the draft scores by default (GenerationConfig.draft_vocab)."""
    subset = make_subset(draft_model, GenerationConfig().draft_vocab)
    dm = DraftModel(draft_model, SamplingConfig(), subset=subset)
    dm.prefill([(7 * i) % 200 + 10 for i in range(context + 1)])
    dm.start(11)
    seconds = [
        min_seconds(partial(draft_forward, dm, chain_tree(m), m, context, k), reps) for m in counts
    ]
    return cm.Curve(tuple(float(m) for m in counts), tuple(seconds))


def _layers_pass(layers, x, mask, pos, cache) -> None:
    h = x
    for layer, c in zip(layers, cache):
        h = layer(h, mask, c, pos)
    mx.eval(h)
    for c in cache:
        c.trim(x.shape[1])


def _head_pass(model, tokens, x) -> None:
    mx.eval(model.head(model.embed(tokens) + x))


def measure_target(
    target_dir: str | Path, counts=TARGET_COUNTS, context: int = 64, layers: int = 4, reps: int = 3
) -> tuple[cm.Curve, cm.Curve]:
    """(c(n), h(n)): one target layer, and embedding + norm + head, over n tree tokens.

    Loads the target lazily and evaluates only the layers it times (a few), so this works for a
    target that does not fit in memory.
    """
    from ..formats.loader import load_model

    model = load_model(target_dir, lazy=True).model
    r = min(layers, len(model.layers))
    blocks = model.layers[:r]
    mx.eval([b.parameters() for b in blocks])
    hidden = model.args.hidden_size
    cache = make_cache(r)
    h = mx.random.normal((1, context, hidden)) * 0.1
    for b, c in zip(blocks, cache):
        h = b(h, "causal", c, None)
    mx.eval([c.keys for c in cache])
    per_layer, head = [], []
    for n in counts:
        tree = chain_tree(n - 1)
        mask, pos = tree.attention_mask(context), tree.positions(context)
        x = mx.random.normal((1, n, hidden)) * 0.1
        tokens = mx.array([tree.tokens])
        mx.eval(x, mask, pos)
        run = partial(_layers_pass, blocks, x, mask, pos, cache)
        per_layer.append(min_seconds(run, reps) / r)
        head.append(min_seconds(partial(_head_pass, model, tokens, x), reps))
    xs = tuple(float(n) for n in counts)
    return cm.Curve(xs, tuple(per_layer)), cm.Curve(xs, tuple(head))


def measure_bandwidth(target_dir: str | Path, layers: int = 4, reps: int = 2) -> float:
    """Bytes/s reading whole target layers cold (page cache dropped), as the layer store does."""
    from ..streaming.weights import drop_page_cache, index_model, read_tensors

    index = index_model(Path(target_dir))
    picks = [i for i in range(len(index.layers)) if index.layers[i]][-layers:]
    total = seconds = 0.0
    for _ in range(reps):
        for f in {t.file for i in picks for t in index.layers[i]}:
            drop_page_cache(f)
        for i in picks:
            t0 = time.perf_counter()
            arrays = read_tensors(index.layers[i], stamps=index.stamps, bypass_cache=True)
            seconds += time.perf_counter() - t0
            total += index.layer_bytes(i)
            del arrays
    return total / seconds


def measure_streamed_pass(target_dir: str | Path, budget: int, passes: int = 4) -> float:
    """Median seconds of a 1-token pass of the target streamed under `budget`, back to back."""
    from ..streaming.streamed_model import load_streamed_model

    loaded = load_streamed_model(target_dir, budget)
    try:
        model, cache = loaded.model, make_cache(loaded.num_layers)
        mx.eval(model(mx.array([[(7 * i) % 200 + 10 for i in range(32)]]), cache=cache))
        times = []
        for i in range(passes):
            t0 = time.perf_counter()
            mx.eval(model(mx.array([[20 + i]]), cache=cache))
            times.append(time.perf_counter() - t0)
        return float(np.median(times))
    finally:
        loaded.close()


def effective_bandwidth(timing: cm.Timing, budget: int, seconds: float) -> float:
    """The bandwidth B for which formula (4) gives a measured streamed 1-token pass (bisection on
    log B): storage as seen while compute shares the CPU with the IO thread."""
    lo, hi = 1e6, 1e12
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        t = cm.pass_seconds(replace(timing, read_bandwidth=mid), 1, budget, 0.0).seconds
        lo, hi = (mid, hi) if t > seconds else (lo, mid)
    return (lo * hi) ** 0.5


def layer_bytes(target_dir: str | Path) -> tuple[tuple[int, ...], int]:
    """(bytes per layer, bytes of everything else) as stored."""
    from ..streaming.weights import index_model

    index = index_model(Path(target_dir))
    per = tuple(index.layer_bytes(i) for i in range(len(index.layers)))
    return per, index.nbytes - sum(per)


def measure_timing(
    target_dir: str | Path, draft_model, *, reps: int = 3, in_situ: bool = True
) -> cm.Timing:
    """The timing half of the calibration (a few seconds; overheads are fitted later).

    Bandwidth: a cold read of a few layers, then (in_situ) the effective bandwidth of 1-token
    passes with every layer streamed, IO thread and compute sharing the machine.
    """
    per_layer, base = layer_bytes(target_dir)
    c, h = measure_target(target_dir, reps=reps)
    cold = measure_bandwidth(target_dir)
    timing = cm.Timing(
        draft_forward=measure_draft(draft_model, reps=reps),
        layer_compute=c,
        head_compute=h,
        layer_bytes=per_layer,
        base_bytes=base,
        read_bandwidth=cold,
        cold_read_bandwidth=cold,
    )
    if in_situ and per_layer:
        budget = base + (timing.prefetch + 1) * max(per_layer)
        seconds = measure_streamed_pass(target_dir, budget)
        timing = replace(timing, read_bandwidth=effective_bandwidth(timing, budget, seconds))
    return timing
