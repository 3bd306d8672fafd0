"""Draft-free `tree` mode without a draft model prices a verify slot from its own passes
(engine.costmodel.slot_cost): big trees where a pass is IO-bound, lean ones where each verified
node costs compute."""

from __future__ import annotations

import math

import pytest

from engine.config import LookupConfig
from engine.costmodel.slot_cost import MAX_WORTH, SlotCost
from engine.decoding.drafters import NoDrafter, StepResult
from engine.decoding.prompt_lookup import LookupDrafter


def compute_bound(cost: SlotCost, per_node: float, tokens: int = 2) -> None:
    for nodes in (1, 9, 17, 33, 5, 25) * 3:  # 0.1 s + per_node s a node
        cost.observe(nodes, 0.1 + per_node * nodes, tokens)


def test_worth_is_the_running_rate_times_the_slope():
    cost = SlotCost()
    assert cost.worth() == 0.0  # nothing measured: min_prob alone decides
    compute_bound(cost, 0.004)
    seconds = sum(0.1 + 0.004 * n for n in (1, 9, 17, 33, 5, 25))
    rate = 2 * 6 / seconds
    assert cost.worth() == pytest.approx(rate * 0.004, rel=0.1)
    dear = SlotCost()
    compute_bound(dear, 0.05, tokens=20)  # 23 tokens/s, 0.05 s a slot: 1.2, capped
    assert dear.worth() == MAX_WORTH


def test_an_io_bound_pass_makes_slots_free():
    cost = SlotCost()
    for nodes in (1, 9, 17, 33) * 4:  # 0.9 of each pass waits for layers
        cost.observe(nodes, 1.0 + 0.004 * nodes, 2, io_wait=0.9)
    assert cost.worth() == 0.0


def test_lookup_without_a_draft_prices_its_nodes_from_its_passes():
    config = LookupConfig(sources=("prompt",), min_prob=0.001, resume_steps=0)
    drafter = LookupDrafter(NoDrafter(), config)
    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2]
    drafter.prefill(history + [3])
    free = drafter.propose(3, len(history))
    assert len(free.tree) == 1 + 9  # 4 5 6 7 8 9 1 2 3: 0.5 ** 9 >= 0.001 (no price yet)
    drafter.commit(free.tree, [0, 1], 5, len(history))
    drafter.feedback(StepResult(free, (0, 1), 5, 0.3, 0.0, 0.3))
    assert drafter.slots.passes[-1][:3] == (10, 0.3, 2)  # the pass it verified: 10 nodes
    drafter.rollback(len(history))
    compute_bound(drafter.slots, 0.02)  # compute-bound passes: 0.02 s a node
    assert drafter.node_worth() == drafter.slots.worth() > 0.01
    dear = drafter.propose(3, len(history))
    assert 1 < len(dear.tree) < 10  # fewer nodes pay for their slot now


def test_one_token_passes_are_priced_apart_from_tree_passes():
    """A one-token pass (0.4 s) against tree passes 0.55 s + 0.02 s a node: the first nodes
    added to a root-only pass cost the jump, those added to a tree pass the slope."""
    from engine.costmodel.rules import branches_pay

    cost = SlotCost()
    for nodes in (1, 9, 1, 17, 1, 5) * 3:
        cost.observe(nodes, 0.4 if nodes == 1 else 0.55 + 0.02 * nodes, 1)
    assert cost.extra_slot_seconds(1, 3) == pytest.approx(0.55 + 0.08 - 0.4, abs=0.02)
    assert cost.extra_slot_seconds(9, 3) == pytest.approx(0.06, abs=0.01)
    rate = cost.running_rate
    assert not branches_pay(0.2, cost.extra_slot_seconds(1, 3), rate)
    assert branches_pay(0.2, cost.extra_slot_seconds(9, 3), rate)
    io = SlotCost()
    for nodes in (1, 9, 17) * 4:
        io.observe(nodes, 1.0 + 0.004 * nodes, 2, io_wait=0.9)
    assert io.extra_slot_seconds(1, 30) == 0.0


def test_the_rule_reads_what_was_timed_from_the_pass_sizes():
    """One rule for the draft's policy and the draft-free SlotCost: IO-bound passes add no
    seconds; a one-node pass with no one-node pass timed is infinite, with no tree pass timed
    unknown; else v's rise."""
    from engine.costmodel.quantities import Curve
    from engine.costmodel.rules import extra_slot_seconds

    v = Curve.linear(0.1, 0.01)
    assert extra_slot_seconds(v, True, 1, 5, [], False) == 0.0
    assert extra_slot_seconds(v, False, 1, 5, [4, 9], False) == math.inf
    assert extra_slot_seconds(v, False, 1, 5, [1, 1], True) is None
    assert extra_slot_seconds(v, False, 1, 5, iter([1, 6]), True) == pytest.approx(v(6) - v(1))
    assert extra_slot_seconds(v, False, 3, 0, [1], True) == 0.0
