"""The draft's measured timing survives the process (engine.costmodel.timing_store): a new
session (as a fresh process would) reads the stored measures and sends a draft that can never
win to ar before its first step, without timing it again; a corrupt or unreadable file is
ignored with a warning; the entry belongs to the exact pair, device, residency and BLAS."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from engine.config import TIMINGS_VERSION, GenerationConfig, TreeConfig
from engine.costmodel import timing_store
from engine.costmodel.policy import StepPolicy
from engine.costmodel.timing_store import PairTiming, TimingStore
from engine.events import Failed, Finished, StepEvent
from engine.formats.loader import LoadedModel, load_model
from engine.session import Session
from engine.streaming.weights import index_model
from tests.engine.test_ar_hot_path import Counting, NoEos

DRAFT_SLEEP = 0.05  # seconds per draft forward: far slower than a tiny target's pass
PROMPT = [5, 17, 42, 99, 3, 250, 7, 7, 64]


class SlowCounting(Counting):
    """A draft model that sleeps in each forward and counts them."""

    def __call__(self, *args, **kw):
        time.sleep(DRAFT_SLEEP)
        return super().__call__(*args, **kw)


def fresh_session(tiny_pair, store) -> tuple[Session, SlowCounting]:
    """What a new process has: models loaded anew (no timing kept on them), the same file."""
    target = load_model(tiny_pair["target"])
    target = LoadedModel(**{**vars(target), "tokenizer": NoEos(target.tokenizer)})
    draft = load_model(tiny_pair["unrelated"])
    slow = SlowCounting(draft.model)
    return Session(target, LoadedModel(**{**vars(draft), "model": slow, "measured": {}}),
                   timings=store), slow


def run(session, mode="tree", max_tokens=24):
    events = list(session.generate(PROMPT, GenerationConfig(mode=mode, max_tokens=max_tokens)))
    assert not any(isinstance(e, Failed) for e in events), events[-1]
    return events


def test_a_new_session_starts_at_ar_from_the_stored_timing(tiny_pair, tmp_path):
    store = TimingStore(tmp_path / "timings.json")
    first, slow = fresh_session(tiny_pair, store)
    events = run(first)
    assert slow.calls == 1  # the timed 1-token forward, then ar: it can never win
    assert not events[-1].stats.extra["draft_timing_stored"]
    stored = json.loads((tmp_path / "timings.json").read_text())
    assert stored["version"] == TIMINGS_VERSION and len(stored["entries"]) == 1
    (entry,) = stored["entries"].values()
    assert entry["timing"]["draft_forward_seconds"] >= DRAFT_SLEEP
    assert entry["parts"]["blas_threads"] == timing_store.blas_threads()

    second, slow = fresh_session(tiny_pair, store)  # a fresh process: nothing kept in memory
    events = run(second)
    assert slow.calls == 0  # no timing forward: the stored one decided before the first step
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert all(len(e.tree_tokens) == 1 or "draft" not in e.tree_sources for e in steps)
    assert events[-1].stats.extra["draft_timing_stored"]
    ar = run(Session(second.target, None, timings=store), mode="ar")
    assert events[-1].token_ids == ar[-1].token_ids


def test_the_policy_decides_from_a_stored_timing_before_any_step():
    tree = TreeConfig()
    slow = StepPolicy(tree, time_draft=True, stored=PairTiming(0.2, 0.1, 0.0, 0.001))
    assert slow.mode == "ar" and slow.timing_bound and not slow.wants_draft_timing()
    assert not slow.plan().speculate
    fast = StepPolicy(tree, time_draft=True, stored=PairTiming(0.002, 0.1, 0.0, 0.001))
    assert fast.mode == "tree" and not fast.wants_draft_timing() and fast.plan().speculate
    kept = slow.measured_timing()
    assert kept.draft_forward_seconds == pytest.approx(0.2)
    assert kept.target_pass_seconds == pytest.approx(0.1)
    # without a prior the policy times the draft first (after a few of ar's passes)
    assert StepPolicy(tree, time_draft=True).measured_timing() is None


@pytest.mark.parametrize("content", ["{not json", json.dumps({"version": 999, "entries": {}}),
                                     json.dumps([1, 2]), b"\xff\xfe\x00"])
def test_a_corrupt_file_is_ignored_with_a_warning_and_rewritten(tiny_pair, tmp_path, caplog,
                                                                content):
    path = tmp_path / "timings.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    session, slow = fresh_session(tiny_pair, TimingStore(path))
    with caplog.at_level(logging.WARNING, logger=timing_store.__name__):
        events = run(session)
    assert isinstance(events[-1], Finished) and slow.calls == 1
    assert "ignores its timing file" in caplog.text
    assert json.loads(path.read_text())["version"] == TIMINGS_VERSION  # replaced


def test_an_unreadable_or_unwritable_file_never_fails_a_generation(tiny_pair, tmp_path, caplog):
    path = tmp_path / "timings.json"
    path.mkdir()  # a folder where the file should be: reading and writing both fail
    session, slow = fresh_session(tiny_pair, TimingStore(path))
    with caplog.at_level(logging.WARNING, logger=timing_store.__name__):
        events = run(session)
    assert isinstance(events[-1], Finished) and slow.calls == 1
    assert "ignores its timing file" in caplog.text and "cannot write" in caplog.text
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    off, slow = fresh_session(tiny_pair, TimingStore(None))  # no store: timed in process only
    run(off)
    assert slow.calls == 1 and off.timings.entry(off.target, off.draft) is None


def test_the_entry_belongs_to_the_pair_residency_and_blas_threads(tiny_pair, tmp_path,
                                                                  monkeypatch):
    store = TimingStore(tmp_path / "timings.json")
    target, draft = load_model(tiny_pair["target"]), load_model(tiny_pair["noisy"])
    entry = store.entry(target, draft)
    assert entry.stored is None
    entry.keep(PairTiming(0.01, 0.02, 0.0, 0.001))
    assert store.entry(target, draft).stored == PairTiming(0.01, 0.02, 0.0, 0.001)
    # another draft, other BLAS threads, a streamed target: other entries
    assert store.entry(target, load_model(tiny_pair["same"])).stored is None
    monkeypatch.setattr(timing_store, "blas_threads", lambda: 99)
    assert store.entry(target, draft).stored is None
    monkeypatch.undo()
    assert store.entry(target, draft, draft_vocab=64).stored is None  # a cheaper draft head

    index = index_model(tiny_pair["target"])
    layers = [index.layer_bytes(i) for i in range(len(index.layers))]
    budget = sum(t.length for t in index.other) + max(layers)  # one streamed layer at a time
    streamed = Session.load(tiny_pair["target"], budget_bytes=budget)
    try:
        assert store.entry(streamed.target, draft).stored is None
    finally:
        streamed.close()
    # rebuilt weights (new mtime): another model
    weights = next(draft.path.glob("*.safetensors"))
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert store.entry(target, draft).stored is None
    finally:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.entry(target, draft).stored is not None


def test_the_default_file_lies_beside_the_models_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("CANOPY_TIMINGS_FILE", raising=False)
    monkeypatch.setenv("CANOPY_HOME", str(tmp_path))
    assert TimingStore.default().path == tmp_path / "timings.json"
    monkeypatch.setenv("CANOPY_TIMINGS_FILE", str(tmp_path / "elsewhere.json"))
    assert TimingStore.default().path == tmp_path / "elsewhere.json"


def test_speed_bench_fresh_processes_find_the_timing_the_first_stored(tmp_path):
    """`canopy bench --speed`'s fresh-process rows on tiny models: real processes, the second
    of each pair starts from the timing the first stored; the streamed gap is reported."""
    from engine.bench.pair import prepare_pair
    from engine.bench.speed import SpeedSpec, run_speed
    from engine.bench.speed_report import speed_markdown

    pair = prepare_pair(None, None, True, tmp_path)
    spec = SpeedSpec(prompt_tokens=(16, 40), max_tokens=12, fresh_pairs=1, repeats=2)
    result = run_speed(pair, spec, folder=tmp_path)
    for row in result["rows"]:  # two rounds, each ratio the median of the rounds' own
        assert len(row["samples"]) == 2
        low, high = row["ar_decode_ratio_range"]
        assert low <= row["ar_decode_ratio"] <= high
        assert all("mlx_lm_in_process" in s for s in row["samples"])  # the extra row
        assert row["ar_decode_ratio_in_process"] > 0
    fresh = result["fresh"]
    assert [r["draft_timing_stored"] for r in fresh["no_stored_timing"]] == [False]
    assert [r["draft_timing_stored"] for r in fresh["stored_timing"]] == [True]
    assert fresh["stored_timing"][0]["decode_ratio"] > 0
    text = speed_markdown(result)
    assert "Fresh processes" in text and "gap" in text and "medians of 2 rounds" in text
    assert "in Canopy's process on the same weights" in text


def test_a_stored_fast_timing_starts_trees_at_once_and_keeps_greedy_ids(tiny_pair, tmp_path):
    """A draft stored as cheap goes to trees from the second step (no ar passes, no timing
    forward first); the emitted ids still equal the target's alone."""
    store = TimingStore(tmp_path / "timings.json")
    session, slow = fresh_session(tiny_pair, store)
    session.timings.entry(session.target, session.draft).keep(PairTiming(1e-6, 0.05))
    events = run(session, max_tokens=16)
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert "draft" in steps[1].tree_sources  # the first step is the target's alone
    assert slow.calls > 0 and events[-1].stats.extra["draft_timing_stored"]
    ar = run(Session(session.target, None, timings=store), mode="ar", max_tokens=16)
    assert events[-1].token_ids == ar[-1].token_ids


