"""Analytical cost model: tokens/s of `ar`, `chain(k)` and `tree(N)` at any budget, before running.

One step = draft a tree of N nodes (root included), verify it in one target pass, keep the
accepted path. With E(N) the expected tokens emitted per target pass:

    T_step(N) = T_draft(N) + T_pass(N) + o_step + o_node * N                        (1)
    tokens/s  = E(N) / T_step(N)                                                      (2)

Draft (resident; one forward per round over the nodes it expands; d(m) = seconds of one draft
forward over m tokens, top-k selection included):
    ar:        T_draft = 0
    chain(k):  T_draft = d(s) + (k - 1) d(1)
    tree(N):   T_draft = d(s) + R(N) d(w),  R(N) = max(0, ceil((N - 1) / w) - 1)      (3)
  s: tokens the step's first forward processes (root + accepted nodes the draft never saw);
  w: expand width, widened for big trees so that 1 + R(N) <= the forward cap (rules.tree_shape).
  The last round's nodes are not expanded (the node cap stops the tree).

Target pass over n tokens: T_pass(n) by the two-stage IO/compute recurrence (4) of
engine.costmodel.passes (resident: L c(n) + h(n)); with the pipeline, draft work at its waits
(4'), decided by the live policy's own rule (rules.wait_work_fits). The next step reuses that
work when verification accepted the guessed path and bonus (probability P_reuse), hiding that
much of its draft time; P_ext: the most probable leaf was not expanded while drafting:

    T_pass = P_ext T_pass(4', leaf first) + (1 - P_ext) T_pass(4', bonus first)
    T_step -= P_reuse min(next-tree forwards' seconds, T_draft)                         (5)

Tokens per pass (acceptance, measured on calibration prompts, engine.costmodel.acceptance):
    ar: 1;   chain(k): 1 + sum_{d=1..k} prod_{j<=d} alpha_j   (alpha_j = P(depth j | depth j-1))
    tree(N): E(N) = 1 + mean over calibration steps of the accepted nodes among a tree's first N
      nodes. Best-first trees are prefixes of bigger ones (nodes join in path-probability order,
      the node cap only truncates), so one run with big trees gives E(N) for every N <= its cap.
A calibrated draft (P(accept) = draft probability) gives the closed form used for devices with
no measurement: E(N) = 1 + the sum of the N - 1 largest path probabilities of the draft's tree
(`calibrated_tree_tokens`).

Speculation can only win if its rate beats ar's 1 / (T_pass(1) + o_step). An upper bound comes
from accepting every drafted token of one path: R(N) + 1 draft tokens + the bonus
(`perfect_tokens`); when even that loses, no acceptance rate can help (`speculation_can_win`).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..config import DEFAULT_PREFETCH
from . import rules
from .passes import pass_seconds

MODES = ("ar", "chain", "tree")


@dataclass(frozen=True)
class Curve:
    """Seconds vs tokens: piecewise linear through measured points, extrapolated by the last
    segment's slope (never below the last value), constant below the first point."""

    tokens: tuple[float, ...]
    seconds: tuple[float, ...]

    @classmethod
    def linear(cls, fixed: float, per_token: float) -> Curve:
        """fixed + per_token * n."""
        return cls((1.0, 2.0), (fixed + per_token, fixed + 2 * per_token))

    def __call__(self, n: float) -> float:
        xs, ys = self.tokens, self.seconds
        if len(xs) == 1 or n <= xs[0]:
            return ys[0]
        for i in range(1, len(xs)):
            if n <= xs[i]:
                f = (n - xs[i - 1]) / (xs[i] - xs[i - 1])
                return ys[i - 1] + f * (ys[i] - ys[i - 1])
        slope = max(0.0, (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        return ys[-1] + slope * (n - xs[-1])

    def scaled(self, factor: float) -> Curve:
        return Curve(self.tokens, tuple(s * factor for s in self.seconds))


@dataclass(frozen=True)
class Timing:
    """What one step costs on one machine for one pair (seconds, bytes)."""

    draft_forward: Curve  # d(m): one draft forward over m tokens
    layer_compute: Curve  # c(n): one target layer over n tokens
    head_compute: Curve  # h(n): target embedding + final norm + LM head over n tokens
    layer_bytes: tuple[int, ...]  # per target layer, as stored
    base_bytes: int  # embeddings, final norm, head: always resident
    read_bandwidth: float  # B: bytes/s of a streamed layer read, page cache bypassed
    step_overhead: float = 0.0  # o_step of an ar step: Python (acceptance, caches, events)
    node_overhead: float = 0.0  # o_node: per tree node
    chain_overhead: float | None = None  # o_step of chain / tree steps (None: step_overhead):
    tree_overhead: float | None = None  # sampling, masks and bookkeeping differ by mode
    chain_draft_scale: float = 1.0  # chain draft seconds / d-curve prediction, measured in situ
    prefetch: int = DEFAULT_PREFETCH  # layers the IO thread may hold ready ahead of compute
    cold_read_bandwidth: float = 0.0  # a layer read alone (B is measured under load)

    def overhead(self, mode: str) -> float:
        by_mode = {"chain": self.chain_overhead, "tree": self.tree_overhead}.get(mode)
        return self.step_overhead if by_mode is None else by_mode

    @property
    def num_layers(self) -> int:
        return len(self.layer_bytes)

    @property
    def target_bytes(self) -> int:
        return self.base_bytes + sum(self.layer_bytes)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if not isinstance(v, Curve | tuple)}
        for k in ("draft_forward", "layer_compute", "head_compute"):
            c = getattr(self, k)
            d[k] = {"tokens": list(c.tokens), "seconds": list(c.seconds)}
        d["num_layers"] = self.num_layers
        d["layer_bytes_mean"] = sum(self.layer_bytes) / max(1, self.num_layers)
        return d


@dataclass(frozen=True)
class Acceptance:
    """What the target accepts of the draft's proposals (one pair, one sampling setting)."""

    chain_alpha: tuple[float, ...]  # alpha_d = P(depth d accepted | depth d-1 accepted)
    tree_tokens: tuple[float, ...]  # E(N) for N = 1, 2, ... (tree_tokens[0] = 1)
    start_tokens_tree: float = 1.5  # s for tree steps
    start_tokens_chain: float = 1.5  # s for chain steps
    reuse: float = 0.0  # P_reuse of (5)
    extension: float = 1.0  # P(the pipeline has work: the most probable leaf was not expanded)
    calibration: tuple[tuple[float, float, float], ...] = ()  # (path prob, accept rate, nodes)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Prediction:
    mode: str  # "ar", "chain", "tree" (an auto tree may answer "ar")
    nodes: int  # N (ar: 1, chain: k + 1)
    tokens_per_pass: float
    draft_seconds: float
    pass_seconds: float
    overhead_seconds: float
    hidden_seconds: float  # draft time hidden in IO waits by the pipeline, (5)
    step_seconds: float
    tokens_per_second: float
    io_seconds: float
    wait_seconds: float
    bytes_read_per_token: float
    streamed_layers: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


# ---- tokens per pass -----------------------------------------------------------------------
def chain_tokens(alpha: Sequence[float], k: int) -> float:
    """1 + sum_{d=1..k} prod_{j<=d} alpha_j (alpha beyond the measured depths: the last one)."""
    total, reach = 1.0, 1.0
    for d in range(k):
        a = alpha[min(d, len(alpha) - 1)] if alpha else 0.0
        reach *= a
        total += reach
    return total


def tree_tokens(curve: Sequence[float], nodes: int) -> float:
    """E(N) from the measured curve (flat beyond its last point: extra nodes add nothing)."""
    if nodes <= 1 or not curve:
        return 1.0
    return curve[min(nodes, len(curve)) - 1]


def calibrated_tree_tokens(
    profile: Sequence[float], nodes: int, width: int = 4, max_depth: int = 12
) -> float:
    """E(N) of a calibrated draft whose top-k candidates at every position have probabilities
    `profile` (best first), grown like the tree drafter: each round the `width` best candidates
    join the tree and their children become candidates. E(N) = 1 + the sum of the joined
    nodes' path probabilities (a calibrated draft is accepted with its own probability)."""
    total, joined = 1.0, 0
    heap = [(-p, 1) for p in profile]  # (-path prob, depth): the root's children
    heapq.heapify(heap)
    while heap and joined < nodes - 1:
        batch = [heapq.heappop(heap) for _ in range(min(width, len(heap), nodes - 1 - joined))]
        joined += len(batch)
        for neg, depth in batch:
            total += -neg
            if depth < max_depth:
                for p in profile:
                    heapq.heappush(heap, (neg * p, depth + 1))
    return total


def tree_rounds(nodes: int, width: int) -> int:
    """R(N): expansion forwards after the first (the last batch of nodes is not expanded)."""
    return max(0, math.ceil((nodes - 1) / max(1, width)) - 1)


def perfect_tokens(nodes: int, width: int) -> float:
    """Tokens per pass if every drafted token of one path is accepted: depth R(N) + 1, + bonus."""
    return 1.0 + min(nodes - 1, tree_rounds(nodes, width) + 1)


# ---- seconds ---------------------------------------------------------------------------------
def tree_draft_seconds(d: Callable[[float], float], nodes: int, width: int, start: float) -> float:
    if nodes <= 1:
        return 0.0
    return d(start) + tree_rounds(nodes, width) * d(min(width, nodes - 1))


def chain_draft_seconds(d: Callable[[float], float], k: int, start: float) -> float:
    return 0.0 if k <= 0 else d(start) + (k - 1) * d(1)


def predict(
    timing: Timing,
    acceptance: Acceptance | None,
    mode: str,
    *,
    budget_bytes: int | None = None,
    k: int = 4,
    nodes: int | None = None,
    expand_width: int = 4,
    pipeline: bool = False,
    max_forwards: int = 12,
    max_nodes: int | None = None,
    auto_max_nodes: int | None = None,
) -> Prediction:
    """Predicted steady-state decode speed of one mode; `tree` with nodes=None is the automatic
    choice: the best N (or `ar`, when no tree beats it), see `best_tree`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    if mode == "tree" and nodes is None:
        return best_tree(
            timing,
            acceptance,
            budget_bytes=budget_bytes,
            expand_width=expand_width,
            pipeline=pipeline,
            max_forwards=max_forwards,
            max_nodes=max_nodes,
            auto_max_nodes=auto_max_nodes,
        )
    d = timing.draft_forward
    shape = rules.tree_shape(1, expand_width, max_forwards)
    if mode == "ar" or acceptance is None:
        n, tokens, draft = 1, 1.0, 0.0
    elif mode == "chain":
        n = k + 1
        tokens = chain_tokens(acceptance.chain_alpha, k)
        draft = chain_draft_seconds(d, k, acceptance.start_tokens_chain) * timing.chain_draft_scale
    else:
        shape = rules.tree_shape(max(1, nodes), expand_width, max_forwards)
        n = shape.nodes
        tokens = tree_tokens(acceptance.tree_tokens, n)
        draft = tree_draft_seconds(d, n, shape.width, acceptance.start_tokens_tree)
    overhead = timing.overhead(mode if n > 1 else "ar") + timing.node_overhead * n
    slack = timing.layer_compute(n) + timing.head_compute(n) + overhead + draft
    p = pass_seconds(timing, n, budget_bytes, slack)
    hidden = 0.0
    if pipeline and mode == "tree" and n > 1:
        q, mixed = acceptance.extension, []
        for leaf_done, share in ((False, q), (True, 1.0 - q)):
            sizes = rules.wait_forward_sizes(leaf_done, shape.width, shape.rounds)
            ph = pass_seconds(timing, n, budget_bytes, slack, [d(m) for m in sizes])
            skip = 0 if leaf_done else 1  # the leaf's forward grows this tree, not the next
            next_tree = sum(d(m) for m in sizes[skip : ph.hook_calls])
            mixed.append((share, ph, min(next_tree, draft)))
        seconds = sum(share * ph.seconds for share, ph, _ in mixed)
        calls = round(sum(share * ph.hook_calls for share, ph, _ in mixed))
        p = replace(p, seconds=seconds, hook_calls=calls)
        hidden = acceptance.reuse * sum(share * h for share, _, h in mixed)
    step = draft + p.seconds + overhead - hidden
    return Prediction(
        mode="ar" if n == 1 else mode,
        nodes=n,
        tokens_per_pass=tokens,
        draft_seconds=draft,
        pass_seconds=p.seconds,
        overhead_seconds=overhead,
        hidden_seconds=hidden,
        step_seconds=step,
        tokens_per_second=tokens / step,
        io_seconds=p.io,
        wait_seconds=p.waits,
        bytes_read_per_token=p.bytes_read / tokens,
        streamed_layers=p.streamed,
    )


def best_tree(
    timing: Timing,
    acceptance: Acceptance | None,
    *,
    budget_bytes: int | None = None,
    expand_width: int = 4,
    pipeline: bool = False,
    max_nodes: int | None = None,
    max_forwards: int = 12,
    auto_max_nodes: int | None = None,
) -> Prediction:
    """argmax over N of (2), ar (N = 1) included. N runs up to `max_nodes` (default: the measured
    E(N) curve's length), and beyond it up to `auto_max_nodes` while the pass is IO-bound
    (rules.node_limit, as the live policy)."""
    limit = max_nodes or (len(acceptance.tree_tokens) if acceptance else 1)
    top = max(limit, auto_max_nodes or 0)
    best = predict(timing, acceptance, "ar", budget_bytes=budget_bytes)
    for n in range(2, top + 1):
        p = predict(
            timing,
            acceptance,
            "tree",
            budget_bytes=budget_bytes,
            nodes=n,
            expand_width=expand_width,
            pipeline=pipeline,
            max_forwards=max_forwards,
        )
        if n > limit and not rules.is_io_bound(p.wait_seconds, p.pass_seconds):
            break  # past max_nodes only while waiting for layers dominates the pass
        if p.tokens_per_second > best.tokens_per_second:
            best = p
    return best


def auto_generation(
    timing: Timing,
    acceptance: Acceptance,
    tokens: int,
    *,
    budget_bytes: int | None = None,
    expand_width: int = 4,
    pipeline: bool = False,
    max_forwards: int = 12,
    auto_max_nodes: int | None = None,
) -> Prediction:
    """Tree (auto) over a whole generation of `tokens`, with the warm-up of policy.StepPolicy:
    a first tree of one forward (N = 1 + w), one ar step, then the steady-state choice.

        T = T_first + T_ar + (tokens - E_first - 1) / E* T*,   tokens/s = tokens / T
    """
    kw = {"budget_bytes": budget_bytes, "expand_width": expand_width, "pipeline": pipeline}
    first = predict(timing, acceptance, "tree", nodes=1 + expand_width, **kw)
    ar = predict(timing, acceptance, "ar", budget_bytes=budget_bytes)
    best = best_tree(
        timing, acceptance, max_forwards=max_forwards, auto_max_nodes=auto_max_nodes, **kw
    )
    rest = max(0.0, tokens - first.tokens_per_pass - 1.0)
    seconds = first.step_seconds + ar.step_seconds + rest / best.tokens_per_pass * best.step_seconds
    done = min(tokens, first.tokens_per_pass + 1.0 + rest)
    return replace(best, tokens_per_second=done / seconds)


def speculation_can_win(
    draft_seconds: Callable[[int], float],
    pass_seconds_of: Callable[[int], float],
    overhead: float,
    max_nodes: int,
    width: int,
    margin: float = 1.0,
) -> bool:
    """Does any tree size beat ar by `margin` if every drafted token of one path is accepted?"""
    ar = 1.0 / (pass_seconds_of(1) + overhead)
    for n in range(2, max_nodes + 1):
        t = draft_seconds(n) + pass_seconds_of(n) + overhead
        if perfect_tokens(n, width) / t > margin * ar:
            return True
    return False


# ---- the marginal rule of the adaptive threshold -------------------------------------------
def marginal_threshold(
    accept_rate: Sequence[float], bin_edges: Sequence[float], seconds_per_node: float, rate: float
) -> float:
    """Lowest path probability from which every node pays for itself.

    A node with path probability pi adds A(pi) expected tokens and `seconds_per_node` seconds;
    it raises tokens/s while A(pi) / seconds_per_node >= rate (the rate it must beat). Bins are
    ascending in pi (`bin_edges` has one more entry); returns the lower edge of the lowest bin
    from which all higher bins are worth it (the top edge when none is).
    """
    worth = [a / max(seconds_per_node, 1e-9) >= rate for a in accept_rate]
    k = len(worth)
    while k > 0 and worth[k - 1]:
        k -= 1
    return float(bin_edges[k])


# ---- errors ------------------------------------------------------------------------------------
def percentage_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured, in percent."""
    return 100.0 * (predicted - measured) / measured if measured > 0 else float("nan")


def mape(pairs: Sequence[tuple[float, float]]) -> float:
    """Mean absolute percentage error of (predicted, measured) pairs."""
    errs = [abs(percentage_error(p, m)) for p, m in pairs if m > 0]
    return sum(errs) / len(errs) if errs else float("nan")
