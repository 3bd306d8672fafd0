"""`canopy bench --draft-free --quick`: every task x mode x budget on tiny models, lossless,
JSON and Markdown written; the aggregation and goal checks on hand-made runs.

Speeds are never asserted: the run only has to be complete and consistent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.bench.draft_free import (
    MODES,
    DraftFreeSpec,
    aggregate,
    budget_label,
    draft_free_markdown,
    goals,
    load_prompts,
    parse_budgets,
)

ROOT = Path(__file__).resolve().parents[2]


def test_quick_draft_free_bench_runs_every_task_mode_and_budget(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--draft-free", "--quick", "--out",
         str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| budget | task | mode |" in r.stdout
    result = json.loads((tmp_path / "draft_free.json").read_text())
    tasks = set(load_prompts(DraftFreeSpec()))
    assert tasks == {"code edit", "summarization", "question answering", "open chat"}
    seen = {(row["budget"], row["task"], row["mode"]) for row in result["rows"]}
    assert seen == {(b, t, m) for b in ("resident", "50%") for t in tasks for m in MODES}
    assert result["lossless"] and all(run["lossless"] for run in result["runs"])
    for row in result["rows"]:
        assert row["passes"] >= 1 and row["tokens"] >= 1
        if row["mode"] == "ar":
            assert row["speed_vs_ar"] == pytest.approx(1.0)
    assert (tmp_path / "draft_free.md").read_text().startswith("| budget |")
    assert {(a["task"], a["prompt"]) for a in result["ar_ids"]} == {(t, 0) for t in tasks}
    for bound in result["copy_bounds"].values():  # every task answered: its copy bound
        assert 1.0 <= bound["keyed_tokens_per_pass"] <= bound["unkeyed_tokens_per_pass"]
    assert set(result["copy_bounds"]) == tasks

    # a later run on one budget and mode checks against those ids; its ar only probes
    again = tmp_path / "again"
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "bench", "--draft-free", "--quick", "--budgets", "50%",
         "--modes", "prompt lookup", "--ar-ids", str(tmp_path / "draft_free.json"), "--out",
         str(again)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    second = json.loads((again / "draft_free.json").read_text())
    assert {(row["budget"], row["mode"]) for row in second["rows"]} == {
        ("50%", "ar"), ("50%", "prompt lookup")}
    assert second["lossless"]
    assert all(run["tokens"] == min(8, 12) for run in second["runs"] if run["mode"] == "ar")
    assert not (again / "draft_free-partial.json").exists()


@pytest.mark.parametrize("flags, message", [
    (["--prompts", "0"], "--prompts must be at least 1"),
    (["--budgets", "150%"], "a budget must be 'resident' or a fraction in (0, 1]"),
    (["--budgets", "half"], "--budgets: 'half' is neither"),
    (["--budgets", "0MB"], "a budget in MB must be more than 0"),
    (["--modes", "magic"], "--modes: unknown mode(s) ['magic']"),
    (["--ar-ids", "/nonexistent/draft_free.json"], "--ar-ids: cannot read"),
])
def test_bad_spec_is_one_clear_error(tmp_path, flags, message):
    r = subprocess.run([sys.executable, "-m", "app.cli", "bench", "--draft-free", *flags,
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def run(mode, task, tokens, passes, seconds, budget="resident", lossless=True):
    return {"budget": budget, "task": task, "prompt": 0, "mode": mode, "tokens": tokens,
            "passes": passes, "decode_seconds": seconds, "lossless": lossless,
            "proposed_by_source": {"prompt": 4} if mode != "ar" else {},
            "accepted_by_source": {"prompt": 2} if mode != "ar" else {}}


def test_budgets_parse_to_fractions_or_bytes():
    assert parse_budgets("resident, 50%,0.25,3390MB") == (None, 0.5, 0.25, 3390 * 2**20)
    assert [budget_label(b) for b in (None, 0.5, 3390 * 2**20)] == ["resident", "50%", "3390 MB"]


def test_rows_sum_over_prompts_and_goals_follow_the_issue():
    runs = [run("ar", "code edit", 10, 10, 2.0), run("ar", "code edit", 10, 10, 2.0),
            run("prompt lookup", "code edit", 10, 4, 1.0), run("prompt lookup", "code edit",
                                                               10, 6, 1.0),
            run("draft tree", "code edit", 20, 10, 2.0),
            run("merged tree", "code edit", 20, 7, 1.0),
            run("ar", "open chat", 5, 5, 1.0), run("draft tree", "open chat", 5, 2, 1.0),
            run("merged tree", "open chat", 5, 3, 1.0, lossless=False)]
    rows = {(r["task"], r["mode"]): r for r in aggregate(runs)}
    lookup = rows[("code edit", "prompt lookup")]
    assert lookup["tokens_per_pass"] == pytest.approx(2.0)  # 20 tokens / 10 passes
    assert lookup["speed_vs_ar"] == pytest.approx((20 / 2.0) / (20 / 4.0))
    assert lookup["accepted_by_source"] == {"prompt": 4}
    assert not rows[("open chat", "merged tree")]["lossless"]
    by_task = {g["task"]: g for g in goals(list(rows.values()))}
    assert by_task["code edit"]["no_draft_goal"] is True
    assert by_task["code edit"]["merged_over_tree"] == pytest.approx((20 / 7) / 2.0)
    assert by_task["code edit"]["merged_goal"] is True  # 1.43 >= 1.3
    assert by_task["open chat"]["no_draft_goal"] is None  # no goal without repeated text
    assert by_task["open chat"]["merged_goal"] is False  # 1.67 < 2.5
    table = draft_free_markdown({"rows": list(rows.values()), "lossless": False,
                                 "spec": {"pair": "p", "max_tokens": 8}})
    assert "| NO |" in table and "did NOT emit" in table
