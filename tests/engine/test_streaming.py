"""Streamed target: same logits as the resident model under every budget, budget never crossed,
IO faults become StreamingError naming the file, the IO thread never outlives close()."""

from __future__ import annotations

import gc
import threading
import time

import mlx.core as mx
import numpy as np
import pytest

from engine.costmodel.rules import room_bytes
from engine.decoding.tree import TokenTree
from engine.errors import StreamingError
from engine.formats.loader import load_model
from engine.models.cache import make_cache
from engine.streaming import weights as W
from engine.streaming.layerstore import plan_pinned
from engine.streaming.streamed_model import load_streamed_model
from engine.testing import make_tiny_model

LAYERS = 6
FRACTIONS = {"100%": 1.0, "50%": 0.5, "25%": 0.25, "one-layer": 0.0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("s") / "t", num_layers=LAYERS, hidden_size=128,
                           intermediate_size=512, shards=3, seed=5)


@pytest.fixture(scope="module")
def resident(model_dir):
    return load_model(model_dir)


def budget_for(model_dir, frac: float) -> int:
    """Resident part + `frac` of the layers; 0 means room for exactly one layer."""
    index = W.index_model(model_dir)
    base = sum(t.length for t in index.other)
    layers = [index.layer_bytes(i) for i in range(len(index.layers))]
    return base + max(int(frac * sum(layers)), max(layers))


@pytest.fixture
def streamed(model_dir):
    opened = []

    def load(frac=0.5, **kw):
        m = load_streamed_model(model_dir, budget_for(model_dir, frac), **kw)
        opened.append(m)
        return m

    yield load
    for m in opened:
        m.close()
        assert not m.model.store.io_thread.is_alive() if m.model.store.io_thread else True


def tree_block(rng, root, n):
    tree = TokenTree.with_root(root)
    for _ in range(n - 1):
        tree.add(int(rng.integers(250)), int(rng.integers(len(tree))), 0.5)
    return tree


def three_calls(model, seed=0, tree_mask=True):
    """Prefill, a tree block (positions + additive mask), then one token, with a KV cache."""
    rng = np.random.default_rng(seed)
    cache = make_cache(LAYERS)
    prompt = [int(t) for t in rng.integers(0, 250, 7)]
    out = [model(mx.array([prompt]), cache=cache)]
    tree = tree_block(rng, 17, 9)
    C = len(prompt)
    mask = tree.attention_mask(C) if tree_mask else None
    out.append(model(mx.array([tree.tokens]), cache=cache, positions=tree.positions(C),
                     mask=mask))
    for c in cache:
        c.keep(C, [C])
    out.append(model(mx.array([[42]]), cache=cache))
    return out


@pytest.mark.parametrize("frac", FRACTIONS.values(), ids=FRACTIONS.keys())
def test_logits_equal_resident(resident, streamed, model_dir, frac):
    m = streamed(frac)
    budget = budget_for(model_dir, frac)
    for ref, got in zip(three_calls(resident.model), three_calls(m.model), strict=True):
        assert mx.abs(ref - got).max().item() <= 1e-6
    s = m.model.io_stats()
    assert s.budget_bytes == budget and s.peak_resident_bytes <= budget
    assert s.layers_pinned + s.layers_streamed == LAYERS == m.num_layers
    assert (s.layers_streamed == 0) == (frac == 1.0) and (s.bytes_read > 0) == (frac < 1.0)
    assert m.vocab_size == resident.vocab_size and m.model.args.hidden_size == 128
    states = m.model.layer_states()
    assert states.count("pinned") == s.layers_pinned and len(states) == LAYERS
    assert set(states) <= {"pinned", "streamed", "loading", "resident"}


def _convert(src, out, kind: str):
    """A copy of model `src` stored as 4-bit quantized (MLX affine, group 32) or bfloat16."""
    import json
    import shutil

    import mlx.nn as nn
    from mlx.utils import tree_flatten

    out.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, out / f)
    model = load_model(src).model
    config = json.loads((src / "config.json").read_text())
    if kind == "q4":
        nn.quantize(model, group_size=32, bits=4)
        config["quantization"] = {"group_size": 32, "bits": 4}
    else:
        model.set_dtype(mx.bfloat16)
    (out / "config.json").write_text(json.dumps(config))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return out


