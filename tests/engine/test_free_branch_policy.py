"""Draft-free branches (prompt lookup, n-gram pool) are verify slots on top of the draft's
tree: the auto policy plans the draft's part exactly as it would without them, so a merged step
never accepts fewer tokens than the draft's tree alone; their nodes pay for their slots."""

from __future__ import annotations

import pytest

from engine.config import LookupConfig, TreeConfig
from engine.costmodel.policy import StepPolicy
from engine.decoding.drafters import NoDrafter, Proposal, StepResult
from engine.decoding.prompt_lookup import LookupDrafter
from engine.decoding.tree import TokenTree

CHAIN = (11, 12, 13, 14)


class ChainDraft(NoDrafter):
    """A draft whose trees are the chain CHAIN when its StepPolicy speculates."""

    def __init__(self):
        self.policy = StepPolicy(TreeConfig())

    def propose(self, root, committed):
        tree = TokenTree.with_root(root)
        forwards = []
        if self.policy.plan().speculate:
            parent = 0
            for t in CHAIN:
                parent = tree.add(t, parent, 0.9)
            forwards = [(2, 0.005), (1, 0.005)] * 2
        return Proposal(tree, [None] * len(tree), forwards=forwards)

    def feedback(self, result):
        self.policy.observe(result)


def run_steps(drafter, steps: int, passage: tuple[int, ...]) -> list[tuple]:
    """Steps whose target says `passage` then the root token 0 again, for ever; per step the
    draft policy's mode after it. Same timings every step (passes of 0.1 s)."""
    drafter.prefill([0, *passage, 0])
    committed, modes = len(passage) + 1, []
    for _ in range(steps):
        proposal = drafter.propose(0, committed)
        tree, path, node = proposal.tree, [0], 0
        for want in passage:
            node = next((c for c in tree.children(node) if tree.tokens[c] == want), None)
            if node is None:
                break
            path.append(node)
        drafter.commit(tree, path, 0, committed)
        drafter.feedback(StepResult(proposal, tuple(path), 0, 0.12, 0.02, 0.1))
        committed += len(path)
        policy = drafter.inner.policy if hasattr(drafter, "inner") else drafter.policy
        modes.append((policy.mode, len(path) - 1))
    return modes


def test_branches_spelling_a_quoted_passage_leave_the_draft_on_its_tree():
    """Prompt lookup spelling 12 tokens per step (a quoted passage) must not take the step away
    from the draft's tree: before, its tokens were credited to `ar` (root + the same branches,
    no draft forwards), the policy fell back to `ar` and the merged tree accepted fewer tokens
    per pass than the draft's tree alone (issue 12: code edit at 50 %, 3.28 vs 4.92)."""
    passage = (*CHAIN, *range(21, 29))
    alone = run_steps(ChainDraft(), 24, passage)
    merged_drafter = LookupDrafter(ChainDraft(), LookupConfig(sources=("prompt",)))
    merged = run_steps(merged_drafter, 24, passage)
    assert [m for m, _ in merged] == [m for m, _ in alone]  # the draft's decisions: the same
    assert "tree" == alone[-1][0]
    # per step the merged tree accepts at least what the draft's tree alone does
    assert all(k >= a for (_, k), (_, a) in zip(merged, alone, strict=True))
    assert sum(k for _, k in merged) > sum(a for _, a in alone)


def root_step(policy: StepPolicy, branch: tuple[int, ...] | None, won: int) -> None:
    """A root-only step of the draft; `branch` draft-free nodes, `won` of them accepted."""
    tree = TokenTree.with_root(0)
    nodes = tree.add_branch(0, branch or (), 0.5, "prompt", 64)
    proposal = Proposal(tree, [None] * len(tree), free_nodes=len(nodes))
    policy.observe(StepResult(proposal, (0, *nodes[:won]), 7, 0.101, 0.0, 0.1))


def chain_step(policy: StepPolicy) -> None:
    tree = TokenTree.with_root(0)
    parent = 0
    for t in CHAIN:
        parent = tree.add(t, parent, 0.9)
    proposal = Proposal(tree, [None] * len(tree), forwards=[(2, 0.005), (1, 0.005)] * 2)
    policy.observe(StepResult(proposal, (0, 1, 2, 3, 4), 7, 0.12, 0.02, 0.1))


def test_node_worth_is_the_slot_cost_at_the_uncredited_rate():
    policy = StepPolicy(TreeConfig())
    for _ in range(2):
        chain_step(policy)
    policy._enter("ar")
    for _ in range(4):
        root_step(policy, tuple(range(1, 13)), 12)
    # root-only steps: ar's rate is one token per pass, whatever the branches won
    assert policy.ar_rate() == pytest.approx(1 / (policy.v(1) + policy.o))
    slope = policy.v(2) - policy.v(1)
    assert policy.node_worth == pytest.approx(min(policy.hi, policy.ar_rate() * slope))


class FakePolicy:
    """A draft policy's prices: a node's worth, and a pass of one token against a bigger one
    (`single` seconds for one node, `tree` + `per_node` per node beyond it)."""

    def __init__(self, worth, rate=None, single=0.4, tree=0.55, per_node=0.02):
        self.node_worth, self.running_rate = worth, rate
        self.single, self.tree, self.per_node = single, tree, per_node

    def extra_slot_seconds(self, base, extra):
        if self.running_rate is None:
            return None
        v = lambda n: self.single if n == 1 else self.tree + self.per_node * n  # noqa: E731
        return v(base + extra) - v(base)


