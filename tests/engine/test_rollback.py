"""The rollback path runs: a step that fails mid-verify leaves both KV caches at the committed
prefix, the generation ends with Failed, and generating again equals `ar`."""

from __future__ import annotations

import time
from dataclasses import replace

import mlx.core as mx
import pytest

from engine.config import GenerationConfig, TreeConfig
from engine.decoding.drafters import TreeDrafter
from engine.decoding.generate import generate
from engine.events import Failed, Finished, StepEvent
from engine.session import Session
from engine.streaming import weights as W
from engine.streaming.streamed_model import load_streamed_model
from engine.testing import make_tiny_model

PROMPT = [5, 6, 7, 8, 9]
CONFIG = GenerationConfig(mode="tree", max_tokens=24,
                          tree=TreeConfig(max_nodes=16, max_forwards=4, auto=False))


class FailingForward:
    """The target's forward, which raises after its `fail_at`-th call has written the cache."""

    def __init__(self, model, fail_at: int):
        self.model, self.fail_at, self.calls, self.cache = model, fail_at, 0, None

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, tokens, cache=None, **kw):
        out = self.model(tokens, cache=cache, **kw)
        mx.eval(out)
        self.calls += 1
        if self.calls == self.fail_at:
            self.cache = cache
            raise RuntimeError("injected fault in the middle of verification")
        return out


def committed_after(events) -> int:
    steps = [e for e in events if isinstance(e, StepEvent)]
    return len(PROMPT) - 1 + sum(len(s.accepted) for s in steps)


def test_fault_mid_verify_rolls_back_then_equals_ar(loaded_pair):
    target, draft = loaded_pair["target"], loaded_pair["noisy"]
    ar = list(generate(target, None, PROMPT, replace(CONFIG, mode="ar")))[-1]
    failing = FailingForward(target.model, fail_at=1 + 4)  # prefill, then the 4th step
    events = list(generate(replace(target, model=failing), draft, PROMPT, CONFIG))
    assert isinstance(events[-1], Failed) and "injected fault" in events[-1].message
    assert sum(isinstance(e, StepEvent) for e in events) == 3
    # the verify pass had appended the whole tree; the finally block trimmed it
    assert all(c.offset == committed_after(events) for c in failing.cache)
    again = list(generate(target, draft, PROMPT, CONFIG))[-1]
    assert isinstance(again, Finished) and again.token_ids == ar.token_ids


def slow_reader(*a, **kw):  # storage slower than a tiny draft's forward: waits have room
    time.sleep(0.02)
    return W.read_tensors(*a, **kw)


@pytest.fixture(scope="module")
def streamed_session(tmp_path_factory):
    root = tmp_path_factory.mktemp("rollback")
    target = make_tiny_model(root / "t", num_layers=4, seed=11)
    draft = make_tiny_model(root / "d", like=target, noise=0.1, seed=2)
    resident = Session.load(target, draft)
    ar = list(resident.generate(PROMPT, replace(CONFIG, mode="ar")))[-1].token_ids
    streamed = Session(load_streamed_model(target, resident.target.nbytes() // 2,
                                           reader=slow_reader), resident.draft)
    yield streamed, ar
    streamed.target.close()


def test_fault_in_draft_work_during_a_streamed_pass(streamed_session, monkeypatch):
    """Draft work while a layer loads raises: the pass is abandoned halfway through its layers,
    prefetched layers are left over; the next generation still equals ar."""
    session, ar = streamed_session
    calls = {"n": 0}
    original = TreeDrafter.work_while_waiting

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected fault in draft work during IO")
        return original(self, *args)

    monkeypatch.setattr(TreeDrafter, "work_while_waiting", flaky)
    events = list(session.generate(PROMPT, CONFIG))
    assert isinstance(events[-1], Failed) and "injected fault" in events[-1].message
    monkeypatch.setattr(TreeDrafter, "work_while_waiting", original)
    again = list(session.generate(PROMPT, CONFIG))[-1]
    assert isinstance(again, Finished) and again.token_ids == ar
