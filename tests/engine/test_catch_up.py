"""The draft's catch-up on pending tokens (the deferred prompt, tokens decoded at ar) is priced
against what speculation could save over the tokens left (engine.costmodel.catch_up): a draft
whose catch-up cannot pay stops after one measured chunk, one whose catch-up pays catches up in
growing chunks, a streamed target's IO waits catch it up for free, and the ids never change."""

from __future__ import annotations

import time

import pytest

from engine.config import GenerationConfig, LookupConfig, TreeConfig
from engine.costmodel.catch_up import TAIL, CatchUp
from engine.costmodel.policy import StepPolicy
from engine.costmodel.timing_store import PairTiming, TimingStore
from engine.decoding.draft_model import DraftModel
from engine.events import Failed, Finished
from engine.session import Session
from engine.streaming import weights as W
from engine.streaming.streamed_model import load_streamed_model
from engine.testing import make_tiny_model

# the streamed case measured on the coder pair with a 2-bit copy of the target as the draft:
# a 1-token draft forward 1.4 s, a streamed one-token target pass 5.3 s (mostly reads)
SLOW_DRAFT = PairTiming(draft_forward_seconds=1.4, target_pass_seconds=5.3,
                        target_io_seconds=5.0, overhead_seconds=0.01)


def test_first_chunk_costs_at_most_the_allowed_seconds_then_chunks_grow():
    catch = CatchUp()
    assert catch.chunk(256, allowed=5.3, one_forward=1.4) == 3  # <= 5.3 s even unbatched
    assert catch.chunk(256, allowed=0.5, one_forward=1.4) == 1  # unmeasured: one token measures
    catch.observe(3, 4.2)
    assert catch.line(1.4) == pytest.approx((0.0, 1.4))  # through (1, 1.4 s) and (3, 4.2 s)
    assert catch.chunk(256, allowed=0.5, one_forward=1.4) == 0  # measured: does not fit
    assert not catch.pays(253, gain=100.0, one_forward=1.4, fitted=12.0)  # 354 s > 100 s
    assert catch.pays(253, gain=400.0, one_forward=1.4, fitted=12.0)
    assert catch.pays(TAIL, gain=0.0, one_forward=1.4, fitted=12.0)  # rides on the first forward
    batched = CatchUp()  # a GPU-like draft: more tokens per forward cost next to nothing
    batched.observe(3, 0.011)
    assert batched.line(0.01)[1] == pytest.approx(0.0005)
    assert batched.pays(1000, gain=1.0, one_forward=0.01, fitted=0.0)
    assert batched.chunk(1000, allowed=float("inf"), one_forward=0.01) == 12  # 4x the last
    batched.observe(12, 0.015)
    assert batched.chunk(1000, allowed=float("inf"), one_forward=0.01) == 48
    single = CatchUp()  # one-token chunks only: no spread, seconds per token
    single.observe(1, 1.3)
    assert single.line(None) == (0.0, 1.3)


def slow_policy(max_tokens: int) -> StepPolicy:
    return StepPolicy(TreeConfig(), time_draft=True, stored=SLOW_DRAFT, max_tokens=max_tokens)


def test_a_catch_up_that_cannot_pay_over_the_tokens_left_stops_after_one_chunk():
    policy = slow_policy(24)
    assert policy.mode == "tree"  # d(1) < v(1): a perfect draft could win
    assert policy.plan(255).speculate  # unmeasured: the fit of d predicts a cheap catch-up
    first = policy.catch_up_chunk(255)
    assert first == 3  # at most a root-only step (5.31 s) even at d(1) per token
    policy.observe_catch_up(first, 3 * 1.37)  # no batching gain: 1.37 s per token
    assert policy.catch_up_chunk(252) is None  # 345 s cannot be repaid over 24 tokens
    assert not policy.plan(252).speculate
    assert policy.plan(TAIL).speculate  # a short catch-up rides on the first forward


def test_before_any_tree_the_catch_up_must_be_repaid_by_half_the_perfect_gain():
    """The streamed 2-bit draft on a 32-token prompt: 31 tokens at 1.37 s (42 s) would be
    repaid over 22 tokens if every drafted token were accepted, not by half of that."""
    from engine.config import CATCH_UP_PERFECT_SHARE
    from engine.costmodel import formulas as cm

    policy = slow_policy(24)
    policy.generated = 2
    policy.observe_catch_up(1, 1.37)
    perfect = cm.perfect_rate(policy._tree_draft_seconds(policy.d), policy.v, policy.o,
                              policy.tree.max_nodes, policy.w)
    whole = 22 * (1 / policy.ar_rate() - 1 / perfect)
    assert CATCH_UP_PERFECT_SHARE * whole < 31 * 1.37 < whole
    assert policy.catch_up_gain() == pytest.approx(CATCH_UP_PERFECT_SHARE * whole)
    assert policy.catch_up_chunk(31) is None and not policy.plan(31).speculate