class FakeInner(NoDrafter):
    def __init__(self, worth, rate=None):
        self.policy = FakePolicy(worth, rate)


@pytest.mark.parametrize("worth, kept", [(None, 6), (0.3, 1)])
def test_branch_nodes_must_pay_for_their_slot_at_the_policys_rate(worth, kept):
    drafter = LookupDrafter(FakeInner(worth), LookupConfig(
        sources=("prompt",), prior=0.5, match_prior=(0.5,), min_prob=0.01))
    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]
    drafter.prefill(history + [3])
    proposal = drafter.propose(3, len(history))
    # prior 0.5 per depth: 0.5, 0.25, ... 0.0156 >= min_prob 0.01 for 6 nodes; a node worth
    # 0.3 keeps only the first (always proposed so the source can earn its way back)
    assert proposal.free_nodes == kept
    assert proposal.tree.tokens[1:] == [4, 5, 6, 7, 8, 9][:kept]


@pytest.mark.priced_branches
def test_a_root_only_steps_branches_pay_for_the_jump_to_a_tree_pass():
    """On a CPU one extra node turns a one-token pass (0.4 s) into a tree pass (0.59 s): at 2.5
    tokens/s the branches of a root-only step must be expected to win 0.48 tokens; a source that
    stopped being right is dropped, then tried every EXPLORE_EVERY steps; one that is right
    keeps its nodes."""
    from engine.decoding.prompt_lookup import EXPLORE_EVERY

    drafter = LookupDrafter(FakeInner(0.05, rate=2.5),
                            LookupConfig(sources=("prompt",), prior=0.5, match_prior=(0.5,),
                                         min_prob=0.01, resume_steps=0))
    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]
    drafter.prefill(history + [3])
    assert drafter.propose(3, len(history)).free_nodes > 0  # prior 0.5: 0.5 + 0.25 + ... pays
    sizes = []
    for _ in range(2 * EXPLORE_EVERY + 2):  # the target never takes the copy
        proposal = drafter.propose(3, len(history))
        sizes.append(proposal.free_nodes)
        drafter.feedback(StepResult(proposal, (0,), 99, 0.4, 0.0, 0.4))
    explored = [i for i, n in enumerate(sizes) if n]
    assert len(explored) >= 2 and explored[-2] + EXPLORE_EVERY == explored[-1]
    assert sum(sizes[-EXPLORE_EVERY:]) <= 6  # one exploration's branch, at most
    right = LookupDrafter(FakeInner(0.05, rate=2.5),
                          LookupConfig(sources=("prompt",), prior=0.5, match_prior=(0.5,),
                                       min_prob=0.01, resume_steps=0))
    right.prefill(history + [3])
    for _ in range(EXPLORE_EVERY):  # the target takes the copy's first three tokens
        proposal = right.propose(3, len(history))
        assert proposal.free_nodes > 0
        right.feedback(StepResult(proposal, (0, 1, 2, 3), 7, 0.6, 0.0, 0.6))


@pytest.mark.priced_branches
def test_an_answer_starts_from_what_the_sessions_branches_lost():
    """Before a pass is priced an answer's root-only steps explore a branch, unless earlier
    answers' root-only steps emitted fewer tokens per second with branches than without
    (LookupMemory): then only every EXPLORE_EVERY dropped steps; acceptance counts carry at
    CARRIED."""
    from engine.decoding.branch_prior import CARRIED, LookupMemory
    from engine.decoding.prompt_lookup import EXPLORE_EVERY

    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]
    config = LookupConfig(sources=("prompt",), prior=0.5, match_prior=(0.5,),
                                         min_prob=0.01, resume_steps=0)

    def sizes(memory, steps):
        drafter = LookupDrafter(FakeInner(0.05), config, memory=memory)  # unpriced passes
        drafter.prefill(history + [3])
        out = []
        for _ in range(steps):
            proposal = drafter.propose(3, len(history))
            out.append(proposal.free_nodes)
            drafter.feedback(StepResult(proposal, (0,), 99, 0.4, 0.0, 0.4))
        return out

    first = sizes(None, 3)
    assert first[0] == 0 and all(first[1:])  # nothing learned: explore from the second step
    memory = LookupMemory.fresh(config.prior)
    memory.outcomes[True][:] = [3.0, 1.8, 3.0]  # with branches: 3 tokens in 1.8 s
    memory.outcomes[False][:] = [3.0, 1.2, 3.0]  # without: 3 in 1.2 s
    memory.answers = 1
    later = sizes(memory, EXPLORE_EVERY + 1)
    assert later[: EXPLORE_EVERY - 1] == [0] * (EXPLORE_EVERY - 1)
    assert sum(later) > 0 and memory.answers == 2  # explored once, then held back again
    carried = LookupMemory.fresh(0.5)
    carried.prior.reached["prompt"], carried.prior.hit["prompt"] = [0.0, 4.0], [0.0, 1.0]
    assert carried.next_answer().prior.reached["prompt"] == [0.0, 4.0]  # the first answer
    assert carried.next_answer().prior.reached["prompt"] == [0.0, 4.0 * CARRIED]
    assert carried.prior.hit["prompt"] == [0.0, CARRIED]
