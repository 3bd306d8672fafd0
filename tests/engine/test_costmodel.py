"""Cost model formulas on synthetic calibrations with known answers, and the auto policy's
fallback to ar (and back) on synthetic step histories."""

from __future__ import annotations

import pytest

from engine.config import TreeConfig
from engine.costmodel import formulas as cm
from engine.costmodel.passes import layout
from engine.costmodel.policy import StepPolicy
from engine.decoding.drafters import Proposal, StepResult
from engine.decoding.tree import TokenTree

MB = 2**20


def timing(c=0.01, h=0.02, d=0.05, layers=4, layer_mb=10, base_mb=10, bw_mb=100.0, **kw):
    """Flat curves: every pass costs layers * c + h whatever the token count."""
    return cm.Timing(
        draft_forward=cm.Curve((1.0,), (d,)),
        layer_compute=cm.Curve((1.0,), (c,)),
        head_compute=cm.Curve((1.0,), (h,)),
        layer_bytes=(layer_mb * MB,) * layers,
        base_bytes=base_mb * MB,
        read_bandwidth=bw_mb * MB,
        **kw,
    )


def test_curve_interpolates_and_extrapolates():
    c = cm.Curve((1.0, 3.0, 5.0), (1.0, 2.0, 4.0))
    assert c(0.5) == 1.0 and c(2.0) == 1.5 and c(4.0) == 3.0
    assert c(7.0) == pytest.approx(6.0)  # last slope (1 per token) continues
    assert cm.Curve.linear(0.1, 0.01)(10) == pytest.approx(0.2)


def test_resident_pass_is_layers_times_compute_plus_head():
    p = cm.pass_seconds(timing(), 8, None, slack=0.0)
    assert p.seconds == pytest.approx(4 * 0.01 + 0.02)
    assert p.io == p.waits == p.bytes_read == p.streamed == 0


def test_streamed_io_bound_pass_with_and_without_head_start():
    # budget: base + one pinned... no: room for 3 layers only (prefetch 2 + 1) -> all streamed
    t = timing(c=0.1, h=0.0, layers=4, layer_mb=100, base_mb=10, bw_mb=100.0)  # r = 1 s
    budget = (10 + 3 * 100) * MB
    assert layout(t, budget) == (0, [0, 1, 2, 3])
    cold = cm.pass_seconds(t, 1, budget, slack=0.0)
    assert cold.seconds == pytest.approx(4.1)  # layer j ready at j + 1, the last computed 0.1
    assert cold.waits == pytest.approx(1.0 + 0.9 * 3)
    assert cold.io == pytest.approx(4.0) and cold.bytes_read == 400 * MB
    warm = cm.pass_seconds(t, 1, budget, slack=2.0)  # two layers read during the slack
    assert warm.seconds == pytest.approx(2.1)


def test_streamed_compute_bound_pass_waits_only_for_the_first_layer():
    t = timing(c=1.0, h=0.0, layers=4, layer_mb=10, base_mb=10, bw_mb=100.0)  # r = 0.1 s
    p = cm.pass_seconds(t, 1, (10 + 30) * MB, slack=0.0)
    assert p.seconds == pytest.approx(4.1) and p.waits == pytest.approx(0.1)


def test_a_budget_with_room_for_one_streamed_layer_serializes_io_and_compute():
    t = timing(c=0.5, h=0.0, layers=4, layer_mb=100, base_mb=10, bw_mb=100.0)  # r = 1 s
    p = cm.pass_seconds(t, 1, (10 + 150) * MB, slack=5.0)  # slots = 1
    assert p.seconds == pytest.approx(4 * 1.5 - 1.0)  # only the first read was done ahead


def test_pinned_layers_compute_while_the_first_streamed_layer_loads():
    t = timing(c=0.5, h=0.0, layers=6, layer_mb=100, base_mb=0, bw_mb=100.0)  # r = 1 s
    budget = 600 * MB - 1  # not everything fits: room for prefetch + 1 = 3 layers, pin 2
    pinned, streamed = layout(t, budget)
    assert (pinned, streamed) == (2, [2, 3, 4, 5])
    p = cm.pass_seconds(t, 1, budget, slack=0.0)
    # pinned compute (1 s) covers the first read; then a layer every second, each computed in
    # 0.5 s: taken at 1, 2, 3, 4, done at 4.5
    assert p.seconds == pytest.approx(4.5) and p.waits == pytest.approx(1.5)


