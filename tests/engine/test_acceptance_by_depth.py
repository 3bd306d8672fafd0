"""Acceptance by depth: one definition (engine.decoding.stats), checked on hand-made steps."""

from __future__ import annotations

from types import SimpleNamespace

from engine.costmodel.acceptance import chain_alpha
from engine.decoding.stats import acceptance_by_depth


def step(parents, accepted):
    return SimpleNamespace(tree_parents=tuple(parents), accepted=tuple(accepted),
                           tree_tokens=tuple(range(len(parents))))


def test_a_path_ending_at_a_leaf_says_nothing_about_deeper_levels():
    # root -> 1 -> 3 -> 4 (depth 3) and root -> 2 (a leaf at depth 1)
    parents = [-1, 0, 0, 1, 3]
    steps = [
        step(parents, [0, 2]),  # depth 1 accepted at a leaf: depth 2 was never offered there
        step(parents, [0, 1, 3]),  # depths 1, 2 accepted; 3 offered, rejected
        step(parents, [0]),  # depth 1 rejected
    ]
    assert acceptance_by_depth(steps) == (2 / 3, 1.0, 0.0)


def test_root_only_steps_are_not_counted():
    assert acceptance_by_depth([step([-1], [0])]) == ()
    assert acceptance_by_depth([step([-1], [0]), step([-1, 0], [0, 1])]) == (1.0,)


def test_calibration_chain_alpha_is_the_same_figure():
    chain = [-1, 0, 1, 2]  # k = 3
    steps = [step(chain, [0]), step(chain, [0, 1]), step(chain, [0, 1, 2, 3]),
             step([-1, 0], [0, 1])]  # a shorter chain: not a k = 3 step
    assert chain_alpha(steps, 3) == acceptance_by_depth(steps[:3]) == (2 / 3, 1 / 2, 1.0)
    assert chain_alpha([step(chain, [0])], 3) == (0.0, 0.0, 0.0)
