"""Drafts without a draft model: prompt lookup, the n-gram pool, lookahead (Jacobi) decoding and
the merged tree. Every mode must emit exactly the target's greedy tokens."""

from __future__ import annotations

import numpy as np
import pytest
from test_tree_decoding import two_sample_chi2_pvalue  # tests/engine is on sys.path

from engine.config import GenerationConfig, LookaheadConfig, LookupConfig, SamplingConfig
from engine.decoding.branch_prior import BranchPrior
from engine.decoding.drafters import NoDrafter, Proposal, StepResult
from engine.decoding.generate import generate
from engine.decoding.lookahead import LookaheadDrafter
from engine.decoding.ngram_pool import NgramPool
from engine.decoding.prompt_lookup import LookupDrafter, find_continuations
from engine.decoding.tree import TokenTree
from engine.events import Failed, Finished, StepEvent
from engine.formats.loader import load_model
from engine.testing import make_tiny_model

PROMPT_ONLY = LookupConfig(sources=("prompt",))
NO_BRANCHES = LookupConfig(sources=())


def run(target, draft, ids, **kw):
    events = list(generate(target, draft, ids, GenerationConfig(**kw)))
    assert isinstance(events[-1], Finished), events[-1]
    return events


def prompts_with_repeats(rng, count):
    """Random prompts, half of them quoting an earlier passage of themselves."""
    out = []
    for k in range(count):
        ids = [int(t) for t in rng.integers(0, 260, int(rng.integers(1, 30)))]
        if k % 2:
            passage = [int(t) for t in rng.integers(0, 260, 12)]
            ids = passage + ids + passage[: int(rng.integers(1, 12))]
        out.append(ids)
    return out


def test_find_continuations_longest_then_most_recent():
    ctx = np.array([1, 2, 3, 9, 8, 2, 3, 7, 7, 5, 2, 3])
    # 2-gram (2, 3): after index 5 comes 7 7 5 ..., after index 1 comes 9 8 ...
    assert find_continuations(ctx, 1, 2, 3, 4)[:2] == [(7, 7, 5), (9, 8, 2)]
    assert find_continuations(ctx, 1, 2, 3, 1) == [(7, 7, 5)]
    # a continuation that is a prefix of one already found adds nothing
    assert find_continuations(np.array([4, 6, 4, 6, 4]), 1, 1, 2, 5) == [(6, 4)]
    assert find_continuations(np.array([1, 2, 3]), 1, 3, 4, 4) == []


def test_add_branch_merges_shared_prefixes_and_respects_the_cap():
    tree = TokenTree.with_root(0)
    a = tree.add_branch(0, [5, 6, 7], 0.5, "prompt", 100)
    b = tree.add_branch(0, [5, 6, 8], 0.5, "ngram", 100)
    assert a[:2] == b[:2] and a[2] != b[2] and len(tree) == 5
    assert tree.sources == ["root", "prompt", "prompt", "prompt", "ngram"]
    assert tree.add_branch(0, [1, 2, 3], 0.5, "prompt", 6) == [5]


def test_ngram_pool_harvests_path_tails_and_target_predictions():
    tree = TokenTree.with_root(10)
    x = tree.add(11, 0, 0.5)
    tree.add(12, x, 0.5)
    tree.add(13, 0, 0.5)
    pool = NgramPool(n=3, size=2)
    pool.harvest(tree, [20, 21, 22, 23], before=[9])
    assert pool.lookup(9, 5) == [(10, 20)]
    assert pool.lookup(10, 5) == [(13, 23), (11, 21)]  # most recent first
    assert pool.lookup(11, 5) == [(12, 22)]
    pool.add([10, 1, 2])
    assert pool.lookup(10, 5) == [(1, 2), (13, 23)]  # capped at `size` per first token


