"""The one per-step policy: IO-wait drafting decided by the rule the cost model simulates, node
budgets up to hundreds of nodes only when the target pass is IO-bound, and big trees that stay
lossless."""

from __future__ import annotations

import pytest

from engine.bench import run as bench_run
from engine.bench.runs import Config
from engine.config import GenerationConfig, TreeConfig
from engine.costmodel import formulas as cm
from engine.costmodel import rules
from engine.costmodel.calibrate import Calibration
from engine.costmodel.policy import StepPolicy
from engine.decoding.drafters import Proposal, StepResult
from engine.decoding.tree import TokenTree
from engine.events import Finished, StepEvent
from engine.session import Session
from engine.testing import make_tiny_model

MB = 2**20


def timing(d, c=0.005, h=0.0, layers=8, layer_mb=10, base_mb=10, bw_mb=100.0, prefetch=2):
    return cm.Timing(
        draft_forward=d,
        layer_compute=cm.Curve((1.0,), (c,)) if isinstance(c, float) else c,
        head_compute=cm.Curve((1.0,), (h,)),
        layer_bytes=(layer_mb * MB,) * layers,
        base_bytes=base_mb * MB,
        read_bandwidth=bw_mb * MB,
        prefetch=prefetch,
    )


def measured_policy(tree: TreeConfig) -> StepPolicy:
    """A policy that has timed draft forwards of 1 and 4 tokens (d(m) ~ 0.02 + 0.01 m)."""
    policy = StepPolicy(tree, auto=False)
    t = TokenTree.with_root(0)
    t.add(1, 0, 0.5)
    forwards = [(1, 0.03), (4, 0.06), (1, 0.03), (4, 0.06)]
    policy.observe(StepResult(Proposal(t, [None, None], forwards=forwards), (0,), 1, 0.3, 0.1, 0.2))
    return policy


@pytest.mark.parametrize("room_layers", [0, 1])  # read-ahead room beyond the awaited layer
def test_live_wait_decisions_equal_the_simulated_ones(room_layers):
    """A scripted IO timeline (10 MB layers read at 100 MB/s, 5 ms of compute per layer): the
    cost model's pass simulation decides each wait's draft work; the live policy, asked with
    the same facts, decides the same, call by call, and so does the simulation that the bench
    runs for its pipeline rows (formulas.predict)."""
    policy = measured_policy(TreeConfig(max_nodes=49, adaptive=False))
    plan = policy.plan()
    t = timing(policy.d, bw_mb=100.0)
    budget = (10 + 10 * (1 + room_layers)) * MB + 1
    sizes = rules.wait_forward_sizes(False, plan.width, plan.rounds)
    trace: list = []
    cm.pass_seconds(t, plan.max_nodes, budget, 0.0, [policy.d(m) for m in sizes], trace)
    assert {ran for _, ran in trace} == {True, False}  # some work fits, some would stall IO
    calls = 0
    for facts, ran in trace:
        tokens = sizes[calls] if calls < len(sizes) else 1
        assert policy.draft_while_waiting(facts, calls, tokens) == ran
        calls += ran
    assert calls == len(sizes) or room_layers == 0


def test_bench_pipeline_predictions_run_the_policy_rule(monkeypatch):
    """`canopy bench` predicts its "+ pipeline" rows through rules.wait_work_fits."""
    seen = []
    rule = rules.wait_work_fits

    def counted(*a):
        seen.append(rule(*a))
        return seen[-1]

    monkeypatch.setattr(rules, "wait_work_fits", counted)
    t = timing(cm.Curve.linear(0.01, 0.001))
    acc = cm.Acceptance((0.8,), tuple(1 + 0.4 * (n - 1) ** 0.5 for n in range(1, 49)), reuse=0.5)
    cals = {("greedy", "good"): Calibration(t, acc, 0.0)}
    cfg = Config("canopy", "tree", "50%", "greedy", pipeline=True)
    bench_run.predict(cfg, cals, (10 + 40) * MB, 32)
    assert True in seen
    seen.clear()
    bench_run.predict(Config("canopy", "tree", "50%", "greedy"), cals, (10 + 40) * MB, 32)
    assert not seen  # no pipeline: no wait work simulated


