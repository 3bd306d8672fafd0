"""Calibrating the cost model on the actual machine and pair (engine.costmodel.formulas).

Timing takes a few seconds: a draft forward over m tokens, target layers and head over n tokens
(a few layers of the target, evaluated lazily, so a target larger than memory works too), and a
cold read of a few target layers (page cache bypassed). Acceptance and per-step overheads come
from short generations on calibration prompts: `ar`, `chain` and big fixed `tree`s.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..config import GenerationConfig, SamplingConfig, TreeConfig
from ..decoding.drafters import DraftModel, top_k
from ..decoding.tree import TokenTree
from ..events import PrefillDone, StepEvent
from ..models.cache import make_cache
from . import formulas as cm

TARGET_COUNTS = (1, 2, 4, 8, 16, 32, 48, 64)
DRAFT_COUNTS = (1, 2, 4, 8, 16, 32)
# full batches (no threshold): R(N) expansions exactly, and E(N) for every N up to 48
CALIBRATION_TREE = TreeConfig(max_nodes=48, max_depth=12, threshold=1e-9, adaptive=False)
CHAIN_K = 4  # the benchmark's chain length: per-forward errors then cancel in o_step


def _min_seconds(fn, reps: int) -> float:
    """Fastest of `reps` after a warm-up: the curves' shape, least disturbed by other work."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _median_seconds(fn, reps: int) -> float:
    fn()  # warm-up: graph building, lazy weights, allocations
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _chain_tree(m: int) -> TokenTree:
    tree = TokenTree.with_root(11)
    for i in range(m):
        tree.add(12 + i, i, 0.5)
    return tree


def _draft_forward(dm: DraftModel, tree: TokenTree, m: int, context: int, k: int) -> None:
    """One expansion of m nodes + top-k, then back to the root alone."""
    top_k(dm.expand(tree, list(range(1, m + 1)), context), k)
    dm.slot_nodes = [0]
    for c in dm.cache:
        c.trim(m)


