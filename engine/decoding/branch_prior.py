"""What a draft-free branch is expected to win: acceptance by depth per kind of branch, learned
online (`BranchPrior`), the expected accepted nodes of one step's branches (`expected_tokens`),
and what a session's earlier answers learned (`LookupMemory`). engine.decoding.prompt_lookup
places branches with them."""

from __future__ import annotations

from dataclasses import dataclass, field

ALT = "+alt"  # BranchPrior kind suffix of a source's second and later branches
DEEP = "+deep"  # ... and of branches hung below the draft model's leaves
RESUME = "+resume"  # ... and of copies resumed after the target left one (`resumed`)
MATCH = "+n"  # ... and of a first branch found by a match of n tokens, shorter than the longest
# length `LookupConfig.match_prior` names (longer matches keep the source's own name)


def match_kind(source: str, n: int, lengths: int) -> str:
    """The BranchPrior kind of `source`'s first branch found by an `n`-token match, with
    priors for `lengths` match lengths (the last one for it and all longer)."""
    return source if n >= lengths else f"{source}{MATCH}{n}"


def match_priors(source: str, priors: tuple[float, ...]) -> dict[str, float]:
    """Each match-length kind of `source`'s first branch with its prior."""
    return {match_kind(source, n, len(priors)): p for n, p in enumerate(priors, start=1)}


def expected_tokens(branches: list[tuple[int, list[float]]]) -> float:
    """Expected accepted nodes of draft-free branches, each (node it hangs below, acceptance
    estimates of its nodes): the sum of the estimates, but siblings are exclusive (one token
    follows a node), so branches below one node count at most one first token together (each
    kind's learned rate alone may say more, e.g. at its prior before any step)."""
    firsts: dict[int, float] = {}
    for parent, probs in branches:
        firsts[parent] = firsts.get(parent, 0.0) + probs[0]
    return sum(sum(probs) / max(1.0, firsts[parent]) for parent, probs in branches)


CARRIED = 0.5  # share of a kind's acceptance counts a session's next answer starts from


class BranchPrior:
    """P(a draft-free node at depth d is accepted), per kind of branch, learned online.

    Kinds are a source's first branch (its best match: `source`, or `source` + MATCH + n when
    an n-token match found it and `priors` holds a prior for that length: a long match is right
    far more often than a 1-token one) and its other branches (`source` + ALT): one step's
    alternatives are mostly wrong, and pooling them with the first would hold the first branch
    to their rate.

    Per depth, the acceptance rate of nodes whose parent was accepted (decaying counts,
    smoothed toward the rate one level up, which starts at `prior`); P(d) is their product.
    A depth never tried inherits the rate above it, so a source that keeps being right grows
    its branches deeper.
    """

    def __init__(self, prior: float, decay: float = 0.97, priors: dict[str, float] | None = None):
        self.prior, self.decay = prior, decay
        self.priors = dict(priors or {})  # kinds with a prior of their own (match lengths)
        self.reached: dict[str, list[float]] = {}  # depth d: nodes whose parent was accepted
        self.hit: dict[str, list[float]] = {}  # ... and that were accepted themselves

    def prob(self, source: str, depth: int) -> float:
        reached, hit = self.reached.get(source, ()), self.hit.get(source, ())
        p, rate = 1.0, self.start_rate(source)
        for d in range(1, depth + 1):
            if d == 2 and source in self.priors:  # a match length's prior is its first token's:
                rate = max(rate, self.prior)  # once that held, the copy goes on as any copy
            if d < len(reached):
                rate = (hit[d] + 2 * rate) / (reached[d] + 2)
            p *= rate
        return p

    def start_rate(self, kind: str) -> float:
        """Where a kind's rate starts: its source's first-level rate once the source's first
        branch was tried (a source wrong on its best match is no better on its others), else
        the first-level rate of the other kinds tried (text the target does not copy from the
        prompt is no likelier to repeat its own n-grams), else `prior`. A kind with a prior of
        its own (a match length) starts there."""
        if kind in self.priors:
            return self.priors[kind]
        base = kind.split("+")[0]
        firsts = [k for k in dict.fromkeys((base, *self.priors)) if k.split("+")[0] == base
                  and len(self.reached.get(k, ())) >= 2]  # the source's first branches
        if base != kind and firsts:
            hit = sum(self.hit[k][1] for k in firsts)
            return (hit + 2 * self.prior) / (sum(self.reached[k][1] for k in firsts) + 2)
        tried = [k for k in self.reached if k != kind and len(self.reached[k]) >= 2]
        reached = sum(self.reached[k][1] for k in tried)
        hit = sum(self.hit[k][1] for k in tried)
        return (hit + 2 * self.prior) / (reached + 2)

    def observe(self, tree, accepted, first: int,
                kinds: dict[int, tuple[str, int]] | None = None) -> None:
        """Count nodes `first`.. of a verified tree (the draft-free ones); `kinds`: node ->
        (kind of branch, depth of the node it hangs below) (default: its source, the root)."""
        self.fade(self.decay)
        taken = set(accepted)
        for i in range(first, len(tree)):
            if tree.parents[i] not in taken:
                continue
            source, anchor = (kinds or {}).get(i, (tree.sources[i], 0))
            depth = tree.depth[i] - anchor
            reached = self.reached.setdefault(source, [])
            hit = self.hit.setdefault(source, [])
            while len(reached) <= depth:
                reached.append(0.0)
                hit.append(0.0)
            reached[depth] += 1
            hit[depth] += i in taken

    def fade(self, share: float) -> None:
        """Keep `share` of every count (each step's decay; a new answer's CARRIED: its text may
        copy more or less than the last one's)."""
        for source in self.reached:
            self.reached[source] = [x * share for x in self.reached[source]]
            self.hit[source] = [x * share for x in self.hit[source]]


def no_outcomes() -> dict[bool, list[float]]:
    return {True: [0.0, 0.0, 0.0], False: [0.0, 0.0, 0.0]}


@dataclass
class LookupMemory:
    """What a session's draft-free branches learned in its earlier answers, where the next
    answer starts: each kind's acceptance (`prior`, faded by CARRIED per answer), what the
    inner drafter's root-only steps emitted per second with branches and without (`outcomes`:
    decayed [tokens, seconds, steps]; the seconds do not depend on the text) and the steps
    whose branches were dropped since one last went to explore (`unpaid`). Without it each
    answer paid again, on its first steps, to learn that branches lose on its pair (the
    Session keeps one per lookup configuration; engine.session)."""

    prior: BranchPrior
    outcomes: dict[bool, list[float]] = field(default_factory=no_outcomes)
    unpaid: int = 0
    answers: int = 0

    @classmethod
    def fresh(cls, prior: float, priors: dict[str, float] | None = None) -> LookupMemory:
        return cls(BranchPrior(prior, priors=priors))

    @classmethod
    def for_lookup(cls, config) -> LookupMemory:
        """A fresh memory for draft-free branches configured by `config` (LookupConfig)."""
        return cls.fresh(config.prior, match_priors("prompt", config.match_prior))

    def next_answer(self) -> LookupMemory:
        """Called as an answer starts: earlier answers' acceptance fades (CARRIED)."""
        if self.answers:
            self.prior.fade(CARRIED)
        self.answers += 1
        return self
