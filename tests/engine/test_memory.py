"""Memory the OS sees: peak RSS in stats, MLX's buffer cache capped while streaming, and a
streamed target completing inside a memory cgroup whose limit kills the resident one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlx.core as mx
import pytest

from engine.bench.cgroup import CgroupUnavailable, memory_cgroup
from engine.config import STREAM_CACHE_LAYERS, GenerationConfig, StreamConfig
from engine.events import Finished
from engine.session import Session
from engine.streaming.memory import peak_rss_bytes
from engine.testing import make_tiny_model

PROMPT = "the theater at the end of the street"


def finished(events) -> Finished:
    return [e for e in events if isinstance(e, Finished)][0]


def test_peak_rss_is_reported_next_to_resident_bytes(tiny_dir):
    before = mx.set_cache_limit(1 << 40)
    mx.set_cache_limit(before)
    session = Session.load(tiny_dir, budget_bytes=300_000, stream=StreamConfig(prefetch=1))
    try:
        previous = mx.set_cache_limit(1 << 40)  # read the cap back
        mx.set_cache_limit(previous)
        stats = finished(session.generate(session.encode(PROMPT),
                                          GenerationConfig(mode="ar", max_tokens=4))).stats
    finally:
        session.close()
    assert 0 < previous <= STREAM_CACHE_LAYERS * 300_000 < before
    assert mx.set_cache_limit(before) == before  # close() gave MLX its own limit back
    d = stats.to_dict()
    assert d["peak_rss_bytes"] == stats.peak_rss_bytes >= 50 << 20  # Python + MLX alone
    assert stats.peak_rss_bytes <= peak_rss_bytes()
    assert 0 < d["peak_target_resident_bytes"] <= 300_000


def test_buffer_cache_caps_nest_and_end_in_any_order():
    """Two streamed models open at once release their caps in either order, or by being
    collected unclosed: MLX's own limit comes back with the last one."""
    import gc

    from engine.streaming.memory import cap_buffer_cache, release_buffer_cache_cap

    gc.collect()
    own = mx.set_cache_limit(1 << 40)
    mx.set_cache_limit(own)

    def limit() -> int:
        value = mx.set_cache_limit(1 << 40)
        mx.set_cache_limit(value)
        return value

    a, b = cap_buffer_cache(500_000), cap_buffer_cache(200_000)
    assert limit() == 200_000
    release_buffer_cache_cap(a)  # closed first although opened first
    assert limit() == 200_000
    release_buffer_cache_cap(b)
    assert limit() == own
    a, b = cap_buffer_cache(500_000), cap_buffer_cache(200_000)
    release_buffer_cache_cap(b)
    assert limit() == 500_000
    release_buffer_cache_cap(a)
    release_buffer_cache_cap(a)  # twice: harmless
    assert limit() == own


def test_unclosed_streamed_model_gives_the_cache_limit_back(tiny_dir):
    import gc

    gc.collect()
    own = mx.set_cache_limit(1 << 40)
    mx.set_cache_limit(own)
    session = Session.load(tiny_dir, budget_bytes=300_000, stream=StreamConfig(prefetch=1))
    session.target.model.store.close()  # stop its IO thread, but never close the model
    del session
    gc.collect()
    assert mx.set_cache_limit(own) == own


def _generate(target, budget_mb=None, **run) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "app.cli", "generate", "--target", str(target), "--mode", "ar",
           "--max-tokens", "6", "--prompt", PROMPT, "--json", "--prefetch", "1"]
    if budget_mb is not None:
        cmd += ["--budget-mb", str(budget_mb)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, **run)


@pytest.mark.slow
def test_streamed_target_completes_in_a_cgroup_that_kills_the_resident_one(tmp_path):
    # ~420 MB of fp32 weights: 7 layers of ~60 MB, small vocabulary.
    target = make_tiny_model(tmp_path / "big", seed=7, hidden_size=1024, intermediate_size=4096,
                             num_layers=7, num_heads=8, num_kv_heads=4)
    size = sum(f.stat().st_size for f in target.glob("*.safetensors"))
    assert size > 400 << 20
    limit = int(size * 0.75)
    ref = _generate(target)
    assert ref.returncode == 0, ref.stderr
    want = json.loads(ref.stdout)
    try:
        with memory_cgroup(limit) as group:
            resident = _generate(target, preexec_fn=group["preexec_fn"])
            streamed = _generate(target, budget_mb=130, preexec_fn=group["preexec_fn"])
    except CgroupUnavailable as e:
        pytest.skip(f"memory cgroups are not writable here: {e}")
    assert resident.returncode == -9, (resident.returncode, resident.stderr[-500:])  # OOM kill
    assert streamed.returncode == 0, streamed.stderr[-2000:]
    got = json.loads(streamed.stdout)
    assert got["token_ids"] == want["token_ids"]
    assert got["stats"]["peak_rss_bytes"] < limit < size
    assert want["stats"]["peak_rss_bytes"] > size  # the resident run outside held it all