def test_tokens_per_pass_formulas():
    assert cm.chain_tokens([0.5], 3) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert cm.chain_tokens([1.0, 0.5, 0.0], 5) == pytest.approx(2.5)
    assert cm.calibrated_tree_tokens([1.0], 6, width=1) == pytest.approx(6.0)  # a sure chain
    assert cm.calibrated_tree_tokens([0.5, 0.5], 3, width=2) == pytest.approx(2.0)
    assert cm.calibrated_tree_tokens([0.5, 0.5], 7, width=2) == pytest.approx(3.0)  # 4 x 0.25
    assert cm.calibrated_tree_tokens([1.0], 20, width=1, max_depth=5) == pytest.approx(6.0)
    # rounds: the first batch can only hold the root's children, however likely a grandchild
    assert cm.calibrated_tree_tokens([0.8, 0.1, 0.05, 0.05], 5) == pytest.approx(2.0)
    assert cm.calibrated_tree_tokens([0.8, 0.1, 0.05, 0.05], 9) == pytest.approx(
        2.0 + 0.64 + 0.08 + 0.08 + 0.04
    )  # 0.8 x 0.1 and 0.1 x 0.8 tie
    assert cm.tree_tokens([1.0, 1.5, 1.8], 10) == 1.8
    assert [cm.tree_rounds(n, 4) for n in (1, 2, 5, 6, 9, 48)] == [0, 0, 0, 1, 1, 11]
    assert cm.perfect_tokens(5, 4) == 2 and cm.perfect_tokens(9, 4) == 3


def test_predictions_for_ar_chain_and_tree():
    t = timing(step_overhead=0.01, node_overhead=0.001)
    acc = cm.Acceptance(
        chain_alpha=(0.5,),
        tree_tokens=(1.0, 1.5, 2.0, 2.2, 2.4),
        start_tokens_tree=1.0,
        start_tokens_chain=1.0,
    )
    ar = cm.predict(t, acc, "ar")
    assert ar.tokens_per_second == pytest.approx(1 / (0.06 + 0.011))
    chain = cm.predict(t, acc, "chain", k=2)
    assert chain.tokens_per_pass == pytest.approx(1.75)
    assert chain.step_seconds == pytest.approx(2 * 0.05 + 0.06 + 0.01 + 0.003)
    tree = cm.predict(t, acc, "tree", nodes=5, expand_width=4)  # one draft forward
    assert tree.draft_seconds == pytest.approx(0.05)
    assert tree.tokens_per_second == pytest.approx(2.4 / (0.05 + 0.06 + 0.015))


def test_auto_choice_is_ar_when_the_draft_costs_a_pass_and_a_tree_when_io_dominates():
    profile = (0.8, 0.1, 0.05, 0.05)
    acc = cm.Acceptance(
        chain_alpha=(0.8,),
        tree_tokens=tuple(cm.calibrated_tree_tokens(profile, n) for n in range(1, 33)),
    )
    slow_draft = timing(c=0.02, h=0.02, d=0.12)  # a draft forward costs more than a pass
    assert cm.predict(slow_draft, acc, "tree").mode == "ar"
    streamed = timing(c=0.02, h=0.02, d=0.1, layers=8, layer_mb=100, bw_mb=200.0)
    budget = (10 + 300) * MB
    best = cm.predict(streamed, acc, "tree", budget_bytes=budget)
    ar = cm.predict(streamed, acc, "ar", budget_bytes=budget)
    assert best.mode == "tree" and best.nodes > 1
    assert best.tokens_per_second > 2 * ar.tokens_per_second
    assert best.bytes_read_per_token == pytest.approx(800 * MB / best.tokens_per_pass)


