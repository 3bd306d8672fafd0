"""Greedy generation through a streamed target emits exactly the resident target's tokens."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import GenerationConfig
from engine.events import Failed, Finished, StepEvent
from engine.session import Session
from engine.streaming import weights as W
from engine.testing import make_tiny_model

FRACTIONS = {"100%": 1.0, "50%": 0.5, "25%": 0.25, "one-layer": 0.0}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("sg")
    target = make_tiny_model(root / "t", num_layers=6, seed=11, shards=2)
    draft = make_tiny_model(root / "d", like=target, noise=0.1, seed=2)
    return target, draft


@pytest.fixture(scope="module")
def reference(pair):
    """Token ids of the resident target, per (mode, prompt)."""
    session = Session.load(*pair)
    return {(mode, i): list(session.generate(ids, GenerationConfig(mode=mode, max_tokens=16)))[-1]
            .token_ids for mode in ("ar", "tree") for i, ids in enumerate(prompts())}


def budget_for(model_dir, frac: float) -> int:
    index = W.index_model(model_dir)
    layers = [index.layer_bytes(i) for i in range(len(index.layers))]
    return sum(t.length for t in index.other) + max(int(frac * sum(layers)), max(layers))


def prompts():
    rng = np.random.default_rng(4)
    return [[int(t) for t in rng.integers(0, 260, n)] for n in (1, 17)]


@pytest.mark.parametrize("frac", FRACTIONS.values(), ids=FRACTIONS.keys())
def test_greedy_ar_and_tree_identical(pair, reference, frac):
    budget = budget_for(pair[0], frac)
    session = Session.load(*pair, budget_bytes=budget)
    try:
        for mode in ("ar", "tree"):
            for i, ids in enumerate(prompts()):
                events = list(session.generate(ids, GenerationConfig(mode=mode, max_tokens=16)))
                got = events[-1]
                assert isinstance(got, Finished), got
                assert got.token_ids == reference[mode, i], (mode, len(ids))
                st = got.stats
                assert 0 < st.peak_target_resident_bytes <= budget
                assert (st.target_bytes_read > 0) == (frac < 1.0)
                steps = [e for e in events if isinstance(e, StepEvent)]
                assert all(e.target_resident_bytes <= budget for e in steps)
                assert all(e.layers_pinned + e.layers_streamed == 6 for e in steps)
    finally:
        session.target.close()


def test_io_fault_becomes_failed_event(pair, tmp_path):
    target = make_tiny_model(tmp_path / "t", num_layers=6, seed=11, shards=2)
    session = Session.load(target, pair[1], budget_bytes=budget_for(target, 0.0))
    try:
        (target / "model-00002-of-00002.safetensors").unlink()
        events = list(session.generate(prompts()[1], GenerationConfig(mode="tree", max_tokens=8)))
        assert isinstance(events[-1], Failed)
        assert "model-00002-of-00002.safetensors" in events[-1].message
    finally:
        session.target.close()
    assert not session.target.model.store.io_thread.is_alive()


def test_reference_is_not_trivial(reference):
    assert all(len(ids) >= 8 for ids in reference.values())
