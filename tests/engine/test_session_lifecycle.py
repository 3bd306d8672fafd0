"""Session resources (bug 4): a failed draft load closes the streamed target it loaded; a
cancelled generation stops the streamed target's read-ahead."""

from __future__ import annotations

import threading

import pytest

from engine.config import GenerationConfig, StreamConfig
from engine.errors import ModelError
from engine.events import StepEvent
from engine.session import Session
from engine.streaming import weights as W


def io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "canopy-io" and t.is_alive()]


def half_budget(model_dir) -> int:
    index = W.index_model(model_dir)
    base = sum(t.length for t in index.other)
    return base + max(index.layer_bytes(i) for i in range(len(index.layers))) + 1


@pytest.fixture
def broken_draft(tiny_pair, tmp_path):
    import shutil

    d = tmp_path / "broken-draft"
    shutil.copytree(tiny_pair["same"], d)
    for f in d.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[:100])  # truncated weights: fails after the target loaded
    return d


def test_broken_draft_closes_the_streamed_target(tiny_pair, broken_draft, monkeypatch):
    from engine.streaming import streamed_model

    loaded = []
    real = streamed_model.load_streamed_model

    def spy(*a, **kw):
        loaded.append(real(*a, **kw))
        return loaded[-1]

    monkeypatch.setattr(streamed_model, "load_streamed_model", spy)
    before = set(io_threads())
    with pytest.raises(ModelError):
        Session.load(tiny_pair["target"], broken_draft, budget_bytes=half_budget(
            tiny_pair["target"]), stream=StreamConfig(prefetch=1))
    assert len(loaded) == 1
    store = loaded[0].model.store
    assert store.io_thread is not None and not store.io_thread.is_alive()
    assert set(io_threads()) <= before
    assert store.snapshot(0).resident_bytes == store.base_bytes  # no prefetched layer kept


def test_cancel_stops_read_ahead(tiny_pair):
    session = Session.load(tiny_pair["target"], tiny_pair["noisy"],
                           budget_bytes=half_budget(tiny_pair["target"]))
    try:
        store = session.target.model.store
        assert store.streamed and store.io_thread.is_alive()
        steps = []
        events = session.generate(session.encode("hello"), GenerationConfig(max_tokens=20),
                                  should_stop=lambda: len(steps) >= 2)
        for e in events:
            if isinstance(e, StepEvent):
                steps.append(e)
        assert not store.io_thread.is_alive()
        assert store.snapshot(0).resident_bytes == store.base_bytes
        # the next generation restarts the reader
        out = list(session.generate(session.encode("hello"), GenerationConfig(max_tokens=3)))
        assert out[-1].reason == "length"
    finally:
        session.close()
    assert not store.io_thread.is_alive()


def test_stream_config_rejects_bad_prefetch():
    with pytest.raises(ValueError, match="prefetch"):
        StreamConfig(prefetch=0)
