"""The streaming budget checked against MLX's own memory figures, not only our accounting.

Measured here (8-layer fp32 tiny model, budget = head + 2 layers): peak active memory exceeds
the budget by about two of the largest weight tensors (compute temporaries of the matmuls), and
MLX's buffer cache keeps about four freed layer buffers, so active + cache is ~2x the budget.
"""

from __future__ import annotations

import gc

import mlx.core as mx
import pytest

from engine.models.cache import make_cache
from engine.streaming import weights as W
from engine.streaming.streamed_model import load_streamed_model
from engine.testing import make_tiny_model

LAYERS = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("mem") / "m", num_layers=LAYERS,
                           hidden_size=256, intermediate_size=1024, seed=2)


def run_streamed(model_dir) -> dict:
    index = W.index_model(model_dir)
    base = sum(t.length for t in index.other)
    budget = base + 2 * max(index.layer_bytes(i) for i in range(LAYERS)) + 1
    biggest = max(t.length for group in index.layers for t in group)
    gc.collect()
    mx.synchronize()
    mx.clear_cache()
    mx.reset_peak_memory()  # peak from here on
    start = mx.get_active_memory()
    m = load_streamed_model(model_dir, budget, prefetch=1)
    try:
        cache = make_cache(LAYERS)
        for t in range(12):
            mx.eval(m.model(mx.array([[t + 3]]), cache=cache))
        mx.synchronize()
        return {
            "budget": budget,
            "biggest_tensor": biggest,
            "model_bytes": index.nbytes,
            "ours_peak": m.model.io_stats().peak_resident_bytes,
            "mlx_peak": mx.get_peak_memory() - start,
            "mlx_active_plus_cache": mx.get_active_memory() - start + mx.get_cache_memory(),
        }
    finally:
        m.close()


def test_mlx_peak_memory_stays_within_the_budget(model_dir):
    r = run_streamed(model_dir)
    assert r["ours_peak"] <= r["budget"]
    # compute temporaries: a few weight-sized buffers; far below keeping every layer resident
    slack = 3 * r["biggest_tensor"] + 2**18
    assert r["budget"] + slack < r["model_bytes"]  # the check can fail
    assert r["mlx_peak"] <= r["budget"] + slack, r


@pytest.mark.xfail(strict=True, reason="MLX's buffer cache keeps freed layer buffers (~4 "
                   "layers here): active + cache exceeds the budget; not bounded yet")
def test_mlx_active_plus_cache_stays_within_the_budget(model_dir):
    r = run_streamed(model_dir)
    assert r["mlx_active_plus_cache"] <= r["budget"] + 3 * r["biggest_tensor"] + 2**18, r
