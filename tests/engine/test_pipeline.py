"""Compute-IO pipeline: draft work during target IO never changes the output, and gets reused."""

from __future__ import annotations

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


def final(session, ids, **kw) -> Finished:
    event = list(session.generate(ids, GenerationConfig(max_tokens=60, **kw)))[-1]
    assert isinstance(event, Finished), event
    return event


@pytest.mark.parametrize("draft", ["same", "noisy"])
def test_pipeline_is_lossless_and_drafts_during_io(deep_pair, draft):
    target, drafts = deep_pair
    ids = [40, 50, 60]
    ar = final(Session.load(target), ids, mode="ar")
    resident_bytes = Session.load(target).target.nbytes()
    # "always": run draft work at every IO wait (the default "fit" policy also weighs timing)
    streamed = Session(
        load_streamed_model(target, resident_bytes // 2, hook_policy="always"),
        Session.load(drafts[draft]).target,
    )
    try:
        with_pipe = final(streamed, ids, mode="tree", pipeline=True)
        without = final(streamed, ids, mode="tree", pipeline=False)
    finally:
        streamed.target.close()
    assert with_pipe.token_ids == without.token_ids == ar.token_ids
    stats = with_pipe.stats.to_dict()
    assert stats["draft_tokens_during_io"] > 0
    assert without.stats.to_dict()["draft_tokens_during_io"] == 0
    if draft == "same":  # an identical draft guesses the path and the bonus: work is reused
        assert stats["draft_tokens_during_io_used"] > 0