def test_branch_prior_learns_how_deep_a_source_is_right():
    prior = BranchPrior(0.5)
    assert prior.prob("prompt", 3) == pytest.approx(0.125)
    for _ in range(30):  # prompt branches: right 6 deep; n-gram branches: wrong at once
        tree = TokenTree.with_root(0)
        right = tree.add_branch(0, [1, 2, 3, 4, 5, 6], 0.5, "prompt", 100)
        tree.add_branch(0, [9, 8], 0.5, "ngram", 100)
        prior.observe(tree, [0, *right], first=1)
    assert prior.prob("prompt", 10) > 0.5  # depths never tried inherit the rate above
    assert prior.prob("ngram", 1) < 0.1  # smoothed toward the right prompt branches
    # an untried source starts from every tried kind's first-level rate (half right here)
    assert prior.prob("jacobi", 1) == pytest.approx(prior.start_rate("jacobi"))
    assert 0.45 < prior.start_rate("jacobi") < 0.55


def test_an_untried_source_starts_from_the_rate_of_those_tried():
    """Branches of one source wrong at once: another source (or kind) not tried yet starts near
    their rate, not at the prior (each kind would cost its own wrong steps first)."""
    prior = BranchPrior(0.5)
    for _ in range(6):
        tree = TokenTree.with_root(0)
        tree.add_branch(0, [1, 2, 3], 0.5, "prompt", 100)
        prior.observe(tree, [0], first=1)
    assert prior.prob("prompt", 1) < 0.25
    assert prior.start_rate("ngram") == pytest.approx(prior.prob("prompt", 1), rel=0.3)
    assert prior.prob("ngram", 1) < 0.25 and prior.prob("ngram+alt", 1) < 0.25


def test_a_long_match_starts_far_likelier_than_a_one_token_one():
    """A prompt lookup branch's first kind is keyed by the length of the match that found it:
    a 3-token match's first node starts at its prior (0.8 here, then 0.8 per depth: a long
    copy), a 1-token match's at 0.2 (then `prior` per depth: once its first token held it goes
    on as any copy); each then learns on its own, and the source's other branches start from
    what its first branches showed, whatever their match length."""
    config = LookupConfig(sources=("prompt",), match_prior=(0.2, 0.5, 0.8), min_prob=0.01,
                          resume_steps=0)
    text = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    long = LookupDrafter(NoDrafter(), config)
    long.prefill([*text, 1, 2, 3])  # the last three tokens occurred before
    proposal = long.propose(3, len(text) + 2)
    assert proposal.tree.tokens[1:] == [4, 5, 6, 7, 8, 9, 10, 11, 1, 2, 3]
    assert {kind for kind, _ in long.kinds.values()} == {"prompt"}
    short = LookupDrafter(NoDrafter(), config)
    short.prefill([*text, 12, 3])  # only the last token occurred before
    proposal = short.propose(3, len(text) + 1)
    # 0.2 for its first token, then `prior` 0.5 per depth: 0.2, 0.1, ... 0.0125 >= 0.01
    assert proposal.tree.tokens[1:] == [4, 5, 6, 7, 8]
    assert {kind for kind, _ in short.kinds.values()} == {"prompt+n1"}

    prior = long.prior
    for _ in range(8):  # 1-token matches keep failing: only their kind learns it
        tree = TokenTree.with_root(0)
        tree.add_branch(0, [1, 2], 0.2, "prompt", 100)
        prior.observe(tree, [0], first=1, kinds={1: ("prompt+n1", 0), 2: ("prompt+n1", 0)})
    assert prior.prob("prompt+n1", 1) < 0.1
    assert prior.prob("prompt", 1) == pytest.approx(0.8)
    assert prior.start_rate("prompt+alt") < 0.2  # the first branches tried: all wrong


def test_lookahead_window_is_a_tree_of_diagonals():
    drafter = LookaheadDrafter(LookaheadConfig(window=3, ngram=4, candidates=0))
    drafter.prefill(list(range(30, 60)))
    tree = drafter.propose(7, 29).tree
    nodes = drafter.window_nodes
    assert len(nodes) == 3 and all(len(row) == 3 for row in nodes)
    for j, row in enumerate(nodes):
        for i, node in enumerate(row):
            assert tree.depth[node] == i + j + 1
            assert tree.tokens[node] == drafter.levels[j][i]
            assert tree.sources[node] in ("jacobi", "ngram")


