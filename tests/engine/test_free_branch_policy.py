"""The auto policy counts draft-free branches as what they are: verify slots, not draft
forwards, and tokens won with or without the draft's tree (engine.costmodel.free_branches)."""

from __future__ import annotations

import pytest

from engine.config import LookupConfig, TreeConfig
from engine.costmodel.free_branches import spelled
from engine.costmodel.policy import PROBE_FIRST, StepPolicy
from engine.decoding.drafters import NoDrafter, Proposal, StepResult
from engine.decoding.prompt_lookup import LookupDrafter
from engine.decoding.tree import TokenTree


def test_spelled_is_the_longest_prefix_one_branch_starts_with():
    assert spelled([(1, 2, 9), (1, 2, 3, 4)], [1, 2, 3, 7]) == 3
    assert spelled([(5,)], [1, 2]) == 0
    assert spelled([], [1]) == 0


def step(policy: StepPolicy, free_branch: tuple[int, ...] | None, won: int, v: float) -> None:
    """A root-only step whose draft-free branch (if any) the target accepts `won` tokens of."""
    tree = TokenTree.with_root(0)
    nodes = tree.add_branch(0, free_branch or (), 0.5, "prompt", 64)
    proposal = Proposal(tree, [None] * len(tree), free_nodes=len(nodes),
                        free_branches=None if free_branch is None else [free_branch])
    policy.observe(StepResult(proposal, (0, *nodes[:won]), 7, v + 0.001, 0.0, v))


@pytest.mark.parametrize("won", [0, 3])
def test_ar_rate_counts_tokens_the_branches_win_and_the_slots_they_take(won):
    plain, with_free = StepPolicy(TreeConfig()), StepPolicy(TreeConfig())
    for _ in range(6):
        step(plain, None, 0, 0.1)
        step(with_free, (1, 2, 3, 4), won, 0.1)
    # same pass times: the branches' accepted tokens count, their 4 slots cost v(5) - v(1)
    assert with_free.free.tokens(with_free._weight) == pytest.approx(won)
    assert with_free.free.nodes(with_free._weight) == pytest.approx(4)
    v = with_free.v
    assert with_free.ar_rate() == pytest.approx((1 + won) / (v(5) + with_free.o))
    ratio = with_free.ar_rate() / plain.ar_rate()
    assert (ratio > 2.5) if won == 3 else (ratio <= 1.0)


def test_speculation_is_credited_with_what_the_branches_win_anyway():
    policy = StepPolicy(TreeConfig())
    tree = TokenTree.with_root(0)
    tree.add(11, 0, 0.4)  # a draft node the target rejects
    branch = tree.add_branch(0, (1, 2, 3), 0.5, "prompt", 64)
    proposal = Proposal(tree, [None] * len(tree), forwards=[(2, 0.01)], free_nodes=3,
                        free_branches=[(1, 2, 3)])
    policy.observe(StepResult(proposal, (0, *branch), 7, 0.12, 0.01, 0.1))
    assert policy.trees[-1].path == 0 and policy.trees[-1].free == 3
    assert policy.tree_tokens(2) == pytest.approx(4.0)  # root's token + the branch's three


class FakeInner(NoDrafter):
    def __init__(self, worth):
        self.policy = type("P", (), {"node_worth": worth})()


@pytest.mark.parametrize("worth, kept", [(None, 6), (0.3, 1)])
def test_branch_nodes_must_pay_for_their_slot_at_the_policys_rate(worth, kept):
    drafter = LookupDrafter(FakeInner(worth), LookupConfig(sources=("prompt",), prior=0.5,
                                                           min_prob=0.01))
    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]
    drafter.prefill(history + [3])
    proposal = drafter.propose(3, len(history))
    # prior 0.5 per depth: 0.5, 0.25, ... 0.0156 >= min_prob 0.01 for 6 nodes; a node worth
    # 0.3 keeps only the first (always proposed so the source can earn its way back)
    assert proposal.free_nodes == kept
    assert proposal.free_branches == [(4, 5, 6, 7, 8, 9)[:kept]]


def chain_step(policy: StepPolicy, won_free: int) -> None:
    """A speculative step: 4 draft nodes in a chain, all accepted, + one free branch."""
    tree = TokenTree.with_root(0)
    parent = 0
    for t in (11, 12, 13, 14):
        parent = tree.add(t, parent, 0.9)
    branch = (11, 12, 13, 14, 15, 16)[: max(won_free, 1)]
    tree.add_branch(0, branch, 0.5, "prompt", 64)
    extra = len(tree) - 5
    proposal = Proposal(tree, [None] * len(tree), forwards=[(2, 0.005), (1, 0.005)] * 2,
                        free_nodes=extra, free_branches=[branch])
    policy.observe(StepResult(proposal, (0, 1, 2, 3, 4), 7, 0.12, 0.02, 0.1))


def test_ar_returns_to_trees_when_the_branches_stop_winning_without_a_probe():
    policy = StepPolicy(TreeConfig())
    for _ in range(3):
        chain_step(policy, 0)
    assert policy.mode == "tree"
    policy._enter("ar")
    for _ in range(4):  # a quoted passage: the branches win 12 tokens per root-only step
        step(policy, tuple(range(1, 13)), 12, 0.1)
    assert policy.mode == "ar"
    plans = []
    for _ in range(PROBE_FIRST - 2):  # the passage ended: the branches win nothing
        plans.append(policy.plan())
        if policy.mode == "tree":
            break
        step(policy, (99,), 0, 0.1)
    assert policy.mode == "tree" and not any(p.probe for p in plans)
