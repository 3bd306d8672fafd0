"""Bug 5: a checkpoint with per-module quantization (mlx-lm overrides) loads the same way
resident and streamed: one shell, one quantize predicate, one shape check."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from engine.formats.loader import load_model
from engine.streaming import weights as W
from engine.streaming.streamed_model import load_streamed_model
from engine.testing import make_tiny_model


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """4-bit g32 everywhere except 8-bit g64 down projections and a float layer-0 o_proj."""
    root = tmp_path_factory.mktemp("mixed")
    src = make_tiny_model(root / "float", num_layers=4, hidden_size=128, intermediate_size=256,
                          seed=11)
    model = load_model(src).model
    overrides = {}
    for i in range(4):
        overrides[f"model.layers.{i}.mlp.down_proj"] = {"group_size": 64, "bits": 8}
    overrides["model.layers.0.self_attn.o_proj"] = False

    def predicate(path, module):
        if not hasattr(module, "to_quantized"):
            return False
        o = overrides.get(path)
        return o if o is not None else True

    nn.quantize(model, group_size=32, bits=4, class_predicate=predicate)
    out = root / "mixed"
    shutil.copytree(src, out)
    (out / "model.safetensors").unlink()
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization"] = {"group_size": 32, "bits": 4, **overrides}
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def test_mixed_bits_stream_like_resident(mixed_dir):
    resident = load_model(mixed_dir)
    layer = resident.model.layers[1]
    assert layer.mlp.down_proj.bits == 8 and layer.mlp.up_proj.bits == 4
    assert isinstance(resident.model.layers[0].self_attn.o_proj, nn.Linear)
    assert not isinstance(resident.model.layers[0].self_attn.o_proj, nn.QuantizedLinear)
    index = W.index_model(mixed_dir)
    base = sum(t.length for t in index.other)
    budget = base + max(index.layer_bytes(i) for i in range(4)) + 1  # every layer streamed
    streamed = load_streamed_model(mixed_dir, budget, prefetch=1)
    try:
        assert streamed.model.store.streamed == [0, 1, 2, 3]
        x = mx.array([[3, 14, 15, 92, 65, 35]])
        a, b = resident.model(x), streamed.model(x)
        assert mx.array_equal(a, b).item()
    finally:
        streamed.close()