def test_mode_tree_without_a_draft_uses_draft_free_branches(loaded_pair):
    events = run(loaded_pair["target"], None, [1, 2, 3, 1, 2], mode="tree", max_tokens=8)
    assert events[-1].stats.mode == "tree"
    failed = list(generate(loaded_pair["target"], None, [1, 2], GenerationConfig(
        mode="tree", lookup=NO_BRANCHES)))[-1]
    assert isinstance(failed, Failed) and "draft model" in failed.message


def test_a_sessions_answers_share_what_their_branches_learned(loaded_pair):
    """One LookupMemory per lookup configuration and draft use: the second answer's branches
    start from (and add to) the first's; draft-free mode learns apart from the merged tree."""
    from engine.costmodel.timing_store import TimingStore
    from engine.session import Session

    session = Session(loaded_pair["target"], loaded_pair["noisy"], timings=TimingStore(None))
    prompt = [1, 2, 3, 4, 5, 6, 1, 2, 3]
    config = GenerationConfig(mode="tree", max_tokens=12, lookup=PROMPT_ONLY)
    seen = []
    for _ in range(2):
        assert isinstance(list(session.generate(prompt, config))[-1], Finished)
        (memory,) = session.lookup_memory.values()
        seen.append(memory)
    assert seen[0] is seen[1] and memory.answers == 2  # each answer's drafter started from it
    assert memory.prior.reached  # and learned into it
    alone = Session(loaded_pair["target"], None, timings=TimingStore(None))
    list(alone.generate(prompt, config))
    assert [with_draft for _, with_draft in alone.lookup_memory] == [False]


@pytest.mark.parametrize("case", ["lookahead", "lookahead-wide", "lookahead-n2", "prompt",
                                  "free", "merged", "merged-fixed"])
def test_greedy_draft_free_modes_equal_ar(loaded_pair, case):
    target, noisy = loaded_pair["target"], loaded_pair["noisy"]
    kw = {
        "lookahead": dict(mode="lookahead"),
        "lookahead-wide": dict(mode="lookahead", lookahead=LookaheadConfig(6, 4, 4, 6)),
        "lookahead-n2": dict(mode="lookahead", lookahead=LookaheadConfig(3, 2, 2, 1)),
        "prompt": dict(mode="tree", lookup=PROMPT_ONLY),
        "free": dict(mode="tree"),
        "merged": dict(mode="tree"),
        "merged-fixed": dict(mode="tree", lookup=LookupConfig(max_nodes=40, max_branches=6)),
    }[case]
    draft = noisy if case.startswith("merged") else None
    if case == "merged-fixed":
        from engine.config import TreeConfig
        kw["tree"] = TreeConfig(adaptive=False, max_nodes=16)
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    for ids in prompts_with_repeats(rng, 4):
        n = int(rng.integers(5, 50))
        ar = run(target, None, ids, mode="ar", max_tokens=n)[-1]
        events = run(target, draft, ids, max_tokens=n, **kw)
        assert events[-1].token_ids == ar.token_ids, (case, ids)
        assert events[-1].stats.target_passes <= ar.stats.target_passes
        for s in (e for e in events if isinstance(e, StepEvent)):
            assert len(s.tree_sources) == len(s.tree_tokens) and s.tree_sources[0] == "root"
            assert set(s.tree_sources[1:]) <= {"draft", "prompt", "ngram", "jacobi"}


@pytest.mark.priced_branches
@pytest.mark.parametrize("with_draft", [False, True])
def test_priced_branches_keep_greedy_ids(loaded_pair, with_draft):
    """As shipped, branches priced against the measured pass seconds (some steps drop them, or
    keep only the first): whatever is kept or dropped, the ids are ar's."""
    target = loaded_pair["target"]
    draft = loaded_pair["noisy"] if with_draft else None
    rng = np.random.default_rng(7 + with_draft)
    for ids in prompts_with_repeats(rng, 4):
        ar = run(target, None, ids, mode="ar", max_tokens=40)[-1]
        tree = run(target, draft, ids, mode="tree", max_tokens=40)[-1]
        assert tree.token_ids == ar.token_ids, ids