def test_pipeline_fills_waits_with_whole_draft_forwards():
    acc = cm.Acceptance((0.8,), tuple(1 + 0.5 * (n - 1) for n in range(1, 10)), reuse=0.5)
    budget = (10 + 300) * MB
    # short draft forwards (0.05 s) in long waits (1 s reads): free work, reused half the time;
    # 9 nodes = one expansion round: the leaf, the guessed bonus, one batch of the next tree
    t = timing(c=0.01, h=0.0, d=0.05, layers=8, layer_mb=100, bw_mb=100.0)
    off = cm.predict(t, acc, "tree", nodes=9, budget_bytes=budget)
    on = cm.predict(t, acc, "tree", nodes=9, budget_bytes=budget, pipeline=True)
    assert on.pass_seconds == pytest.approx(off.pass_seconds)
    assert on.hidden_seconds == pytest.approx(0.5 * min(2 * 0.05, off.draft_seconds))
    assert on.step_seconds == pytest.approx(off.step_seconds - on.hidden_seconds)
    # long draft forwards (0.5 s) in short waits (0.05 s reads): the rule never lets one
    # delay the target (it would not end before the IO thread runs out of reads)
    slow = timing(c=0.01, h=0.0, d=0.5, layers=8, layer_mb=5, bw_mb=100.0)
    off = cm.predict(slow, acc, "tree", nodes=9, budget_bytes=(10 + 15) * MB)
    on = cm.predict(slow, acc, "tree", nodes=9, budget_bytes=(10 + 15) * MB, pipeline=True)
    assert on.step_seconds == pytest.approx(off.step_seconds) and on.hidden_seconds == 0


def test_speculation_can_win_only_with_a_draft_cheaper_than_a_pass():
    def can(d, v):
        return cm.speculation_can_win(
            lambda n: d * (1 + cm.tree_rounds(n, 4)), lambda n: v, 0.0, 48, 4
        )

    assert not can(0.1, 0.1) and not can(0.2, 0.1)
    assert can(0.01, 0.1)


def test_marginal_threshold_and_errors():
    edges = [0.001, 0.01, 0.1, 1.0]
    # rate 10 tok/s, a node costs 0.01 s: worth it when A >= 0.1
    assert cm.marginal_threshold([0.05, 0.2, 0.9], edges, 0.01, 10.0) == 0.01
    assert cm.marginal_threshold([0.05, 0.05, 0.9], edges, 0.01, 10.0) == 0.1
    assert cm.marginal_threshold([0.05, 0.05, 0.05], edges, 0.01, 10.0) == 1.0
    assert cm.percentage_error(11.0, 10.0) == pytest.approx(10.0)
    assert cm.mape([(11.0, 10.0), (9.0, 10.0), (5.0, 0.0)]) == pytest.approx(10.0)


# ---- the auto policy on synthetic histories ---------------------------------------------------
def batch_tree(n: int, w: int = 4) -> TokenTree:
    """Node i's parent is i - w (batch r hangs off batch r - 1); node 1 + w r is the top path."""
    tree = TokenTree.with_root(0)
    for i in range(1, n):
        tree.add(i, max(0, i - w), 0.6 if (i - 1) % w == 0 else 0.1)
    return tree


def feed(policy: StepPolicy, steps: int, accept, draft=0.05, v0=1.0, v1=0.0) -> list[bool]:
    """Run `steps` steps; accept(n) -> accepted depth for a tree of n nodes. Returns, per step,
    whether it speculated."""
    out = []
    for _ in range(steps):
        plan = policy.plan()
        n = plan.max_nodes if plan.speculate else 1
        tree = batch_tree(n) if plan.speculate else TokenTree.with_root(0)
        depth = min(accept(n), cm.tree_rounds(n, 4) + 1) if plan.speculate else 0
        path = [0] + [1 + 4 * j for j in range(depth)]
        rounds = cm.tree_rounds(n, 4) if plan.speculate else -1
        forwards = [(2, draft)] + [(4, draft)] * rounds if plan.speculate else []
        d = sum(s for _, s in forwards)
        v = v0 + v1 * n
        proposal = Proposal(
            tree, [None] * n, chain=not plan.speculate, forwards=forwards, probe=plan.probe
        )
        policy.observe(StepResult(proposal, tuple(path), 7, d + v + 0.001, d, v))
        out.append(plan.speculate)
    return out