def calibrated(profile, top: int, width=4, forwards=12):
    return cm.Acceptance(
        (profile[0],),
        tuple(
            cm.calibrated_tree_tokens(profile, n, rules.tree_shape(n, width, forwards).width)
            for n in range(1, top + 1)
        ),
    )


def test_io_bound_profile_picks_hundreds_of_nodes_and_compute_bound_small_trees():
    acc = calibrated((0.6, 0.2, 0.1, 0.05), 512)
    draft = cm.Curve.linear(0.01, 0.0005)
    # streamed: 24 layers of 100 MB at 1 GB/s (2.4 s of reads) with cheap compute
    io = timing(draft, c=cm.Curve.linear(0.001, 1e-5), layers=24, layer_mb=100, bw_mb=1000.0)
    budget = (10 + 1200) * MB
    best = cm.best_tree(io, acc, budget_bytes=budget, max_nodes=48, auto_max_nodes=512)
    assert best.mode == "tree" and best.nodes >= 256
    capped = cm.best_tree(io, acc, budget_bytes=budget, max_nodes=48)
    assert best.tokens_per_second > capped.tokens_per_second
    # resident on a CPU: every verified node costs compute
    cpu = timing(draft, c=cm.Curve.linear(0.005, 0.001), layers=24)
    small = cm.best_tree(cpu, acc, max_nodes=48, auto_max_nodes=512)
    assert small.nodes <= 16


def spread_tree(n: int) -> tuple[TokenTree, list[int]]:
    """Accepted path at nodes 1, 2, 4, 8, ...: bigger trees hold deeper accepted paths."""
    tree, path = TokenTree.with_root(0), [0]
    for i in range(1, n):
        if i & (i - 1) == 0:
            path.append(tree.add(i, path[-1], 0.5))
        else:
            tree.add(i, 0, 0.01)
    return tree, path


def feed(policy: StepPolicy, steps: int, v0: float, v1: float, io_share: float) -> list[int]:
    """Synthetic steps: pass v0 + v1 N, of which `io_share` waiting for layers; returns N."""
    sizes = []
    for _ in range(steps):
        plan = policy.plan()
        n = plan.max_nodes if plan.speculate else 1
        tree, path = spread_tree(n) if plan.speculate else (TokenTree.with_root(0), [0])
        forwards = []
        if plan.speculate:
            shape = rules.tree_shape(n, 4, 12)
            forwards = [(2, 0.011)] + [(shape.width, 0.01 + 0.0005 * shape.width)] * shape.rounds
        d = sum(s for _, s in forwards)
        v = v0 + v1 * n
        proposal = Proposal(tree, [None] * n, chain=not plan.speculate, forwards=forwards,
                            probe=plan.probe)
        policy.observe(StepResult(proposal, tuple(path), 7, d + v + 0.001, d, v, io_share * v))
        sizes.append(n)
    return sizes


def test_live_policy_grows_hundreds_of_nodes_only_while_the_pass_is_io_bound():
    io = feed(StepPolicy(TreeConfig()), 24, v0=2.0, v1=1e-4, io_share=0.9)
    assert max(io[-5:]) >= 256 and max(io) <= 512
    same_times_no_io = feed(StepPolicy(TreeConfig()), 24, v0=2.0, v1=1e-4, io_share=0.0)
    assert max(same_times_no_io) <= 48
    compute = feed(StepPolicy(TreeConfig()), 24, v0=0.1, v1=0.05, io_share=0.0)
    assert max(compute[-10:]) <= 16


def test_greedy_512_node_trees_equal_ar(tmp_path):
    target = make_tiny_model(tmp_path / "t", seed=2, num_layers=2)
    draft = make_tiny_model(tmp_path / "d", like=target, noise=0.05, seed=4)
    session = Session.load(target, draft)
    ids = [5, 17, 42]
    ar = list(session.generate(ids, GenerationConfig(mode="ar", max_tokens=24)))[-1]
    tree = TreeConfig(max_nodes=512, max_forwards=6, adaptive=False, threshold=0.0)
    events = list(session.generate(ids, GenerationConfig(mode="tree", max_tokens=24, tree=tree)))
    assert isinstance(events[-1], Finished) and events[-1].token_ids == ar.token_ids
    # the draft model's tree (draft-free branches may add nodes on top)
    sizes = [sum(s in ("root", "draft") for s in e.tree_sources) for e in events
             if isinstance(e, StepEvent)]
    assert max(sizes) == 512  # wide rounds: 6 draft forwards of up to 86 nodes