@pytest.fixture(scope="module")
def copier(tmp_path_factory):
    """A tiny model whose next token depends on the current one only, and a prompt that quotes
    the model's own greedy chain from `start`: the answer copies the quoted passage."""
    model = load_model(make_tiny_model(tmp_path_factory.mktemp("copier"), seed=5, bigram=True))
    start = 40
    chain = run(model, None, [start], mode="ar", max_tokens=48)[-1].token_ids
    assert len(set(chain)) > 8  # a passage, not a two-token loop
    junk = [t for t in range(100, 140) if t != start and t not in chain][:10]
    return model, junk + [start, *chain] + junk[::-1] + [start]


def test_prompt_lookup_alone_copies_a_quoted_passage_fast(copier):
    model, prompt = copier
    ar = run(model, None, prompt, mode="ar", max_tokens=40)[-1]
    lookup = run(model, None, prompt, mode="tree", max_tokens=40, lookup=PROMPT_ONLY)[-1]
    assert lookup.token_ids == ar.token_ids
    assert lookup.stats.tokens_per_pass > 1.5, lookup.stats.tokens_per_pass
    assert lookup.stats.extra["accepted_by_source"]["prompt"] > 0


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("mode", ["lookahead", "tree"])
def test_seeded_sampling_draft_free_emits_what_ar_emits(loaded_pair, seed, mode):
    """Guessed nodes are deterministic proposals: one uniform per emitted token, as in ar, so a
    seed reproduces ar's sample exactly, in fewer passes."""
    sampling = SamplingConfig(0.3, 0.95, seed=seed)
    ids = [3, 4, 5, 3, 4]
    ar = run(loaded_pair["target"], None, ids, mode="ar", max_tokens=30, sampling=sampling)
    got = run(loaded_pair["target"], None, ids, mode=mode, max_tokens=30, sampling=sampling)
    assert got[-1].token_ids == ar[-1].token_ids
    assert got[-1].stats.target_passes < ar[-1].stats.target_passes


@pytest.mark.slow
def test_sampled_lookahead_matches_target_alone_distribution(loaded_pair):
    """Two-sample chi-square on late tokens (the n-gram pool is warm by then), with evidence that
    guesses were accepted along the way."""
    model, ids, runs, late = loaded_pair["target"], [3, 4, 5, 3, 4], 300, (9, 10, 11)

    def samples(mode, seed0):
        out, passes = [], 0
        for s in range(runs):
            cfg = GenerationConfig(mode=mode, max_tokens=12,
                                   sampling=SamplingConfig(0.5, 1.0, seed=seed0 + s))
            fin = list(generate(model, None, ids, cfg))[-1]
            out.append(fin.token_ids)
            passes += fin.stats.target_passes
        return out, passes

    (ar, ar_passes), (la, la_passes) = samples("ar", 0), samples("lookahead", 50_000)
    assert la_passes < 0.97 * ar_passes  # multi-token steps happened
    for position in late:
        a = [x[position] if len(x) > position else -1 for x in ar]
        b = [x[position] if len(x) > position else -1 for x in la]
        p = two_sample_chi2_pvalue(a, b)
        assert p > 1e-3, (position, p)


