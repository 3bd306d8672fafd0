"""The acceptance rules, tested as pure functions, with a chi-square test that has power."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from engine.decoding.verify import accept_greedy, accept_sampled

V = 6
N = 20_000


def dist(rng):
    p = rng.dirichlet(np.ones(V) * 0.7)
    return p


def wrong_rule_no_residual(tokens, parents, target_probs, proposal_probs, rng):
    """A deliberately wrong variant: on rejection keep p instead of norm(max(0, p - q))."""
    path, node = [0], 0
    kids = [[c for c, p in enumerate(parents) if p == n] for n in range(len(tokens))]
    while True:
        p = target_probs[node]
        for c in kids[node]:
            q = proposal_probs[c]
            q_x = 1.0 if q is None else q[tokens[c]]
            if rng.random() < min(1.0, p[tokens[c]] / q_x):
                path.append(c)
                node = c
                break
        else:
            return path, int(rng.choice(V, p=p / p.sum()))


def first_two(rule, draw_tokens, parents, P, Q, seed):
    """N runs of one step; sampled drafts are drawn afresh each run, as the drafter would."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(N):
        tokens = draw_tokens(rng)
        path, bonus = rule(tokens, parents, P, Q, rng)
        emitted = [tokens[i] for i in path[1:]] + [bonus]
        out.append((emitted[0], emitted[1] if len(emitted) > 1 else -1, path))
    return out


def check(samples, parents, P):
    """First token ~ p(root); given an accepted first child c, second token ~ p(c)."""
    first = np.bincount([s[0] for s in samples], minlength=V)
    p_values = [chisquare(first, P[0] * len(samples)).pvalue]
    for c in (i for i, par in enumerate(parents) if par == 0):
        second = [s[1] for s in samples if len(s[2]) > 1 and s[2][1] == c]
        if len(second) > 500:
            counts = np.bincount(second, minlength=V)
            expected = P[c] * len(second)
            keep = expected > 0
            p_values.append(chisquare(counts[keep], expected[keep]).pvalue)
    return min(p_values)


def make_case(seed, sampled_children):
    """(draw_tokens(rng), parents, P, Q) for a root with 3 children, two with children.

    The node distributions P are synthetic (one per node), which is all the rule sees.
    """
    rng = np.random.default_rng(seed)
    parents = [-1, 0, 0, 0, 1, 1, 2]
    P = np.stack([dist(rng) for _ in parents])
    draft = np.stack([dist(rng) for _ in parents])
    if sampled_children:  # SpecInfer: each child drawn i.i.d. from its parent's q, every step
        Q = [None] + [draft[parents[i]] for i in range(1, len(parents))]

        def draw_tokens(r):
            return [0] + [int(r.choice(V, p=Q[i])) for i in range(1, len(parents))]

        return draw_tokens, parents, P, Q
    tokens = [0]  # top-k: distinct tokens chosen deterministically
    for i in range(1, len(parents)):
        sibs = [tokens[j] for j in range(1, i) if parents[j] == parents[i]]
        tokens.append(int(next(t for t in np.argsort(-draft[parents[i]]) if t not in sibs)))
    return (lambda r: tokens), parents, P, [None] * len(parents)


@pytest.mark.parametrize("sampled_children", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_sampled_acceptance_keeps_the_target_distribution(seed, sampled_children):
    draw, parents, P, Q = make_case(seed, sampled_children)
    samples = first_two(accept_sampled, draw, parents, P, Q, seed)
    assert check(samples, parents, P) > 1e-3


def test_chi_square_catches_a_wrong_residual_rule():
    draw, parents, P, Q = make_case(0, sampled_children=True)
    samples = first_two(wrong_rule_no_residual, draw, parents, P, Q, 0)
    assert check(samples, parents, P) < 1e-6


def test_greedy_acceptance_follows_target_argmax():
    tokens = [9, 1, 2, 3, 4]
    parents = [-1, 0, 0, 1, 2]
    argmax = [2, 0, 4, 0, 7]  # at root the target wants 2 (node 2), then 4 (node 4), then 7
    assert accept_greedy(tokens, parents, argmax) == ([0, 2, 4], 7)
    assert accept_greedy(tokens, parents, [5, 0, 0, 0, 0]) == ([0], 5)