def test_the_same_catch_up_pays_for_a_long_answer_and_a_cheap_one_for_a_short_answer():
    long_answer = slow_policy(4096)
    long_answer.observe_catch_up(3, 3 * 1.37)
    assert long_answer.catch_up_chunk(252) == 12  # pays: grows 4x
    cheap = slow_policy(24)
    cheap.observe_catch_up(3, 0.03)
    assert cheap.plan(252).speculate and cheap.catch_up_chunk(252) == 12


def run(target, draft, prompt, max_tokens=16, **kw) -> Finished:
    cfg = GenerationConfig(mode="tree", max_tokens=max_tokens, lookup=LookupConfig(sources=()),
                           **kw)
    events = list(Session(target, draft, timings=TimingStore(None)).generate(prompt, cfg))
    assert not any(isinstance(e, Failed) for e in events), events[-1]
    return events[-1]


def test_a_draft_whose_catch_up_cannot_pay_drafts_no_tree_and_keeps_the_ids(loaded_pair,
                                                                           monkeypatch):
    """The catch-up reports 2 s per token (a CPU quantized draft); the 1-token forward looks
    cheap (so speculation could win): one chunk is caught up, then the answer stays at ar."""
    target, draft = loaded_pair["target"], loaded_pair["same"]
    prompt = [(7 * i) % 250 + 3 for i in range(60)]
    want = list(Session(target).generate(prompt, GenerationConfig(mode="ar", max_tokens=16)))
    caught = []
    original = DraftModel.catch_up

    def slow(self, tokens=None):
        n = len(self.pending) if tokens is None else min(tokens, len(self.pending))
        caught.append(n)
        original(self, tokens)
        return 2.0 * n

    monkeypatch.setattr(DraftModel, "catch_up", slow)
    monkeypatch.setattr(DraftModel, "forward_seconds", lambda self, token, fresh=False: 1e-4)
    fin = run(target, draft, prompt)
    assert fin.token_ids == want[-1].token_ids
    assert len(caught) == 1 and caught[0] < len(prompt) - 1 - TAIL
    assert fin.stats.target_passes == len(fin.token_ids)  # no tree: one pass per token


def test_a_draft_whose_catch_up_pays_catches_up_and_drafts(loaded_pair, monkeypatch):
    target, draft = loaded_pair["target"], loaded_pair["same"]
    prompt = [(7 * i) % 250 + 3 for i in range(60)]
    want = list(Session(target).generate(prompt, GenerationConfig(mode="ar", max_tokens=16)))
    original = DraftModel.catch_up

    def cheap(self, tokens=None):  # a draft far cheaper than the target (its forwards too)
        n = len(self.pending) if tokens is None else min(tokens, len(self.pending))
        original(self, tokens)
        return 1e-5 * n

    monkeypatch.setattr(DraftModel, "catch_up", cheap)
    monkeypatch.setattr(DraftModel, "forward_seconds", lambda self, token, fresh=False: 1e-4)
    fin = run(target, draft, prompt)
    assert fin.token_ids == want[-1].token_ids
    assert fin.stats.target_passes < len(fin.token_ids)  # the identical draft's trees accepted


def slow_reader(*a, **kw):
    time.sleep(0.03)  # storage slower than the tiny draft's forwards: waits have room
    return W.read_tensors(*a, **kw)


def test_a_streamed_target_catches_the_draft_up_during_its_io_waits(tmp_path):
    target_dir = make_tiny_model(tmp_path / "t", seed=1, num_layers=6, hidden_size=128,
                                 intermediate_size=512)
    draft_dir = make_tiny_model(tmp_path / "d", like=target_dir, noise=0.1, seed=3)
    prompt = [(7 * i) % 250 + 3 for i in range(60)]
    resident = Session.load(target_dir)
    want = list(resident.generate(prompt, GenerationConfig(mode="ar", max_tokens=12)))[-1]
    streamed = load_streamed_model(target_dir, resident.target.nbytes() // 2, reader=slow_reader)
    try:
        fin = run(streamed, Session.load(draft_dir).target, prompt, max_tokens=12)
    finally:
        streamed.close()
    assert fin.token_ids == want.token_ids
    assert fin.stats.to_dict()["draft_catch_up_tokens_during_io"] > TAIL