def test_streamed_target_at_half_budget_equals_resident_ar(tmp_path):
    """Lookahead, draft-free tree and merged tree through a target streamed at 50 % budget."""
    from test_streaming_generate import budget_for

    from engine.session import Session

    target = make_tiny_model(tmp_path / "t", num_layers=6, seed=11, shards=2)
    draft = make_tiny_model(tmp_path / "d", like=target, noise=0.1, seed=2)
    budget = budget_for(target, 0.5)
    resident = Session.load(target, None)
    streamed = Session.load(target, draft, budget_bytes=budget)
    streamed_alone = Session.load(target, None, budget_bytes=budget)
    rng = np.random.default_rng(8)
    for ids in prompts_with_repeats(rng, 2):
        ar = list(resident.generate(ids, GenerationConfig(mode="ar", max_tokens=16)))[-1]
        for session, mode in ((streamed_alone, "lookahead"), (streamed_alone, "tree"),
                              (streamed, "tree")):
            events = list(session.generate(ids, GenerationConfig(mode=mode, max_tokens=16)))
            got = events[-1]
            assert isinstance(got, Finished), got
            assert got.token_ids == ar.token_ids, (mode, session is streamed)
            assert 0 < got.stats.peak_target_resident_bytes <= budget
            assert got.stats.target_bytes_read > 0
            assert all(e.target_resident_bytes <= budget for e in events
                       if isinstance(e, StepEvent))


class TwoLeafDraft(NoDrafter):
    """A draft tree root -> 5 -> 6 (likely) and root -> 8 (unlikely)."""

    def propose(self, root, committed):
        tree = TokenTree.with_root(root)
        a = tree.add(5, 0, 0.9)
        tree.add(6, a, 0.9)
        tree.add(8, 0, 0.05)
        return Proposal(tree, [None] * len(tree), forwards=[(1, 0.01)])


@pytest.mark.parametrize("below_draft", [0, 1])
def test_lookup_continues_below_the_drafts_likely_leaves(below_draft):
    """The text after `4 5 6` (the root and the draft's likely path) is copied below the leaf
    `6`: where the draft stops, the quoted text goes on; with below_draft=0 it does not."""
    config = LookupConfig(sources=("prompt",), below_draft=below_draft, min_prob=0.01)
    drafter = LookupDrafter(TwoLeafDraft(), config)
    history = [5, 6, 7, 3, 2, 9, 9]  # the root 4 is new: no branch from the root
    drafter.prefill(history + [4])
    tree = drafter.propose(4, len(history)).tree
    leaf = 2  # the node of token 6
    below = [tree.tokens[i] for i in range(4, len(tree)) if leaf in tree.path(i)]
    assert below == ([7, 3, 2, 9, 9, 4, 5, 6][: len(below)] if below_draft else [])
    assert len(tree) == 4 + len(below)
    assert len(below) >= 2 * below_draft  # 0.81 * prior 0.5 ** depth clears 0.01 twice
    if below_draft:  # learned apart from root branches, by depth below the leaf
        kinds = {drafter.kinds[i] for i in range(4, len(tree)) if leaf in tree.path(i)}
        assert kinds == {("prompt+deep", 2)}


@pytest.mark.parametrize("resume_steps", [0, 2])
def test_a_copy_resumes_after_the_target_replaced_a_token(resume_steps):
    """An edit: the copy `1 2 3 4 6 7 9` is left at `3`, the target says 42 (a new token, so
    the last tokens match nothing in the text); the next tree offers the text after the spot
    (42 replaced 3 / was inserted before it / replaced two or three tokens)."""
    config = LookupConfig(sources=("prompt",), resume_steps=resume_steps, min_prob=0.001)
    drafter = LookupDrafter(NoDrafter(), config)
    history = [5, 1, 2, 3, 4, 6, 7, 9]
    drafter.prefill(history + [5])
    proposal = drafter.propose(5, len(history))
    tree = proposal.tree
    assert tree.tokens[1:4] == [1, 2, 3]
    path = (0, 1, 2)  # 1 2 accepted, then the target's 42 instead of 3
    drafter.commit(tree, list(path), 42, len(history))
    drafter.feedback(StepResult(proposal, path, 42, 0.1))
    tree = drafter.propose(42, len(history) + 3).tree
    firsts = [tree.tokens[c] for c in tree.children(0)]
    assert firsts == ([4, 3, 6, 7] if resume_steps else [])
    if resume_steps:  # the first resumed copy goes on as the text does: 4 6 7 9
        first = tree.children(0)[0]
        assert [tree.tokens[i] for i in range(first, first + 4)] == [4, 6, 7, 9]