def test_pass_cost_leaves_out_wait_work_beyond_the_reads():
    # no draft work at the waits: the pass is what was measured
    assert rules.pass_cost_seconds(5.0, 0.0, 4.0) == 5.0
    # the work overran the reads (4 s): the overrun is the next tree's, not the pass's
    assert rules.pass_cost_seconds(9.0, 6.0, 4.0) == 4.0
    # the work only filled waits the pass had anyway: nothing taken out
    assert rules.pass_cost_seconds(5.0, 2.0, 5.5) == 5.0
    # not streamed (no IO thread): the work comes off
    assert rules.pass_cost_seconds(5.0, 2.0, None) == 3.0


def test_draft_work_overrunning_io_bound_passes_does_not_shrink_the_trees():
    """Streamed passes of ~2 s of reads; draft work at the waits overruns them in proportion to
    the tree (its next tree is as big). The policy charges the overrun to the draft, not to
    v(N), so it still grows hundreds of nodes; charged to v(N) it would stay small."""

    def run(io_busy, wait_share=0.9, overrun=0.02):
        policy, sizes = StepPolicy(TreeConfig()), []
        for _ in range(24):
            plan = policy.plan()
            n = plan.max_nodes if plan.speculate else 1
            tree, path = spread_tree(n) if plan.speculate else (TokenTree.with_root(0), [0])
            shape = rules.tree_shape(n, 4, 12)
            forwards = [(2, 0.011)] + [(shape.width, 0.01 + 0.0005 * shape.width)] * shape.rounds
            work = overrun * n if plan.speculate else 0.0  # grows with the tree
            d, v = sum(s for _, s in forwards), 2.0 + work
            proposal = Proposal(tree, [None] * n, chain=not plan.speculate, forwards=forwards,
                                probe=plan.probe)
            wait = wait_share * 2.0 + work
            policy.observe(StepResult(proposal, tuple(path), 7, d + v + 0.001, d, v, wait, None,
                                      work, io_busy))
            sizes.append(n)
        return sizes

    assert max(run(io_busy=2.0)[-5:]) >= 256
    # little of the pass counted as waiting, but the IO thread read all along: still IO-bound
    assert max(run(io_busy=2.0, wait_share=0.1, overrun=0.0)[-5:]) >= 256
    # the IO thread read all along (the reads, not the work, were slow): the pass's own time
    assert max(run(io_busy=1e9)[-5:]) <= 128


@pytest.mark.parametrize("io_bound", [True, False])
def test_first_tree_is_full_only_after_an_io_bound_pass(io_bound):
    """The first (root-only) pass was IO-bound: the first tree uses the configured budget, not
    one forward's worth; compute-bound (resident), it stays one forward's worth."""
    tree = TreeConfig()
    policy = StepPolicy(tree)
    root = Proposal(TokenTree.with_root(0), [None], chain=True)
    policy.observe(StepResult(root, (0,), 7, 2.0, 0.0, 2.0, 1.8 * io_bound, None, 0.0,
                              2.0 if io_bound else None))
    plan = policy.plan()
    assert plan.speculate
    assert plan.max_nodes == (tree.max_nodes if io_bound else 1 + tree.expand_width)


def test_threshold_prunes_no_harder_than_configured_while_io_bound():
    """A noisy slope of v(N) under IO-bound passes must not raise the threshold and cut the
    trees the node budget chose; compute-bound, the same slope raises it."""
    io = StepPolicy(TreeConfig())
    feed(io, 12, v0=2.0, v1=0.2, io_share=0.9)
    assert io.threshold <= TreeConfig().threshold
    compute = StepPolicy(TreeConfig())
    feed(compute, 12, v0=2.0, v1=0.2, io_share=0.0)
    assert compute.threshold > TreeConfig().threshold