@pytest.mark.parametrize("kind", ["q4", "bf16"])
def test_quantized_and_bf16_weights_stream_as_stored(model_dir, tmp_path, kind):
    d = _convert(model_dir, tmp_path / kind, kind)
    ref = load_model(d)
    index = W.index_model(d)
    if kind == "q4":
        assert index.tensors["model.layers.0.mlp.up_proj.scales"]
        assert index.tensors["model.layers.0.mlp.up_proj.weight"].dtype == "U32"
    m = load_streamed_model(d, budget_for(d, 0.25))
    try:
        for a, b in zip(three_calls(ref.model, tree_mask=True),
                        three_calls(m.model, tree_mask=True), strict=True):
            assert mx.abs(a - b).max().item() <= 1e-6
        s = m.model.io_stats()
        assert s.bytes_read > 0 and s.peak_resident_bytes <= budget_for(d, 0.25)
        assert s.resident_bytes < ref.nbytes()  # read as stored: quantized/bf16 sizes
    finally:
        m.close()


def test_mlx_active_memory_agrees_with_accounting(model_dir, streamed):
    """MLX's own counters: never more than the accounted bytes plus activations."""
    budget = budget_for(model_dir, 0.25)
    gc.collect()
    mx.synchronize()
    base = mx.get_active_memory()
    mx.reset_peak_memory()
    m = streamed(0.25, prefetch=3)
    seen = []

    def probe(facts):  # runs on the compute thread while a layer is being read
        seen.append((mx.get_active_memory() - base, m.model.io_stats().resident_bytes))
        return True

    for _ in range(3):
        m.model(mx.array([[1, 2, 3, 4]]), while_waiting=probe)
    mx.synchronize()
    slack = 128 * 1024  # activations of a 4-token pass, the hollow placeholder, ...
    peak = m.model.io_stats().peak_resident_bytes
    assert peak <= budget
    assert mx.get_peak_memory() - base <= peak + slack
    for active, accounted in seen:
        assert active <= accounted + slack
    assert seen and max(a for a, _ in seen) > 0.5 * budget  # the weights really are in MLX


def test_pinning_plan_and_too_small_budget(model_dir):
    assert plan_pinned(10, [5, 5, 5, 5], 25, prefetch=1) == [0]  # room for 2 layers kept free
    assert plan_pinned(10, [5, 5, 5, 5], 25, prefetch=0) == [0, 1]
    assert plan_pinned(10, [5, 5, 5, 5], 15, prefetch=2) == []
    assert plan_pinned(10, [5, 5, 5, 5], 29, prefetch=5) == []
    assert plan_pinned(10, [5, 5, 5, 5], 30, prefetch=5) == [0, 1, 2, 3]  # all fit
    with pytest.raises(StreamingError, match="too small.*at least"):
        load_streamed_model(model_dir, budget_for(model_dir, 0.0) - 1)


def test_slow_io_runs_draft_work_while_waiting(resident, streamed, model_dir):
    def slow_reader(*a, **kw):
        time.sleep(0.01)
        return W.read_tensors(*a, **kw)

    m = streamed(0.0, reader=slow_reader)
    calls = []

    def hook(facts):
        if len(calls) == 5:
            return False  # declines: not called again during this wait
        calls.append(facts)
        time.sleep(0.001)
        return True

    x = mx.array([[3, 1, 4, 1, 5]])
    got = m.model(x, while_waiting=hook)
    assert mx.abs(got - resident.model(x)).max().item() <= 1e-6
    s = m.model.io_stats()
    assert len(calls) == 5 == s.hook_calls and s.hook_seconds > 0 and s.io_wait_seconds > 0
    store = m.model.store
    for f in calls:  # the facts of each wait are the store's own figures
        assert f.layer in store.streamed and f.layer_bytes == store.nbytes[f.layer]
        assert 0 <= f.room_bytes <= (store.prefetch - 1) * f.layer_bytes and f.waited >= 0


