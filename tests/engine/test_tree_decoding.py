"""Lossless speculative decoding: tree and chain emit exactly the target's greedy tokens."""

from __future__ import annotations

import zlib

import mlx.core as mx
import numpy as np
import pytest

from engine.config import GenerationConfig, SamplingConfig, TreeConfig
from engine.decoding.generate import generate
from engine.decoding.tree import TokenTree
from engine.events import Failed, Finished, PrefillDone, StepEvent
from engine.models.cache import make_cache


def run(target, draft, ids, **kw):
    events = list(generate(target, draft, ids, GenerationConfig(**kw)))
    assert not any(isinstance(e, Failed) for e in events), events[-1]
    assert isinstance(events[0], PrefillDone) and isinstance(events[-1], Finished)
    return events


def random_tree(rng, root, n, vocab):
    tree = TokenTree.with_root(root)
    for _ in range(n - 1):
        tree.add(int(rng.integers(vocab)), int(rng.integers(len(tree))), 0.5)
    return tree


def test_one_pass_tree_logits_equal_sequential_paths(loaded_pair):
    """Tolerance 1e-4 (fp32): the tree mask + positions reproduce each path run alone."""
    model = loaded_pair["target"].model
    rng = np.random.default_rng(0)
    prompt = [int(t) for t in rng.integers(0, 250, 9)]
    tree = random_tree(rng, prompt[-1], 24, 250)
    cache = make_cache(len(model.layers))
    model(mx.array([prompt[:-1]]), cache=cache)
    C = len(prompt) - 1
    tree_logits = model(mx.array([tree.tokens]), cache=cache,
                        positions=tree.positions(C), mask=tree.attention_mask(C))[0]
    leaves = [i for i in range(len(tree)) if not tree.children(i)]
    for leaf in leaves:
        path = tree.path(leaf)
        seq = prompt[:-1] + [tree.tokens[i] for i in path]
        ref = model(mx.array([seq]))[0, C:]
        diff = mx.abs(ref - tree_logits[mx.array(path)]).max().item()
        assert diff < 1e-4, (leaf, diff)


def test_wrong_positions_are_detected(loaded_pair):
    model = loaded_pair["target"].model
    rng = np.random.default_rng(1)
    tree = random_tree(rng, 5, 12, 250)
    cache = make_cache(len(model.layers))
    model(mx.array([[1, 2, 3]]), cache=cache)
    good = model(mx.array([tree.tokens]), cache=make_cache(len(model.layers)),
                 positions=tree.positions(0), mask=tree.attention_mask(0))[0]
    bad = model(mx.array([tree.tokens]), cache=make_cache(len(model.layers)),
                positions=mx.arange(len(tree)), mask=tree.attention_mask(0))[0]
    assert mx.abs(good - bad).max().item() > 1e-2


@pytest.mark.parametrize("draft", ["same", "noisy", "unrelated"])
@pytest.mark.parametrize(
    "tree_config",
    [TreeConfig(), TreeConfig(max_nodes=8, top_k=2, expand_width=1, adaptive=False),
     TreeConfig(max_nodes=64, max_depth=20, threshold=1e-4, adaptive=False),
     TreeConfig(threshold=0.9, adaptive=False)],
)
def test_greedy_tree_and_chain_equal_ar(loaded_pair, draft, tree_config):
    target, d = loaded_pair["target"], loaded_pair[draft]
    # a stable seed per case (hash() of a str changes with every process's PYTHONHASHSEED)
    rng = np.random.default_rng(zlib.crc32(f"{draft}/{tree_config}".encode()))
    for _ in range(3):
        ids = [int(t) for t in rng.integers(0, 260, int(rng.integers(1, 30)))]
        n = int(rng.integers(5, 50))
        ar = run(target, None, ids, mode="ar", max_tokens=n)[-1]
        tree = run(target, d, ids, mode="tree", max_tokens=n, tree=tree_config)[-1]
        chain = run(target, d, ids, mode="chain", max_tokens=n,
                    chain_length=int(rng.integers(1, 7)))[-1]
        assert tree.token_ids == ar.token_ids
        assert chain.token_ids == ar.token_ids
        assert len(ar.token_ids) == n or ar.reason == "eos"  # max tokens can land mid-path
        assert tree.stats.target_passes <= ar.stats.target_passes


