"""Compute-IO pipeline: drafting the next step's tree during target IO never changes the output,
and its nodes get reused when the guess was right."""

from __future__ import annotations

import time

import pytest

from engine.config import GenerationConfig, TreeConfig
from engine.events import Finished
from engine.session import Session
from engine.streaming import weights as W
from engine.streaming.streamed_model import load_streamed_model
from engine.testing import make_tiny_model


@pytest.fixture(scope="module")
def deep_pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("deep")
    target = make_tiny_model(root / "t", seed=1, num_layers=6, hidden_size=128,
                             intermediate_size=512)
    return target, {
        "same": make_tiny_model(root / "same", like=target),
        "noisy": make_tiny_model(root / "noisy", like=target, noise=0.1, seed=3),
    }


def slow_reader(*a, seconds: float = 0.03, **kw):
    """Storage slower than the tiny draft's forwards, so waits have room for draft work."""
    time.sleep(seconds)
    return W.read_tensors(*a, **kw)


def slower_reader(*a, **kw):
    # a 512-node next tree grows in forwards of ~128 tokens (0.01-0.15 s on a loaded 2-core
    # machine): reads must outlast them by a wide margin, or the policy rightly declines
    return slow_reader(*a, seconds=0.3, **kw)


def final(session, ids, **kw) -> Finished:
    event = list(session.generate(ids, GenerationConfig(max_tokens=40, **kw)))[-1]
    assert isinstance(event, Finished), event
    return event


TREES = {  # auto off: every step drafts, so every wait has a next tree to grow
    "16 nodes": (TreeConfig(max_nodes=16, max_forwards=4, auto=False), slow_reader),
    "512 nodes": (TreeConfig(max_nodes=512, max_forwards=4, adaptive=False, threshold=0.0),
                  slower_reader),
}


@pytest.mark.parametrize("draft", ["same", "noisy"])
@pytest.mark.parametrize("tree", TREES)
def test_pipeline_is_lossless_and_reuses_the_next_tree(deep_pair, draft, tree):
    target, drafts = deep_pair
    ids = [40, 50, 60]
    ar = final(Session.load(target), ids, mode="ar")
    resident_bytes = Session.load(target).target.nbytes()
    streamed = Session(
        load_streamed_model(target, resident_bytes // 2, reader=TREES[tree][1]),
        Session.load(drafts[draft]).target,
    )
    try:
        with_pipe = final(streamed, ids, mode="tree", pipeline=True, tree=TREES[tree][0])
        without = final(streamed, ids, mode="tree", pipeline=False, tree=TREES[tree][0])
    finally:
        streamed.target.close()
    assert with_pipe.token_ids == without.token_ids == ar.token_ids
    stats = with_pipe.stats.to_dict()
    assert stats["draft_tokens_during_io"] > 0
    assert without.stats.to_dict()["draft_tokens_during_io"] == 0
    assert stats["draft_tokens_during_io_used"] <= stats["draft_tokens_during_io"]
    if draft == "same":  # an identical draft guesses the path and the bonus: its tree is reused
        assert stats["draft_tokens_during_io_used"] > 0


def test_next_tree_drafted_during_verification_matches_a_sequential_draft(tmp_path):
    """The next tree's draft distributions (computed in the draft cache behind the current
    tree's entries) equal the draft run on the accepted text from scratch, and after a correct
    guess the cache holds committed + path + the next tree's nodes."""
    import mlx.core as mx

    from engine.config import SamplingConfig
    from engine.decoding.drafters import DraftModel, TreeDrafter
    from engine.decoding.pipeline import extend_once
    from engine.formats.loader import load_model

    model = load_model(make_tiny_model(tmp_path / "t", seed=1, num_layers=2)).model
    drafter = TreeDrafter(DraftModel(model, SamplingConfig()),
                          TreeConfig(max_nodes=16, threshold=0.0))
    prompt = [40, 50, 60, 70]
    drafter.prefill(prompt)
    committed = len(prompt) - 1
    tree = drafter.propose(prompt[-1], committed).tree
    ext = drafter.extension
    while extend_once(drafter.draft, ext):
        pass
    nxt, path = ext.next_tree, tree.path(ext.leaf)
    assert len(nxt) == 16 and len(ext.slots) > 1
    for node in ext.slots:
        text = prompt[:-1] + [tree.tokens[n] for n in path]
        text += [nxt.tokens[n] for n in nxt.path(node)]
        want = mx.softmax(model(mx.array([text]))[0, -1].astype(mx.float32))
        assert mx.abs(want - ext.next_dists[node]).max().item() < 1e-5
    drafter.commit(tree, path, nxt.tokens[0], committed)
    assert drafter.carry is ext
    assert drafter.draft.cache[0].offset == committed + len(path) + len(ext.slots)


def test_auto_policy_streamed_is_lossless_and_sees_its_wait_work(deep_pair, monkeypatch):
    """Auto policy, streamed target, pipeline on: greedy ids equal ar, and the policy is told
    how much of each pass was draft work at the waits and how long the IO thread read."""
    from engine.costmodel.policy import StepPolicy

    seen = []
    observe = StepPolicy.observe

    def spy(self, result):
        seen.append(result)
        observe(self, result)

    monkeypatch.setattr(StepPolicy, "observe", spy)
    target, drafts = deep_pair
    ids = [40, 50, 60]
    ar = final(Session.load(target), ids, mode="ar")
    resident_bytes = Session.load(target).target.nbytes()
    streamed = Session(
        load_streamed_model(target, resident_bytes // 2, reader=slow_reader),
        Session.load(drafts["noisy"]).target,
    )
    try:
        auto = final(streamed, ids, mode="tree", pipeline=True, tree=TreeConfig(max_forwards=4))
    finally:
        streamed.target.close()
    assert auto.token_ids == ar.token_ids
    assert all(r.io_busy_seconds is not None and r.io_busy_seconds > 0 for r in seen)
    assert any(r.wait_work_seconds > 0 for r in seen)
    assert all(r.wait_work_seconds <= r.io_wait_seconds + 1e-9 for r in seen)