def test_bad_draft_falls_back_to_ar_and_probes_rarely():
    policy = StepPolicy(TreeConfig())
    spec = feed(policy, 200, accept=lambda n: 0)  # IO-bound pass, nothing accepted
    assert policy.mode == "ar"
    # a tree, an ar step (timing v(1)), a second tree of evidence, then ar
    assert spec[:3] == [True, False, True] and not any(spec[3:18])
    assert 2 <= sum(spec) <= 8  # probes with doubling intervals (16, 32, 64, 128)
    assert policy.switches[0] == (3, "ar")


def test_good_draft_with_io_bound_target_speculates_with_growing_trees():
    policy = StepPolicy(TreeConfig())
    spec = feed(policy, 30, accept=lambda n: 99)  # every drafted token accepted
    assert spec[0] and not spec[1] and all(spec[2:]) and policy.mode == "tree"
    assert policy.plan().max_nodes > 1 + 4  # the cost model grew the tree past one forward


def test_draft_as_slow_as_the_pass_falls_back_at_once_and_never_probes():
    policy = StepPolicy(TreeConfig())
    spec = feed(policy, 300, accept=lambda n: 99, draft=0.12, v0=0.1)  # perfect acceptance
    assert spec[0] and not any(spec[1:])
    assert policy.timing_bound and policy.switches == [(1, "ar")]


def test_returns_to_speculation_when_acceptance_recovers():
    policy = StepPolicy(TreeConfig())
    feed(policy, 20, accept=lambda n: 0)
    assert policy.mode == "ar"
    spec = feed(policy, 60, accept=lambda n: 99)
    assert policy.mode == "tree" and policy.switches[-1][1] == "tree"
    first = spec.index(True)
    assert all(spec[first:])  # the winning probe brought speculation back for good


def test_auto_off_keeps_the_configured_cap():
    policy = StepPolicy(TreeConfig(max_nodes=20), auto=False)
    spec = feed(policy, 10, accept=lambda n: 0, draft=0.1, v0=0.1)
    assert all(spec) and policy.plan().max_nodes == 20


def test_auto_generation_includes_the_policy_warm_up():
    acc = cm.Acceptance(
        (0.8,), tuple(cm.calibrated_tree_tokens((0.8, 0.1, 0.05, 0.05), n) for n in range(1, 33))
    )
    t = timing(c=0.02, h=0.02, d=0.01, layers=8, layer_mb=100, bw_mb=200.0)
    budget = (10 + 300) * MB
    steady = cm.predict(t, acc, "tree", budget_bytes=budget)
    long = cm.auto_generation(t, acc, 10_000, budget_bytes=budget)
    short = cm.auto_generation(t, acc, 16, budget_bytes=budget)
    assert long.tokens_per_second == pytest.approx(steady.tokens_per_second, rel=0.01)
    assert short.tokens_per_second < long.tokens_per_second


def test_a_tree_pass_is_never_priced_below_a_one_node_pass():
    """One big streamed tree pass (25 nodes, 5.11 s) beside 5.0 s one-node passes: small trees
    cost about a one-node pass (the line at the prior slope through the big pass priced 3
    nodes at 3.8 s); a CPU's dearer tree passes keep their own line."""
    from engine.costmodel.rules import fit_passes

    v, slope = fit_passes([(1, 5.0, 1.0), (25, 5.11, 1.0)], [5.0], prior_slope=0.057)
    assert v(1) == 5.0 and 5.0 <= v(3) <= v(25) and v(25) == pytest.approx(5.11)
    assert slope == pytest.approx(0.11 / 23)
    v, _ = fit_passes([(1, 5.0, 1.0), (25, 4.8, 1.0)], [5.0], prior_slope=0.057)
    assert v(3) == v(25) == 5.0  # cheaper than one node: noise, flat
    from engine.costmodel.rules import fit_line

    trees = [(5, 0.6, 1.0), (9, 0.7, 1.0)]
    cpu, slope = fit_passes([(1, 0.4, 1.0), *trees], [0.4], 0.01)
    a, b = fit_line(trees, 0.01)
    assert cpu(1) == 0.4 and cpu(3) == pytest.approx(a + 3 * b) and cpu(2) > 0.55 and slope == b
