"""Decode figures are the sums over StepEvents; prefill IO is reported under `prefill_*`."""

from __future__ import annotations

import pytest

from engine.config import GenerationConfig
from engine.events import Finished, StepEvent
from engine.session import Session
from engine.streaming import weights as W
from engine.testing import make_tiny_model


@pytest.fixture(scope="module")
def streamed(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    target = make_tiny_model(root / "t", num_layers=6, seed=11, shards=2)
    draft = make_tiny_model(root / "d", like=target, noise=0.1, seed=2)
    index = W.index_model(target)
    layers = [index.layer_bytes(i) for i in range(len(index.layers))]
    budget = sum(t.length for t in index.other) + max(layers)  # one layer at a time
    session = Session.load(target, draft, budget_bytes=budget)
    yield session
    session.target.close()


@pytest.mark.parametrize("mode", ["ar", "tree"])
def test_decode_figures_are_sums_over_steps(streamed, mode):
    prompt = list(range(40, 80))  # long enough that prefill streams every layer
    events = list(streamed.generate(prompt, GenerationConfig(mode=mode, max_tokens=12,
                                                             prefill_chunk=16)))
    assert isinstance(events[-1], Finished), events[-1]
    steps = [e for e in events if isinstance(e, StepEvent)]
    st = events[-1].stats
    assert st.target_bytes_read == sum(s.bytes_read for s in steps) > 0
    assert st.io_wait_seconds == pytest.approx(sum(s.io_wait_seconds for s in steps), abs=1e-9)
    assert st.target_bytes_read_per_token == st.target_bytes_read / st.generated_tokens
    # prefill ran 3 chunks, each streaming the layers: more than any one decode pass reads
    assert st.prefill_target_bytes_read > max(s.bytes_read for s in steps) > 0
    assert st.prefill_io_wait_seconds >= 0
    d = st.to_dict()
    assert {"prefill_target_bytes_read", "prefill_io_wait_seconds"} <= set(d)


def test_resident_target_reads_nothing(loaded_pair):
    from engine.decoding.generate import generate

    events = list(generate(loaded_pair["target"], None, [1, 2, 3],
                           GenerationConfig(mode="ar", max_tokens=4)))
    st = events[-1].stats
    assert st.target_bytes_read == st.prefill_target_bytes_read == 0


def test_bench_uses_decode_figures_and_the_shared_acceptance(streamed, monkeypatch):
    """A bench row's bytes, IO wait and depth-1 acceptance are the StepEvents' figures."""
    from engine.bench.runs import Aggregate, Config, run_canopy
    from engine.decoding.stats import acceptance_by_depth

    seen = []
    original = streamed.generate

    def recording(ids, config, should_stop=None):
        for event in original(ids, config, should_stop):
            seen.append(event)
            yield event

    monkeypatch.setattr(streamed, "generate", recording)
    sample = run_canopy(streamed, list(range(40, 80)), Config("canopy", "chain", "25%", "greedy",
                                                             k=3), 12, 0)
    steps = [e for e in seen if isinstance(e, StepEvent)]
    assert sample.bytes_read == sum(s.bytes_read for s in steps)
    assert sample.io_wait == pytest.approx(sum(s.io_wait_seconds for s in steps), abs=1e-9)
    row = Aggregate(Config("canopy", "chain", "25%", "greedy", k=3), [sample]).summary()
    assert row["io_wait_fraction"] == pytest.approx(sample.io_wait / sample.seconds)
    assert row["acceptance_depth1"] == acceptance_by_depth(steps)[0]