def test_the_store_keeps_the_fastest_measures_seen_for_a_key(tmp_path):
    """A draft timed slow under load must not stay at ar in every later process: each
    measure keeps its fastest value (the pass's IO share with its pass), the overhead the
    newest."""
    store = TimingStore(tmp_path / "timings.json")
    store.save("k", {}, PairTiming(0.05, 0.10, 0.02, 0.001))
    store.save("k", {}, PairTiming(0.20, 0.08, 0.04, 0.003))  # a loaded draft, a faster pass
    assert store.load("k") == PairTiming(0.05, 0.08, 0.04, 0.003)
    store.save("k", {}, PairTiming(0.03, 0.30, 0.0, 0.002))
    assert store.load("k") == PairTiming(0.03, 0.08, 0.04, 0.002)


def test_a_pair_without_model_files_generates_without_a_stored_timing(tiny_pair, tmp_path,
                                                                      caplog):
    """Models whose folder cannot be read (moved since loading): no entry, a warning, and the
    answer as usual."""
    session, slow = fresh_session(tiny_pair, TimingStore(tmp_path / "timings.json"))
    session.draft = LoadedModel(**{**vars(session.draft), "path": tmp_path / "gone"})
    with caplog.at_level(logging.WARNING, logger=timing_store.__name__):
        events = run(session)
    assert isinstance(events[-1], Finished) and "draft_timing_stored" not in events[-1].stats.extra
    assert "cannot identify the pair" in caplog.text and slow.calls == 1