def measure_draft(
    draft_model, counts=DRAFT_COUNTS, context: int = 64, reps: int = 3, k: int = 4
) -> cm.Curve:
    """d(m): one draft forward over m tree nodes (tree mask, positions) + top-k selection."""
    dm = DraftModel(draft_model, SamplingConfig())
    dm.prefill([(7 * i) % 200 + 10 for i in range(context + 1)])
    dm.start(11)
    seconds = [
        _min_seconds(partial(_draft_forward, dm, _chain_tree(m), m, context, k), reps)
        for m in counts
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
        tree = _chain_tree(n - 1)
        mask, pos = tree.attention_mask(context), tree.positions(context)
        x = mx.random.normal((1, n, hidden)) * 0.1
        tokens = mx.array([tree.tokens])
        mx.eval(x, mask, pos)
        run = partial(_layers_pass, blocks, x, mask, pos, cache)
        per_layer.append(_min_seconds(run, reps) / r)
        head.append(_min_seconds(partial(_head_pass, model, tokens, x), reps))
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


@dataclass(frozen=True)
class Probe:
    """A quick re-measurement (a second or two) of what drifts on a shared machine."""

    draft: float  # one draft forward over 1 node (+ top-k)
    target: float  # one resident 1-token target pass
    streamed: float  # one 1-token pass of the target streamed at `DriftProbe.budget`


class DriftProbe:
    """Re-measures draft, target and storage speed between benchmark prompts, so that the cost
    model predicts with the machine's speed during the run, not only at calibration time."""

    def __init__(self, target_model, draft_model, target_dir: str | Path, budget: int):
        from ..streaming.streamed_model import load_streamed_model

        self.budget = budget
        self.target = target_model
        self.draft = DraftModel(draft_model, SamplingConfig())
        self.draft.prefill([(7 * i) % 200 + 10 for i in range(65)])
        self.draft.start(11)
        self.tree = _chain_tree(1)
        self.cache = make_cache(len(target_model.layers))
        mx.eval(target_model(mx.array([[(5 * i) % 200 + 10 for i in range(64)]]), cache=self.cache))
        self.streamed = load_streamed_model(target_dir, budget)
        self.streamed_cache = make_cache(len(self.streamed.model.layers))
        mx.eval(self.streamed.model(mx.array([[10, 11, 12, 13]]), cache=self.streamed_cache))

    def _pass(self, model, cache) -> None:
        mx.eval(model(mx.array([[42]]), cache=cache))
        for c in cache:
            c.trim(1)

    def measure(self, reps: int = 3) -> Probe:
        d = _median_seconds(partial(_draft_forward, self.draft, self.tree, 1, 64, 4), reps)
        t = _median_seconds(partial(self._pass, self.target, self.cache), reps)
        s = _median_seconds(partial(self._pass, self.streamed.model, self.streamed_cache), reps)
        return Probe(d, t, s)

    def close(self) -> None:
        self.streamed.close()


def median_probe(probes: list[Probe]) -> Probe:
    return Probe(
        *(
            float(np.median([getattr(p, f) for p in probes]))
            for f in ("draft", "target", "streamed")
        )
    )


def anchored(
    timing: cm.Timing, probe: Probe, budget: int, reference: Probe | None = None
) -> cm.Timing:
    """The measured curves keep their shape; their level follows `probe`, measured at the time
    the prediction is for: d(1) = the probe's draft forward, L c(1) + h(1) = its resident pass,
    and B is refitted with (4) to its streamed pass. A shared machine's speed drifts by tens of
    percent in minutes; a one-off calibration alone would carry that drift into every error.
    With a `reference` probe (taken when `timing` was fitted), levels scale by probe / reference
    instead."""
    if reference is not None:
        ft, fd = probe.target / reference.target, probe.draft / reference.draft
    else:
        ft = probe.target / (timing.num_layers * timing.layer_compute(1) + timing.head_compute(1))
        fd = probe.draft / timing.draft_forward(1)
    scaled = replace(
        timing,
        draft_forward=timing.draft_forward.scaled(fd),
        layer_compute=timing.layer_compute.scaled(ft),
        head_compute=timing.head_compute.scaled(ft),
    )
    return replace(scaled, read_bandwidth=effective_bandwidth(scaled, budget, probe.streamed))


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


# ---- acceptance and overheads from short generations --------------------------------------------
@dataclass
class StepRecord:
    mode: str
    nodes: int
    seconds: float  # from the previous event to this one: the whole step, events included
    tree: StepEvent


def run_steps(session, ids: list[int], config: GenerationConfig) -> list[StepRecord]:
    out, last = [], None
    for event in session.generate(ids, config):
        now = time.perf_counter()
        if isinstance(event, PrefillDone):
            last = now
        elif isinstance(event, StepEvent):
            out.append(StepRecord(config.mode, len(event.tree_tokens), now - last, event))
            last = now
    return out


def first_n_accepted(event: StepEvent) -> np.ndarray:
    """cum[N - 1] = accepted draft nodes among the tree's first N nodes, N = 1..len(tree)."""
    accepted = np.zeros(len(event.tree_tokens))
    accepted[list(event.accepted[1:])] = 1
    return np.cumsum(accepted)


def tree_curve(events: list[StepEvent], max_nodes: int) -> tuple[float, ...]:
    """E(N) for N = 1..max_nodes, costmodel (6)."""
    rows = []
    for e in events:
        cum = first_n_accepted(e)
        row = [cum[min(n, len(cum)) - 1] for n in range(1, max_nodes + 1)]
        rows.append(row)
    return tuple(1.0 + float(x) for x in np.mean(rows, axis=0)) if rows else (1.0,)


def chain_alpha(events: list[StepEvent], k: int) -> tuple[float, ...]:
    """alpha_d = P(depth d accepted | depth d - 1 accepted) from chain steps of length k."""
    lengths = np.array([len(e.accepted) - 1 for e in events if len(e.tree_tokens) == k + 1])
    if lengths.size == 0:
        return (0.0,)
    alpha = []
    for d in range(1, k + 1):
        reached = (lengths >= d - 1).sum()
        alpha.append(float((lengths >= d).sum() / reached) if reached else 0.0)
    return tuple(alpha)


def top_leaf(event: StepEvent) -> int:
    node, parents, probs = 0, event.tree_parents, event.tree_probs
    while kids := [i for i, p in enumerate(parents) if p == node]:
        node = max(kids, key=lambda i: probs[i])
    return node


def acceptance_from(
    tree_events: list[StepEvent], chain_events: list[StepEvent], max_nodes: int, k: int
) -> cm.Acceptance:
    alpha = chain_alpha(chain_events, k)
    unexpanded = [
        e.accepted[-1] not in set(e.tree_parents) for e in tree_events
    ]  # the last accepted node was never expanded: the draft sees it next step (s + 1)
    ends_on_top = [e.accepted[-1] == top_leaf(e) for e in tree_events]
    # the pipeline has work when the top leaf was not expanded: it sits in the last batch
    w = CALIBRATION_TREE.expand_width
    extension = [top_leaf(e) >= 1 + w * cm.tree_rounds(len(e.tree_tokens), w) for e in tree_events]
    bins = _calibration_bins(tree_events)
    return cm.Acceptance(
        chain_alpha=alpha,
        tree_tokens=tree_curve(tree_events, max_nodes),
        start_tokens_tree=1.0 + (float(np.mean(unexpanded)) if unexpanded else 0.5),
        start_tokens_chain=1.0 + float(np.prod(alpha)),
        reuse=(float(np.mean(ends_on_top)) * alpha[0]) if ends_on_top else 0.0,
        extension=float(np.mean(extension)) if extension else 0.0,
        calibration=bins,
    )


def _calibration_bins(events: list[StepEvent]) -> tuple[tuple[float, float, float], ...]:
    """(path probability bin centre, accept rate, nodes) on log10 bins: the calibration curve."""
    edges = np.linspace(-5.0, 0.0, 11)
    seen, taken = np.zeros(10), np.zeros(10)
    for e in events:
        path_prob = [1.0] * len(e.tree_tokens)
        acc = set(e.accepted)
        for i in range(1, len(e.tree_tokens)):
            path_prob[i] = path_prob[e.tree_parents[i]] * e.tree_probs[i]
            b = int(np.clip(np.searchsorted(edges, np.log10(max(path_prob[i], 1e-12))) - 1, 0, 9))
            seen[b] += 1
            taken[b] += i in acc
    centres = 10 ** ((edges[:-1] + edges[1:]) / 2)
    return tuple((float(c), float(t / s), float(s)) for c, t, s in zip(centres, taken, seen) if s)


def formula_draft(timing: cm.Timing, acc: cm.Acceptance, rec: StepRecord, width: int) -> float:
    """Draft seconds the formulas give for one recorded step (chain scale excluded)."""
    if rec.nodes == 1:
        return 0.0
    if rec.mode == "chain":
        return cm.chain_draft_seconds(timing.draft_forward, rec.nodes - 1, acc.start_tokens_chain)
    return cm.tree_draft_seconds(timing.draft_forward, rec.nodes, width, acc.start_tokens_tree)


def fit_in_situ(
    timing: cm.Timing, acc: cm.Acceptance, records: dict[str, list[StepRecord]], width: int
) -> cm.Timing:
    """Levels and overheads from the calibration runs themselves (resident target): compute
    curves scaled so the pass formula matches the measured verify seconds, the draft curve so
    the tree formula (3) matches the measured tree draft seconds (chain: its own scale), and
    o_step per mode = median(step - draft - verify)."""

    def ratio(measured, predicted):
        m, p = sum(measured), sum(predicted)
        return m / p if p > 0 and m > 0 else 1.0

    steps = [r for rs in records.values() for r in rs]
    fv = ratio(
        [r.tree.verify_seconds for r in steps],
        [cm.pass_seconds(timing, r.nodes, None, 0.0).seconds for r in steps],
    )
    drafts = {
        m: ratio(
            [r.tree.draft_seconds for r in records[m]],
            [formula_draft(timing, acc, r, width) for r in records[m]],
        )
        for m in ("chain", "tree")
    }
    o = {
        m: float(np.median([r.seconds - r.tree.draft_seconds - r.tree.verify_seconds for r in rs]))
        for m, rs in records.items()
        if rs
    }
    return replace(
        timing,
        layer_compute=timing.layer_compute.scaled(fv),
        head_compute=timing.head_compute.scaled(fv),
        draft_forward=timing.draft_forward.scaled(drafts["tree"]),
        chain_draft_scale=drafts["chain"] / drafts["tree"],
        step_overhead=o.get("ar", 0.0),
        chain_overhead=o.get("chain"),
        tree_overhead=o.get("tree"),
        node_overhead=0.0,
    )


@dataclass(frozen=True)
class Calibration:
    """Timing (with overheads) and acceptance for one sampling setting."""

    timing: cm.Timing
    acceptance: cm.Acceptance
    seconds: float  # how long calibrating took
    probe: Probe | None = None  # median drift probe during the calibration runs

    def to_dict(self) -> dict:
        return {
            "timing": self.timing.to_dict(),
            "acceptance": self.acceptance.to_dict(),
            "seconds": self.seconds,
            "probe": self.probe and self.probe.__dict__,
        }


def calibrate(
    session,
    prompts: list[list[int]],
    timing: cm.Timing,
    sampling: SamplingConfig,
    max_tokens: int = 24,
    tree: TreeConfig = CALIBRATION_TREE,
    k: int = CHAIN_K,
    probe: DriftProbe | None = None,
) -> Calibration:
    """Acceptance and overheads from ar, chain(k) and fixed-tree runs on a resident `session`.

    The levels of the timing curves and the overheads are fitted to the runs themselves
    (`fit_in_situ`); with a `probe`, probes taken between the runs record the machine's speed
    at that time (`Calibration.probe`), the reference for later drift (`anchored`).
    """
    t0 = time.perf_counter()
    probes = []
    records: dict[str, list[StepRecord]] = {"ar": [], "chain": [], "tree": []}
    warm: dict[str, list[StepRecord]] = {"ar": [], "chain": [], "tree": []}  # first steps dropped
    for i, ids in enumerate(prompts):
        s = replace(sampling, seed=1000 + i)
        if probe is not None:
            probes.append(probe.measure())
        for mode in records:
            cfg = GenerationConfig(
                mode=mode,
                max_tokens=max_tokens,
                sampling=s,
                tree=tree,
                chain_length=k,
                pipeline=False,
            )
            steps = run_steps(session, ids, cfg)
            records[mode] += steps
            warm[mode] += steps[1:]
    acc = acceptance_from(
        [r.tree for r in records["tree"]], [r.tree for r in records["chain"]], tree.max_nodes, k
    )
    timing = fit_in_situ(timing, acc, warm, tree.expand_width)
    probed = median_probe(probes) if probes else None
    return Calibration(timing, acc, time.perf_counter() - t0, probed)
