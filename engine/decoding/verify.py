"""Acceptance: which path of the tree the target keeps, plus its own next token. Pure functions.

Both rules walk the tree from the root. At an accepted node the target's distribution p decides
among the node's children; the walk ends at a node where no child is accepted, and the target
contributes one token there (the bonus / correction).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .sampling import sample


def children_of(parents: Sequence[int]) -> list[list[int]]:
    kids: list[list[int]] = [[] for _ in parents]
    for i, p in enumerate(parents):
        if p >= 0:
            kids[p].append(i)
    return kids


def accept_greedy(
    tokens: Sequence[int], parents: Sequence[int], target_argmax: Sequence[int]
) -> tuple[list[int], int]:
    """Longest root path whose every token is the target's argmax at its parent.

    Returns (accepted node indices starting with the root 0, bonus token = the target's argmax
    at the last accepted node). Output equals greedy decoding with the target alone.
    """
    kids = children_of(parents)
    path, node = [0], 0
    while True:
        want = int(target_argmax[node])
        nxt = next((c for c in kids[node] if tokens[c] == want), None)
        if nxt is None:
            return path, want
        path.append(nxt)
        node = nxt


def fit_vocab(q: np.ndarray, size: int) -> np.ndarray:
    """q over the target's vocabulary: padded vocabularies differ in length (Qwen2.5 0.5B has
    151,936 rows, 7B 152,064); rows only one side has carry no mass on the other side."""
    q = np.asarray(q, dtype=np.float64)[:size]
    return np.pad(q, (0, size - len(q))) if len(q) < size else q


def accept_sampled(
    tokens: Sequence[int],
    parents: Sequence[int],
    target_probs: np.ndarray,
    proposal_probs: Sequence[np.ndarray | None],
    rng: np.random.Generator,
) -> tuple[list[int], int]:
    """Multi-branch speculative sampling (SpecInfer's recursive rejection over siblings).

    target_probs: [n_nodes, vocab], p(. | path to node) after temperature/top-p.
    proposal_probs[c]: the distribution q that child c's token was drawn from, or None when the
    drafter chose it deterministically (top-k), i.e. q = one-hot(token). q may be shorter or
    longer than p (padded vocabularies); it is read over p's vocabulary.

    Maths, at an accepted node with target distribution p and children x_1..x_k (each x_i ~ q_i):
      try x_i in order: accept with probability min(1, p(x_i) / q_i(x_i));
      on reject, p <- norm(max(0, p - q_i))   (the residual: what p still owes);
      if every child is rejected, the bonus token is sampled from the final residual p.
    Each round emits x with probability min(p, q)(x) + (1 - sum min(p, q)) * residual(x) = p(x),
    so the emitted token is distributed exactly as p, whatever q was (Leviathan et al. 2023;
    Miao et al. 2024). With every q = one-hot(x_i) the rounds reduce to "sample y ~ p; accept
    the child whose token is y, else y is the bonus"; done that way (one uniform per emitted
    token, inverse CDF), a seeded run emits the same tokens as target-alone sampling.
    """
    kids = children_of(parents)
    path, node = [0], 0
    while True:
        p = np.asarray(target_probs[node], dtype=np.float64)
        if all(proposal_probs[c] is None for c in kids[node]):
            y = sample(p, rng)
            nxt = next((c for c in kids[node] if tokens[c] == y), None)
            if nxt is None:
                return path, y
            path.append(nxt)
            node = nxt
            continue
        accepted = None
        for c in kids[node]:
            x = tokens[c]
            q = proposal_probs[c]
            q_x = 1.0 if q is None else float(q[x])
            p_x = float(p[x]) if x < len(p) else 0.0  # a draft-only padding row: p(x) = 0
            if q_x > 0 and rng.random() < min(1.0, p_x / q_x):
                accepted = c
                break
            if q is None:
                residual = p.copy()
                if x < len(p):
                    residual[x] = 0.0
            else:
                residual = np.maximum(p - fit_vocab(q, len(p)), 0.0)
            total = residual.sum()
            if total <= 0:  # p == q: a rejection cannot happen; keep p as it was
                continue
            p = residual / total
        if accepted is None:
            return path, sample(p, rng)
        path.append(accepted)
        node = accepted
