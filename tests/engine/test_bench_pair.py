"""The benchmark's extra drafts: a shallow copy of the target keeps its tokenizer and blocks."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from engine.bench.pair import make_shallow_draft
from engine.formats.compat import check_pair
from engine.formats.loader import load_model


def test_shallow_draft_is_the_targets_first_blocks(tiny_pair, tmp_path):
    target = tiny_pair["target"]
    n = json.loads((target / "config.json").read_text())["num_hidden_layers"]
    draft = make_shallow_draft(target, tmp_path / "shallow", n - 1)
    check_pair(target, draft)  # same tokenizer: it can draft for the target
    t, d = load_model(target), load_model(draft)
    assert len(d.model.layers) == n - 1
    a = np.array(t.model.layers[0].parameters()["self_attn"]["q_proj"]["weight"])
    assert np.array_equal(a, np.array(d.model.layers[0].parameters()["self_attn"]["q_proj"]
                                      ["weight"]))
    mx.eval(d.model(mx.array([[1, 2, 3]])))
    with pytest.raises(ValueError):
        make_shallow_draft(target, tmp_path / "bad", n)
