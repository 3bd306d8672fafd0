"""Stuck and slow storage under a streamed target, and a full disk while building a model.

A read that never returns ends the pass within the read timeout with a StreamingError naming
the file, and the stuck IO thread is dropped; a slow disk (injected delays) changes nothing in
the output; ENOSPC while writing a model folder leaves no half-built folder behind.
"""

from __future__ import annotations

import errno
import threading
import time

import numpy as np
import pytest

from engine.config import GenerationConfig, SamplingConfig, StreamConfig
from engine.errors import CanopyError, StreamingError
from engine.events import Failed, Finished
from engine.session import Session
from engine.streaming import weights as W
from engine.streaming.streamed_model import load_streamed_model
from engine.testing import make_tiny_model

LAYERS = 4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    target = make_tiny_model(root / "t", num_layers=LAYERS, seed=21, shards=2)
    draft = make_tiny_model(root / "d", like=target, noise=0.1, seed=3)
    return target, draft


def one_layer_budget(model_dir) -> int:
    index = W.index_model(model_dir)
    return sum(t.length for t in index.other) + max(
        index.layer_bytes(i) for i in range(len(index.layers)))


def prompt() -> list[int]:
    return [int(t) for t in np.random.default_rng(9).integers(0, 260, 12)]


def run(session, mode="tree", temperature=0.0):
    config = GenerationConfig(mode=mode, max_tokens=12,
                              sampling=SamplingConfig(temperature, 1.0, 5))
    return list(session.generate(prompt(), config))[-1]


@pytest.fixture(scope="module")
def reference(pair):
    session = Session.load(*pair)
    return {t: run(session, "tree", t).token_ids for t in (0.0, 0.8)}


def test_default_read_timeout_lives_in_config():
    assert StreamConfig().read_timeout == 60.0
    with pytest.raises(ValueError, match="read_timeout"):
        StreamConfig(read_timeout=0)


def test_stuck_read_ends_the_pass_naming_the_file(pair, reference):
    """The reader blocks forever on the second streamed read: the pass fails within the
    timeout, the IO thread is dropped, and once storage recovers the next answer is right."""
    unblock = threading.Event()
    calls = []

    def stuck_reader(runs, **kw):
        calls.append(1)
        if len(calls) == 2:
            unblock.wait()  # a read that does not return (until the test lets it)
        return W.read_tensors(runs, **kw)

    target = load_streamed_model(pair[0], one_layer_budget(pair[0]), reader=stuck_reader,
                                 read_timeout=0.5)
    session = Session(target, Session.load(pair[1]).target)
    store = target.model.store
    try:
        stuck_thread = store.io_thread
        t0 = time.perf_counter()
        failed = run(session)
        elapsed = time.perf_counter() - t0
        assert isinstance(failed, Failed), failed
        assert "did not finish within 0.5 s" in failed.message
        assert "model-0000" in failed.message and ".safetensors" in failed.message
        assert elapsed < 10
        assert store.io_thread is None  # the store let go of the stuck thread
        assert stuck_thread.is_alive()  # still blocked in its read
        unblock.set()
        stuck_thread.join(5)
        assert not stuck_thread.is_alive()  # it noticed it was abandoned and left
        assert store.snapshot(0).resident_bytes == store.base_bytes
        again = run(session)
        assert isinstance(again, Finished) and again.token_ids == reference[0.0]
        assert store.snapshot(0).peak_resident_bytes <= store.budget
    finally:
        unblock.set()
        target.close()


def test_cli_read_timeout_option(pair, capsys):
    from app.cli import main

    base = ["generate", "--target", str(pair[0]), "--prompt", "hi", "--max-tokens", "2",
            "--mode", "ar", "--budget-mb", "1"]
    assert main([*base, "--read-timeout", "0"]) == 2
    assert "Invalid --read-timeout" in capsys.readouterr().err
    assert main([*base, "--read-timeout", "30"]) == 0


def test_stuck_read_through_the_layer_store_directly(pair):
    unblock = threading.Event()

    def never(runs, **kw):
        unblock.wait()
        raise W.ReadCancelled()

    target = load_streamed_model(pair[0], one_layer_budget(pair[0]), reader=never,
                                 read_timeout=0.2)
    try:
        import mlx.core as mx

        with pytest.raises(StreamingError, match=r"layer \d+ from .*did not finish"):
            target.model(mx.array([[1, 2, 3]]))
    finally:
        unblock.set()
        target.close()


@pytest.mark.parametrize("temperature", [0.0, 0.8], ids=["greedy", "sampled"])
def test_slow_disk_gives_identical_output(pair, reference, temperature):
    rng = np.random.default_rng(1)
    delays = []

    def slow_reader(runs, **kw):
        delays.append(float(rng.uniform(0, 0.03)))  # jittery, sometimes slower than compute
        time.sleep(delays[-1])
        return W.read_tensors(runs, **kw)

    target = load_streamed_model(pair[0], one_layer_budget(pair[0]), reader=slow_reader)
    session = Session(target, Session.load(pair[1]).target)
    try:
        got = run(session, "tree", temperature)
        assert isinstance(got, Finished), got
        assert got.token_ids == reference[temperature]
        assert len(delays) >= LAYERS
    finally:
        target.close()


def test_disk_full_while_building_a_model_leaves_nothing_half_built(pair, tmp_path,
                                                                    monkeypatch):
    """ENOSPC in the middle of writing weights: a clear ModelError, no published folder, no
    staging folder left behind; the next build (disk freed) works."""
    from engine.formats import gguf

    real = gguf.save_model_dir
    state = {"fail": True}

    def full_disk(out, arrays, *a, **kw):
        if state["fail"]:
            (out / "model.safetensors").write_bytes(b"\0" * 1000)  # a partial file first
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(out, arrays, *a, **kw)

    from engine.formats import demo

    monkeypatch.setattr(demo, "save_model_dir", full_disk)
    out = tmp_path / "draft"
    with pytest.raises(CanopyError, match=f"{out} failed: No space left on device"):
        demo.make_draft(pair[0], out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []
    state["fail"] = False
    demo.make_draft(pair[0], out)
    assert (out / "config.json").is_file()


def test_really_full_disk_while_building_a_model(pair, tmp_path):
    from engine.formats import demo
    from tests.tmpfs import tiny_tmpfs

    with tiny_tmpfs(tmp_path / "full") as mnt:
        if mnt is None:
            pytest.skip("cannot mount a tmpfs here (needs root on Linux)")
        out = mnt / "draft"
        with pytest.raises(CanopyError, match=f"{out} failed: .*(?:disk full|No space left)"):
            demo.make_draft(pair[0], out)
        assert list(mnt.iterdir()) == []