def test_identical_draft_accepts_many_tokens_per_pass(loaded_pair):
    ids = [10, 20, 30, 40]
    ev = run(loaded_pair["target"], loaded_pair["same"], ids, mode="tree", max_tokens=60,
             tree=TreeConfig(adaptive=False))[-1]
    assert ev.stats.tokens_per_pass > 2.5
    assert ev.stats.acceptance_by_depth[0] == 1.0


def test_eos_inside_the_tree_stops_like_ar(loaded_pair):
    target, draft = loaded_pair["target"], loaded_pair["same"]
    ids = [10, 20, 30, 40]
    ar = run(target, None, ids, mode="ar", max_tokens=40)[-1].token_ids
    eos = ar[17]  # pretend this token is EOS: generation must stop right before it
    original = target.tokenizer.eos_token_ids
    target.tokenizer.eos_token_ids = {eos}
    try:
        ar_eos = run(target, None, ids, mode="ar", max_tokens=40)[-1]
        tree_eos = run(target, draft, ids, mode="tree", max_tokens=40)[-1]
    finally:
        target.tokenizer.eos_token_ids = original
    assert ar_eos.reason == tree_eos.reason == "eos"
    assert tree_eos.token_ids == ar_eos.token_ids == ar[: ar.index(eos)]


@pytest.mark.parametrize("tree_texts", [False, True])
def test_step_events_carry_the_tree(loaded_pair, tree_texts):
    target = loaded_pair["target"]
    events = run(target, loaded_pair["noisy"], [1, 2, 3], mode="tree", max_tokens=20,
                 tree_texts=tree_texts)
    steps = [e for e in events if isinstance(e, StepEvent)]
    emitted = [t for s in steps for t in s.token_ids]
    assert tuple(emitted) == events[-1].token_ids
    for s in steps:
        n = len(s.tree_tokens)
        assert n == len(s.tree_parents) == len(s.tree_probs) == len(s.tree_depths)
        assert n == len(s.tree_path_probs)
        assert s.accepted[0] == 0 and all(s.tree_parents[i] < i for i in range(len(s.tree_parents)))
        assert s.from_draft.count(True) <= len(s.accepted) - 1
        for i, p in enumerate(s.tree_parents):
            assert s.tree_depths[i] == (s.tree_depths[p] + 1 if p >= 0 else 0)
            expected = s.tree_path_probs[p] * s.tree_probs[i] if p >= 0 else 1.0
            assert s.tree_path_probs[i] == pytest.approx(expected)
        assert len(s.token_texts) == len(s.token_ids) and "".join(s.token_texts) == s.text
        if tree_texts:
            assert s.tree_texts == tuple(target.tokenizer.decode([t]) for t in s.tree_tokens)
        else:
            assert s.tree_texts == ()  # decoding every node's text is only done when asked
    assert events[-1].text.startswith("".join(s.text for s in steps))


