"""`canopy bench --pair coder`: its prompt set, its plan, a clear error when the pair is not
built, and (slow) the whole run on tiny models, cgroup rows included (skipped with a reason where
memory cgroups are not writable). Speeds are never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench.cgroup import CgroupUnavailable, memory_cgroup
from engine.bench.child import job, run_child
from engine.bench.coder import load_prompts
from engine.bench.coder_plan import (
    Clock,
    CoderSpec,
    canopy_configs,
    plan_rounds,
    runs_in_round,
    tokens_for,
)
from engine.bench.runs import Config
from engine.testing import make_tiny_model

ROOT = Path(__file__).resolve().parents[2]


def canopy(*args, home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, CANOPY_HOME=str(home), QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_prompt_set_has_eight_distinct_code_prompts_and_separate_calibration():
    texts = load_prompts()
    prompts = [p["text"] for p in texts["prompts"]]
    assert len(prompts) >= 8 and len(set(prompts)) == len(prompts)
    assert all(p["category"] and len(p["text"]) > 40 for p in texts["prompts"])
    assert texts["calibration"] and not set(texts["calibration"]) & set(prompts)


def test_plan_gives_every_phase_the_same_rounds_that_fit():
    costs = {"resident": [100.0] * 8, "50%": [300.0, 200, 200, 200], "25%": [400.0, 250, 250]}
    # n = 2: 200 + 500 + 650 = 1350 (+ 50 fixed) fits in 1500; n = 3 needs 2100; the 100 s
    # left buy a third resident round
    assert plan_rounds(costs, 1500, fixed=50) == {"resident": 3, "50%": 2, "25%": 2}
    assert plan_rounds(costs, 1450, fixed=50) == {"resident": 2, "50%": 2, "25%": 2}
    assert plan_rounds(costs, 10, fixed=50) == {"resident": 1, "50%": 1, "25%": 1}  # never 0
    assert plan_rounds(costs, 1e9) == {"resident": 8, "50%": 4, "25%": 3}  # capped per phase


def test_clock_learns_how_far_off_predictions_are():
    t = [0.0]
    clock = Clock(1000, now=lambda: t[0])
    assert clock.affords(900) and not clock.affords(900, reserve=200)
    t[0] = 400.0
    clock.observe(predicted=200, measured=400)  # twice as slow as predicted
    assert clock.scale == 2.0
    assert clock.affords(250) and not clock.affords(350)  # 600 s left, predictions doubled


def test_streamed_ar_runs_on_fewer_prompts_than_the_trees():
    spec = CoderSpec(streamed_ar_prompts=1)
    cfgs = canopy_configs(spec, "50%")
    assert [c.mode for c in runs_in_round(spec, cfgs, 0)] == ["ar", "chain", "tree", "tree"]
    assert [c.mode for c in runs_in_round(spec, cfgs, 1)] == ["chain", "tree", "tree"]
    fixed = [c for c in cfgs if c.nodes]
    assert fixed[0].nodes == spec.tree_nodes and fixed[0].label.startswith("Canopy tree, 64")
    assert [tokens_for(spec, c) for c in cfgs] == [24, 48, 48, 48]
    resident = canopy_configs(spec, "resident")
    assert len(runs_in_round(spec, resident, 5)) == 4  # resident ar on every prompt


def test_spec_rejects_bad_settings():
    with pytest.raises(ValueError, match="--max-tokens"):
        CoderSpec(max_tokens=0)
    with pytest.raises(ValueError, match="--minutes"):
        CoderSpec(minutes=0)


def test_coder_pair_not_built_is_one_clear_error(tmp_path):
    r = canopy("bench", "--pair", "coder", "--out", str(tmp_path / "out"), home=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "canopy models demo --pair coder" in r.stderr and "Traceback" not in r.stderr


def test_pair_coder_refuses_target_and_draft(tmp_path):
    r = canopy("bench", "--pair", "coder", "--target", str(tmp_path), "--draft", str(tmp_path),
               home=tmp_path)
    assert r.returncode == 2 and "--pair coder" in r.stderr


@pytest.mark.slow
def test_cgroup_rows_run_children_or_skip_with_a_reason(tmp_path):
    """The cgroup row's plumbing on a tiny model: a child process in a fresh memory cgroup whose
    limit is far above the model (so it must complete), ids equal to the same run outside."""
    target = make_tiny_model(tmp_path / "t", seed=1, num_layers=4)
    ids = list(range(5, 20))
    spec = job("canopy", target, None, [(0, ids, Config("canopy", "ar", "resident", "greedy",
                                                        draft="none"))], 6, 0)
    outside = run_child(spec, tmp_path / "c", "outside")
    assert outside.returncode == 0, outside.stderr_tail
    try:
        with memory_cgroup(2 << 30) as group:
            inside = run_child(spec, tmp_path / "c", "inside", preexec_fn=group["preexec_fn"])
            peak = group["peak"]()
    except CgroupUnavailable as e:
        pytest.skip(f"memory cgroups are not writable here: {e}")
    assert inside.status == "completed", inside.stderr_tail
    assert inside.samples[0].ids == outside.samples[0].ids and len(inside.samples[0].ids) == 6
    assert peak is None or 0 < peak < 2 << 30


@pytest.mark.slow
def test_quick_coder_bench_writes_every_row(tmp_path):
    out = tmp_path / "out"
    r = canopy("bench", "--pair", "coder", "--quick", "--out", str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((out / "coder.json").read_text())
    assert (out / "coder.md").read_text().startswith("## Benchmark: the coder pair")
    assert (out / "coder.png").stat().st_size > 10_000
    partial = json.loads((out / "coder-partial.json").read_text())  # saved after every round
    assert partial["samples"] and partial["failures"] == result["failures"] == []
    keys = {(row["label"], row["budget"]) for row in result["rows"]}
    for budget in ("resident", "50%", "25%"):
        for label in ("Canopy ar", "Canopy chain k=4"):
            assert (label, budget) in keys
        assert any(lbl.startswith("Canopy tree (auto)") for lbl, b in keys if b == budget)
        assert any(lbl.startswith("Canopy tree, 16 nodes") for lbl, b in keys if b == budget)
    assert ("mlx-lm target alone", "resident") in keys
    assert any(lbl.startswith("mlx-lm speculative") for lbl, _ in keys)
    for row in result["rows"]:
        assert row["tokens_per_second"] > 0 and row["predicted_tokens_per_second"] > 0
        assert row["ids_equal_ar"].split("/")[0] == row["ids_equal_ar"].split("/")[1]  # lossless
        assert row["peak_rss_bytes"] > 0 and row["ratio_to_canopy_ar"] > 0
        if row["budget"] != "resident":
            assert row["bytes_read_per_token"] > 0
    assert len(result["cgroup_rows"]) == 2
    for row in result["cgroup_rows"]:
        assert row["status"] == "completed" or row["status"].startswith("skipped: memory cgroups")
    assert result["goals"] and "measured acceptance" in result["apple_silicon_table"]


def test_apple_silicon_table_follows_a_measured_acceptance():
    from engine.costmodel import devices
    from engine.costmodel import formulas as cm

    def acceptance(per_node: float) -> cm.Acceptance:
        curve = tuple(1.0 + per_node * (n - 1) for n in range(1, 65))
        return cm.Acceptance(chain_alpha=(0.9,), tree_tokens=curve, start_tokens_tree=1.5,
                             start_tokens_chain=1.6, reuse=0.5)

    strong, weak = (devices.predictions(acceptance=acceptance(x)) for x in (0.12, 0.01))
    assert all(s["tree"].tokens_per_second >= w["tree"].tokens_per_second
               for s, w in zip(strong, weak))
    assert strong[0]["tree"].tokens_per_pass > weak[0]["tree"].tokens_per_pass
    text = devices.device_table_markdown(acceptance=acceptance(0.12), about="a test draft")
    assert "with a test draft" in text and "measured acceptance: first-token 0.90" in text
    assert "calibrated draft" not in text and "calibrated draft" in devices.device_table_markdown()


def rounds_done(seconds_per_round: float, planned: int, budget: float) -> int:
    """CoderRun.rounds_of on a fake run: 6 prompts, 100 s predicted per round, nothing after."""
    from types import SimpleNamespace

    from engine.bench.coder import CoderRun

    t = [0.0]
    clock = Clock(budget, now=lambda: t[0])

    def run_round(i):
        t[0] += seconds_per_round

    fake = SimpleNamespace(round_costs={"resident": [100.0] * 6}, rounds={"resident": planned},
                           clock=clock, reserve_after=lambda phase: 0.0,
                           save_partial=lambda: None, say=lambda text: None)
    import time as real_time

    real = real_time.perf_counter
    real_time.perf_counter = lambda: t[0]  # the round's measured seconds come from the fake
    try:
        return CoderRun.rounds_of(fake, "resident", run_round)
    finally:
        real_time.perf_counter = real


def test_rounds_run_past_the_plan_when_ahead_and_stop_early_when_behind():
    assert rounds_done(50, planned=2, budget=400) == 6  # twice as fast: every prompt
    assert rounds_done(100, planned=2, budget=400) == 4  # on time: what the budget holds
    assert rounds_done(300, planned=3, budget=400) == 1  # three times slower: cut short
