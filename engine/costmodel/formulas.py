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

Tokens per pass: E(N) from the calibration's acceptance (engine.costmodel.tokens_per_pass, which
states the formulas for ar, chain(k), tree(N) and a calibrated draft).

Speculation can only win if its rate beats ar's 1 / (T_pass(1) + o_step). An upper bound comes
from accepting every drafted token of one path: R(N) + 1 draft tokens + the bonus
(`perfect_tokens`); when even that loses, no acceptance rate can help (`speculation_can_win`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from . import rules
from .passes import pass_seconds
from .quantities import Acceptance, Curve, Prediction, Timing  # noqa: F401  (re-exported)
from .tokens_per_pass import (  # noqa: F401  (re-exported: cm.calibrated_tree_tokens, ...)
    calibrated_tree_tokens,
    chain_tokens,
    perfect_tokens,
    tree_rounds,
    tree_tokens,
)

MODES = ("ar", "chain", "tree")


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
    return perfect_rate(draft_seconds, pass_seconds_of, overhead, max_nodes, width) > margin * ar


def perfect_rate(
    draft_seconds: Callable[[int], float],
    pass_seconds_of: Callable[[int], float],
    overhead: float,
    max_nodes: int,
    width: int,
) -> float:
    """The best tokens/s of any tree size if every drafted token of one path is accepted (0
    when no tree of 2 or more nodes is allowed)."""
    best = 0.0
    for n in range(2, max_nodes + 1):
        t = draft_seconds(n) + pass_seconds_of(n) + overhead
        best = max(best, perfect_tokens(n, width) / t)
    return best


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