def test_cancel_then_generate_again_is_still_lossless(loaded_pair):
    target, draft = loaded_pair["target"], loaded_pair["noisy"]
    ids = [5, 6, 7, 8]
    calls = {"n": 0}

    def stop_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    cfg = GenerationConfig(mode="tree", max_tokens=30)
    cancelled = list(generate(target, draft, ids, cfg, should_stop=stop_after_three))[-1]
    assert cancelled.reason == "cancelled"
    gen = generate(target, draft, ids, cfg)
    next(gen), next(gen)
    gen.close()  # abandon mid-generation: the finally blocks run
    again = run(target, draft, ids, mode="tree", max_tokens=30)[-1]
    ar = run(target, None, ids, mode="ar", max_tokens=30)[-1]
    assert again.token_ids == ar.token_ids
    assert cancelled.token_ids == ar.token_ids[: len(cancelled.token_ids)]


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_seeded_sampling_tree_emits_what_ar_emits(loaded_pair, seed):
    """Top-k trees use one uniform per emitted token, so a seed reproduces ar's sample."""
    sampling = SamplingConfig(0.8, 0.95, seed=seed)
    ar = run(loaded_pair["target"], None, [1, 2], mode="ar", max_tokens=25, sampling=sampling)
    # auto=False: always speculate (the cost model would fall back to ar on these tiny models)
    tree = run(loaded_pair["target"], loaded_pair["noisy"], [1, 2], mode="tree", max_tokens=25,
               sampling=sampling, tree=TreeConfig(auto=False))
    assert tree[-1].token_ids == ar[-1].token_ids
    assert tree[-1].stats.target_passes < ar[-1].stats.target_passes


def two_sample_chi2_pvalue(a, b, min_count=10):
    """Two-sample chi-square on categorical samples; rare categories merged into one bin."""
    from collections import Counter

    from scipy.stats import chi2_contingency

    ca, cb = Counter(a), Counter(b)
    common = [k for k in set(ca) | set(cb) if ca[k] + cb[k] >= min_count]
    rows = [[ca[k] for k in common], [cb[k] for k in common]]
    rest = [len(a) - sum(rows[0]), len(b) - sum(rows[1])]
    if min(rest) > 0:
        rows[0].append(rest[0])
        rows[1].append(rest[1])
    return chi2_contingency(rows)[1]


@pytest.mark.slow
def test_sampled_tree_matches_target_alone_distribution(loaded_pair):
    """End to end: tokens 2 and 3 (after a multi-token accepted step) have the target's law."""
    target, draft = loaded_pair["target"], loaded_pair["noisy"]
    ids = [40, 50, 60]
    runs = 500

    def samples(mode, d, seed0):
        out = []
        for s in range(runs):
            cfg = GenerationConfig(mode=mode, max_tokens=3,
                                   sampling=SamplingConfig(1.0, 1.0, seed=seed0 + s))
            out.append(list(generate(target, d, ids, cfg))[-1].token_ids)
        return out

    ar, tree = samples("ar", None, 0), samples("tree", draft, 10_000)
    for position in (1, 2):
        at = [x[position] if len(x) > position else -1 for x in ar]  # -1: stopped at EOS
        tt = [x[position] if len(x) > position else -1 for x in tree]
        p = two_sample_chi2_pvalue(at, tt)
        assert p > 1e-3, (position, p)


def test_cache_compaction_equals_a_fresh_prefill(loaded_pair):
    """After keep(accepted path), the KV cache equals prefilling the accepted text (1e-4)."""
    model = loaded_pair["target"].model
    rng = np.random.default_rng(5)
    prompt = [int(t) for t in rng.integers(0, 250, 7)]
    tree = random_tree(rng, prompt[-1], 20, 250)
    C = len(prompt) - 1
    cache = make_cache(len(model.layers))
    model(mx.array([prompt[:-1]]), cache=cache)
    model(mx.array([tree.tokens]), cache=cache, positions=tree.positions(C),
          mask=tree.attention_mask(C))
    path = tree.path(max(range(len(tree)), key=lambda i: tree.depth[i]))
    for c in cache:
        c.keep(C, [C + i for i in path])
    fresh = make_cache(len(model.layers))
    model(mx.array([prompt[:-1] + [tree.tokens[i] for i in path]]), cache=fresh)
    for a, b in zip(cache, fresh):
        assert a.offset == b.offset == C + len(path)
        n = a.offset
        assert mx.abs(a.keys[..., :n, :] - b.keys[..., :n, :]).max().item() < 1e-4
        assert mx.abs(a.values[..., :n, :] - b.values[..., :n, :]).max().item() < 1e-4