def test_wait_facts_are_what_the_cost_model_simulates(model_dir, streamed):
    """While compute waits for a layer being read, the store reports the read-ahead room the
    cost model's pass simulation computes for that moment (rules.room_bytes: the awaited
    layer reserved, nothing else in flight), its elapsed read time and a bandwidth.

    Once armed, a read is held until compute waits for its layer while it is being read, so
    every streamed layer is awaited that way whatever the machine's load (no race between a
    sleep and compute)."""
    gate = threading.Condition()
    state = {"store": None, "waiting": None}  # armed once the store is known

    def gated_reader(runs, *a, **kw):
        with gate:
            store = state["store"]
            if store is not None:
                layer = next(i for i, r in store.runs.items() if r is runs)
                stop = kw["should_stop"]
                while not (state["waiting"] == layer or stop()):
                    gate.wait(0.01)
                state["waiting"] = None
        return W.read_tensors(runs, *a, **kw)

    budget = budget_for(model_dir, 0.25)
    m = streamed(0.25, reader=gated_reader, prefetch=2)
    store = m.model.store
    with gate:
        state["store"] = store
    seen = []

    def hook(facts):
        seen.append(facts)
        if facts.read_elapsed is None:  # its read not started: ask again (a "worked" wait)
            time.sleep(0.001)
            return True
        with gate:
            state["waiting"] = facts.layer
            gate.notify_all()
        return False

    for _ in range(2):
        m.model(mx.array([[1, 2, 3]]), while_waiting=hook)
    loading = [f for f in seen if f.read_elapsed is not None and f.bandwidth]
    assert {f.layer for f in loading} == set(store.streamed)
    for f in loading:
        reserved = store.base_bytes + f.layer_bytes
        assert f.room_bytes == room_bytes(budget, reserved, store.prefetch, f.layer_bytes)
        assert 0 <= f.read_elapsed < 5 and f.bandwidth > 0


def test_broken_pass_does_not_poison_the_next(resident, streamed):
    """A pass abandoned mid-way (the hook raised) leaves the next pass correct and in budget."""
    m = streamed(0.25)

    def boom(facts):
        raise KeyboardInterrupt

    m.model.stop()  # empty queue: the first streamed layer is certainly not ready
    with pytest.raises(KeyboardInterrupt):
        m.model(mx.array([[1, 2]]), while_waiting=boom)
    x = mx.array([[9, 8, 7]])
    for _ in range(2):
        assert mx.abs(m.model(x) - resident.model(x)).max().item() <= 1e-6
    s = m.model.io_stats()
    assert s.peak_resident_bytes <= s.budget_bytes


def _expect_failure(m, match):
    t0 = time.perf_counter()
    with pytest.raises(StreamingError, match=match):
        for _ in range(3):
            m.model(mx.array([[1, 2, 3]]))
    assert time.perf_counter() - t0 < 10
    thread = m.model.store.io_thread
    thread.join(5)
    assert not thread.is_alive()
    s = m.model.io_stats()
    assert s.peak_resident_bytes <= s.budget_bytes


def test_reader_fault_names_the_file(streamed, model_dir):
    def faulty(runs, **kw):
        raise OSError(5, "Input/output error")

    m = streamed(0.25, reader=faulty)
    _expect_failure(m, r"Reading layer \d+ from .*model-0000\d-of-00003.safetensors failed")


@pytest.mark.parametrize("fault", ["delete", "truncate"])
def test_file_damaged_mid_run(tmp_path, resident, fault):
    d = make_tiny_model(tmp_path / "t", num_layers=LAYERS, hidden_size=128,
                        intermediate_size=512, shards=3, seed=5)
    m = load_streamed_model(d, budget_for(d, 0.0))
    try:
        x = mx.array([[5, 6]])
        assert mx.abs(m.model(x) - resident.model(x)).max().item() <= 1e-6
        victim = d / "model-00002-of-00003.safetensors"
        if fault == "delete":
            victim.unlink()
        else:
            with open(victim, "r+b") as f:
                f.truncate(victim.stat().st_size // 2)
        _expect_failure(m, "model-00002-of-00003.safetensors")
    finally:
        m.close()


def test_close_and_stop(resident, streamed):
    m = streamed(0.25)
    x = mx.array([[2, 7, 1]])
    m.model(x)
    thread = m.model.store.io_thread
    m.model.stop()
    assert not thread.is_alive()
    assert m.model.io_stats().resident_bytes == m.model.store.base_bytes  # prefetched dropped
    assert mx.abs(m.model(x) - resident.model(x)).max().item() <= 1e-6  # restarted
    thread = m.model.store.io_thread
    m.close()
    assert not thread.is_alive()
    with pytest.raises(StreamingError, match="closed"):
        m.model(x)
