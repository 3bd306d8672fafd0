"""Acceptance curves of the cost model from the events of short generations (calibration runs):
E(N) of best-first trees, chain alpha by depth, P_ext / P_reuse of the pipeline, and the
calibration curve A(pi) of draft path probabilities."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..config import GenerationConfig
from ..decoding.stats import acceptance_by_depth
from ..events import PrefillDone, StepEvent
from . import formulas as cm


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
    """alpha_d (d = 1..k): acceptance by depth (engine.decoding.stats) over chain steps of k."""
    full = [e for e in events if len(e.tree_tokens) == k + 1]
    if not full:
        return (0.0,)
    alpha = acceptance_by_depth(full)
    return alpha + (0.0,) * (k - len(alpha))


def top_leaf(event: StepEvent) -> int:
    node, parents, probs = 0, event.tree_parents, event.tree_probs
    while kids := [i for i, p in enumerate(parents) if p == node]:
        node = max(kids, key=lambda i: probs[i])
    return node


def acceptance_from(
    tree_events: list[StepEvent],
    chain_events: list[StepEvent],
    max_nodes: int,
    k: int,
    width: int,
) -> cm.Acceptance:
    alpha = chain_alpha(chain_events, k)
    unexpanded = [
        e.accepted[-1] not in set(e.tree_parents) for e in tree_events
    ]  # the last accepted node was never expanded: the draft sees it next step (s + 1)
    ends_on_top = [e.accepted[-1] == top_leaf(e) for e in tree_events]
    # the pipeline has work when the top leaf was not expanded: it sits in the last batch
    w = width
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
