"""Model loading: round trips, equality with mlx-lm, and one clear error per kind of bad input."""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from engine.errors import ModelError
from engine.formats.loader import load_model
from engine.testing import make_tiny_model


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("tie", [True, False])
def test_forward_equals_mlx_lm(tmp_path, model_type, tie):
    import mlx_lm

    path = make_tiny_model(tmp_path / "m", model_type=model_type, tie_word_embeddings=tie)
    ours = load_model(path)
    ref, _ = mlx_lm.load(str(path))
    x = mx.array([[3, 14, 15, 92, 65, 35, 89, 79]])
    assert mx.abs(ours.model(x) - ref(x)).max().item() < 1e-4


def test_sharded_and_quantized_round_trip(tmp_path):
    src = make_tiny_model(tmp_path / "one")
    sharded = make_tiny_model(tmp_path / "sharded", like=src, shards=3)
    a, b = load_model(src), load_model(sharded)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    x = mx.array([[1, 2, 3, 4]])
    assert mx.abs(a.model(x) - b.model(x)).max().item() == 0.0

    # an MLX affine-quantized checkpoint (mlx-lm layout) loads quantized
    q = tmp_path / "q"
    shutil.copytree(src, q)
    model = load_model(src).model
    nn.quantize(model, group_size=32, bits=8)
    (q / "model.safetensors").unlink()
    mx.save_safetensors(str(q / "model.safetensors"), dict(tree_flatten(model.parameters())))
    cfg = json.loads((q / "config.json").read_text())
    cfg["quantization"] = {"group_size": 32, "bits": 8}
    (q / "config.json").write_text(json.dumps(cfg))
    loaded = load_model(q)
    assert isinstance(loaded.model.layers[0].mlp.up_proj, nn.QuantizedLinear)
    assert mx.abs(loaded.model(x) - a.model(x)).max().item() < 0.2


@pytest.fixture
def model_copy(tmp_path, tiny_dir):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_dir, dst)
    return dst


def expect_error(path, *needles):
    with pytest.raises(ModelError) as info:
        load_model(path)
    msg = str(info.value)
    for n in needles:
        assert n in msg, msg
    return msg


def test_missing_folder_and_not_a_model(tmp_path):
    expect_error(tmp_path / "nope", "not found")
    (tmp_path / "empty").mkdir()
    expect_error(tmp_path / "empty", "config.json is missing")
    (tmp_path / "file.gguf").write_bytes(b"GGUF")
    expect_error(tmp_path / "file.gguf", "import-gguf")


def test_unsupported_model_type(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"] = "mamba"
    (model_copy / "config.json").write_text(json.dumps(cfg))
    expect_error(model_copy, "mamba", "llama", "qwen2")


def test_config_without_required_keys(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    del cfg["hidden_size"]
    (model_copy / "config.json").write_text(json.dumps(cfg))
    expect_error(model_copy, "hidden_size")
    (model_copy / "config.json").write_text("{not json")
    expect_error(model_copy, "not valid JSON")


def test_missing_and_corrupt_safetensors(model_copy):
    weights = model_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    expect_error(model_copy, "model.safetensors")
    weights.write_bytes(b"\x00" * 64)
    expect_error(model_copy, "model.safetensors")
    weights.unlink()
    expect_error(model_copy, "no *.safetensors")


def test_missing_tokenizer(model_copy):
    (model_copy / "tokenizer.json").unlink()
    expect_error(model_copy, "tokenizer")


def test_weights_that_do_not_match_the_config(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (model_copy / "config.json").write_text(json.dumps(cfg))
    expect_error(model_copy, "lack", "model.layers.2")
