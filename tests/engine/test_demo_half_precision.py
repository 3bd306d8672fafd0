"""Greedy exactness at half precision, on the demo pair stored in float16.

In fp16/bf16 a tree pass (many tokens in one forward) and an ar pass (one token) sum their
matmuls in different orders, so logits differ in the last bits; where the target's two best
tokens are that close (a near tie), the argmax may differ and so may the rest of the text.
Canopy's guarantee is therefore: tree == ar, except from a near tie on. fp32 (the working dtype
on Linux) makes such ties vanishingly rare; this test checks the fp16 claim as stated.
"""

from __future__ import annotations

import json
import shutil

import mlx.core as mx
import pytest

from engine.config import GenerationConfig
from engine.decoding.generate import generate
from engine.events import Finished
from engine.formats.loader import is_float_weight, load_model, read_weights, weight_files

NEAR_TIE = 0.25  # logits; fp16 keeps ~3 significant digits of logits of magnitude ~10-30
PROMPTS = ["What is the capital of France?", "Name three primary colours."]
TOKENS = 12  # fp16 matmuls do not use BLAS on Linux CPU: keep the run short


def store_half(src, dst):
    dst.mkdir()
    weights = {k: v.astype(mx.float16) if is_float_weight(k, v) else v
               for k, v in read_weights(weight_files(src)).items()}
    mx.save_safetensors(str(dst / "model.safetensors"), weights, metadata={"format": "mlx"})
    config = json.loads((src / "config.json").read_text()) | {"torch_dtype": "float16"}
    (dst / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def half_pair(demo_pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16")
    target, draft = (load_model(store_half(p, root / n)) for p, n in zip(demo_pair, "td"))
    assert target.model.layers[0].mlp.up_proj.weight.dtype == mx.float16
    return target, draft


def top2_margin(target, ids) -> float:
    logits = target.model(mx.array([ids]))[0, -1].astype(mx.float32)
    best = mx.sort(logits)[-2:].tolist()
    return best[1] - best[0]


@pytest.mark.slow
@pytest.mark.demo
@pytest.mark.parametrize("prompt", PROMPTS)
def test_fp16_tree_equals_ar_up_to_a_near_tie(half_pair, prompt):
    target, draft = half_pair
    ids = target.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                               add_generation_prompt=True)
    out = {}
    for mode in ("ar", "tree"):
        last = list(generate(target, draft if mode == "tree" else None, ids,
                             GenerationConfig(mode=mode, max_tokens=TOKENS)))[-1]
        assert isinstance(last, Finished), last
        out[mode] = last.token_ids
    ar, tree = out["ar"], out["tree"]
    if tree != ar:
        i = next(k for k, (a, b) in enumerate(zip(ar, tree)) if a != b)
        margin = top2_margin(target, ids + list(ar[:i]))
        assert margin < NEAR_TIE, (i, margin)  # a difference is only allowed at a near tie
