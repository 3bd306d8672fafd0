"""`canopy bench --quick`: runs on tiny models and writes valid JSON, Markdown and PNG.

Speeds are never asserted: the run only has to be complete and consistent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| configuration |" in r.stdout  # the Markdown table is printed too
    return out


def test_quick_bench_writes_json_with_every_configuration(quick_run):
    result = json.loads((quick_run / "bench.json").read_text())
    rows = result["rows"]
    labels = {(r["label"], r["budget"], r["sampling"]) for r in rows}
    for sampling in ("greedy", "t=0.7"):
        assert ("mlx-lm target alone", "resident", sampling) in labels
        assert any(lbl.startswith("mlx-lm speculative") for lbl, _, s in labels if s == sampling)
        for budget in ("resident", "50%", "25%"):
            for label in ("Canopy ar", "Canopy chain k=4", "Canopy tree (auto)"):
                assert (label, budget, sampling) in labels
        for budget in ("50%", "25%"):
            assert ("Canopy tree (auto) + pipeline", budget, sampling) in labels
    for r in rows:
        assert r["tokens"] > 0 and r["tokens_per_second"] > 0
        assert r["predicted_tokens_per_second"] > 0
        assert r["tokens_per_pass"] >= 1.0 - 1e-9
        assert r["error_percent"] is not None and r["ratio_to_mlx_lm"] > 0
        if r["budget"] != "resident" and r["engine"] == "canopy":
            assert r["bytes_read_per_token"] > 0
            assert r["peak_target_resident_bytes"] <= r["budget_bytes"]
    assert [c["budget"] for c in result["bad_draft_check"]] == ["resident", "50%"]
    assert result["environment"]["blas"] and result["mape_percent"] >= 0
    cal = result["calibration"]["greedy / good draft"]
    assert cal["acceptance"]["tree_tokens"][0] == 1.0
    assert len(cal["timing"]["layer_compute"]["seconds"]) > 1


def test_quick_bench_writes_markdown_and_png(quick_run):
    md = (quick_run / "bench.md").read_text()
    assert "### greedy" in md and "### t=0.7" in md and "Bad draft" in md
    assert "Predicted, not measured" in md  # the Apple Silicon table
    assert "BLAS" in md and "MAPE" in md
    png = (quick_run / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_device_predictions_table():
    from engine.costmodel.devices import device_table_markdown, mac_devices, predictions

    rows = predictions()
    assert {r["device"].name for r in rows} == {d.name for d in mac_devices()}
    for r in rows:  # streaming a bigger share of the model never speeds ar up
        assert r["tree"].tokens_per_second >= r["ar"].tokens_per_second
    table = device_table_markdown()
    assert "Qwen2.5-14B" in table and "8 GB" in table and "24 GB" in table
