"""Decision rules shared by the live policy (engine.costmodel.policy.StepPolicy) and the cost
model's simulation (engine.costmodel.formulas), so a prediction describes the policy that runs.

- Draft work during an IO wait: the layer store reports facts (`WaitFacts`); one more draft
  forward runs while it ends before the IO thread would run out of reads it may start without
  compute (`wait_work_fits`). Longer work would delay the target instead of hiding IO.
- Tree shape for a node budget: wide expansion rounds keep the draft forwards per step under a
  cap (`tree_shape`), so trees of hundreds of nodes cost a handful of forwards.
- A pass's cost for the policy's fit of v(N) leaves out draft work run at its waits beyond
  what the IO thread needed anyway (`pass_cost_seconds`): it belongs to the next tree.
- The policy's fits of d(m) and v(N): weighted least squares with the slope shrunk toward a
  prior (`fit_line`), so a few noisy points cannot make it up; v(1) apart from the line through
  bigger passes (`fit_passes`).
- Draft-free branches on a pass: the set pays for the seconds it adds to the pass
  (`branches_pay`); on a CPU the first extra node turns a one-token pass into a tree pass.
- Node budgets considered: up to `TreeConfig.auto_max_nodes` when the target pass is IO-bound
  (waiting for layers dominates it: verifying more nodes is nearly free), else up to
  `TreeConfig.max_nodes` (`node_limit`, `is_io_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .quantities import Curve

IO_BOUND_WAIT_SHARE = 0.5  # a pass is IO-bound when waiting for layers is at least this share


@dataclass(frozen=True)
class WaitFacts:
    """What the layer store knows while compute waits for streamed layer `layer`."""

    layer: int
    layer_bytes: int  # bytes of the awaited layer
    read_elapsed: float | None  # seconds since its read started (None: not started yet)
    room_bytes: int  # bytes the IO thread may read beyond it before compute must take a layer
    bandwidth: float | None  # bytes/s of recent reads (None: nothing read yet)
    waited: float = 0.0  # seconds since this wait started


def room_bytes(budget: int, reserved: int, prefetch: int, layer_bytes: int) -> int:
    """Read-ahead left to the IO thread: budget headroom and the prefetch queue beyond the
    awaited layer (it already holds one of the `prefetch` places)."""
    return max(0, min(budget - reserved, (prefetch - 1) * layer_bytes))


def io_busy_seconds(facts: WaitFacts) -> float:
    """Seconds the IO thread stays busy without compute: the rest of the awaited layer, then
    the reads its budget and queue still allow."""
    bw = facts.bandwidth or 0.0
    if bw <= 0:
        return math.inf
    left = facts.layer_bytes
    if facts.read_elapsed is not None:
        left = max(0.0, facts.layer_bytes - facts.read_elapsed * bw)
    return (left + facts.room_bytes) / bw


def wait_work_fits(
    facts: WaitFacts, work_seconds: float | None, calls: int, max_calls: int
) -> bool:
    """Run one more draft forward (`work_seconds`, None: not measured yet) during this wait?
    `calls`: draft forwards already run during waits of this pass, at most `max_calls`."""
    if calls >= max_calls:
        return False
    if work_seconds is None:
        return True  # run one: that measures it
    return work_seconds <= io_busy_seconds(facts)


@dataclass(frozen=True)
class TreeShape:
    nodes: int  # N, root included
    width: int  # nodes expanded per draft forward
    rounds: int  # expansion forwards after the first (the last batch is not expanded)
    children: int  # candidates taken from each expanded node (top-k)


def tree_shape(nodes: int, width: int, max_forwards: int, top_k: int = 4) -> TreeShape:
    """The shape of a best-first tree of `nodes`: batches of `width` nodes, widened so that at
    most `max_forwards` draft forwards (the first included) grow it. A wide batch needs as many
    candidates: after the first forward only the root's children exist, so each expanded node
    offers max(top_k, width) of them."""
    n = max(1, nodes)
    w = max(1, width, math.ceil((n - 1) / max(1, max_forwards)))
    return TreeShape(n, w, max(0, math.ceil((n - 1) / w) - 1), max(top_k, w))


def node_budgets(limit: int, width: int, max_forwards: int) -> list[int]:
    """Node budgets worth comparing up to `limit`: one more batch per step while batches keep
    their width, then doubling widths at the forward cap, and the limit itself."""
    out = {1 + width * (r + 1) for r in range(max(1, max_forwards))}
    w = width
    while 1 + w * max_forwards < limit:
        w *= 2
        out.add(1 + w * max_forwards)
    out.add(limit)
    return sorted(n for n in out if 2 <= n <= limit)


def pass_cost_seconds(verify: float, wait_work: float, io_busy: float | None) -> float:
    """A target pass's own seconds, for the fit of v(N): draft work run at its waits
    (`wait_work`, the next tree's cost, counted in d) taken out, but never below the IO
    thread's reading during the step (`io_busy`): a wait the work filled was the pass's."""
    if wait_work <= 0:
        return verify
    floor = verify - wait_work
    return max(floor, min(verify, io_busy)) if io_busy is not None else floor


def is_io_bound(wait_seconds: float, pass_seconds: float) -> bool:
    """Does waiting for layers dominate a target pass?"""
    return pass_seconds > 0 and wait_seconds >= IO_BOUND_WAIT_SHARE * pass_seconds


def node_limit(io_bound: bool, max_nodes: int, auto_max_nodes: int) -> int:
    """The largest node budget the auto policy considers."""
    return max(max_nodes, auto_max_nodes) if io_bound else max_nodes


def wait_forward_sizes(leaf_done: bool, width: int, rounds: int) -> list[int]:
    """Tokens of each draft forward the pipeline runs for the next step's tree, in order: the
    leaf of the most probable path (unless the draft expanded it already), the guessed bonus
    (the next tree's root), then `rounds` batches of `width` nodes."""
    return ([] if leaf_done else [1]) + [1] + [width] * rounds


def fit_line(points, prior_slope: float, prior_weight: float = 32.0) -> tuple[float, float]:
    """Weighted least squares y = a + b x over (x, y, weight), b >= 0, with the slope shrunk
    toward a prior (`prior_slope` times the mean per unit of x; `prior_weight` in units of
    weight * x^2), so a few noisy points with little spread cannot make it up. Plain Python."""
    sw = sum(p[2] for p in points)
    xm = sum(p[0] * p[2] for p in points) / sw
    ym = sum(p[1] * p[2] for p in points) / sw
    sxx = sum(p[2] * (p[0] - xm) ** 2 for p in points)
    sxy = sum(p[2] * (p[0] - xm) * (p[1] - ym) for p in points)
    b0 = prior_slope * ym / (1 + prior_slope * xm)
    b = max(0.0, (sxy + prior_weight * b0) / (sxx + prior_weight))
    return max(ym - b * xm, 0.0), b


def fit_passes(points, singles, prior_slope: float) -> tuple[Curve, float]:
    """v(N) from (nodes, seconds, weight) passes and the seconds of recent one-node passes:
    a line through the bigger passes, v(1) on its own (on a CPU a one-token pass is a
    matrix-vector product and a tree pass a matrix-matrix one: one line through both prices
    big trees at the jump from 1 to a few tokens, and hides that jump from a node added to a
    one-node pass). Returns v and the line's slope (seconds per verified node)."""
    multi = [p for p in points if p[0] > 1]
    if not singles or not multi:
        a, b = fit_line(points, prior_slope)
        return Curve.linear(a, b), b
    a, b = fit_line(multi, prior_slope)
    # their mean, not their median: a pass launched a step ahead is waited for by the step
    # before it (the decode loop reads its token then), so root-only steps alternate between
    # ~two passes' seconds and next to nothing
    v1 = sum(singles) / len(singles)
    if a + 2 * b < v1:
        # more nodes never cost less: a line at the prior slope through one big streamed pass
        # (5.1 s for 25 nodes, v(1) 5.0 s) priced a 3-node pass at 3.8 s. Through (2, v(1))
        # and the tree passes' weighted centre instead, rising or flat.
        weight = sum(w for _, _, w in multi)
        x = sum(n * w for n, _, w in multi) / weight
        y = sum(t * w for _, t, w in multi) / weight
        b = max(0.0, (y - v1) / (x - 2)) if x > 2 else 0.0
        a = v1 - 2 * b
    return Curve((1.0, 2.0, 3.0), (v1, a + 2 * b, a + 3 * b)), b


def extra_nodes_seconds(v: Curve, base: int, extra: int, single_timed: bool = True,
                        tree_timed: bool = True) -> float | None:
    """Seconds `extra` more nodes add to a pass of `base` nodes. On a one-node pass v's line
    cannot tell the jump to a tree pass until both were timed: infinite while no one-node pass
    was (`single_timed`: the step goes without them and times one), None (unknown) while no
    tree pass was (`tree_timed`: the caller may try a few nodes and time one)."""
    if extra <= 0:
        return 0.0
    if base == 1 and not single_timed:
        return math.inf
    if base == 1 and not tree_timed:
        return None
    return max(0.0, v(base + extra) - v(base))


def extra_slot_seconds(v: Curve, io_bound: bool, base: int, extra: int,
                       pass_sizes: Iterable[int], single_timed: bool) -> float | None:
    """Seconds `extra` draft-free nodes add to a pass of `base` nodes, from the timed passes'
    sizes: none while passes are IO-bound (v's slope there is noise and reads hide compute),
    else `extra_nodes_seconds` with "a tree pass was timed" read from `pass_sizes`."""
    if io_bound:
        return 0.0
    return extra_nodes_seconds(v, base, extra, single_timed, any(n > 1 for n in pass_sizes))


def branches_pay(expected_tokens: float, extra_seconds: float, rate: float) -> bool:
    """Are draft-free nodes worth their verification? They win `expected_tokens` (the sum of
    their acceptance probabilities: the expected count of them accepted) and cost
    `extra_seconds`, which would win `rate * extra_seconds` tokens at the running rate."""
    return expected_tokens >= rate * extra_seconds
