"""`canopy adapt` (issue 13): JSON keys, adoption recorded per pair, clean errors."""

from __future__ import annotations

import json

from tests.test_cli import canopy

PROMPTS = ["the cat sat on the mat", "the dog ran in the park", "the sun is hot",
           "the rain is wet", "the tree is tall", "the sea is blue"]


def test_adapt_json_before_after(tiny_pair, tmp_path):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    (tmp_path / "h.txt").write_text("the bird flew\n\nthe fish swam\n")
    home = tmp_path / "home"
    pair = ["--target", tiny_pair["target"], "--draft", tiny_pair["noisy"], "--adapt-home", home]
    out = canopy("adapt", *pair, "--prompts", tmp_path / "p.txt", "--holdout",
                 tmp_path / "h.txt", "--max-tokens", 16, "--layers", 1, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for when in ("before", "after"):
        held = data[when]["holdout"]
        assert held["prompts"] == 2 and held["generated_tokens"] == 32
        assert {"acceptance", "tokens_per_pass", "tokens_per_second"} <= set(held)
    assert data["record"]["prompts"] == 6 and data["record"]["record_share_of_decode"] >= 0
    adapt = data["adapt"]
    assert adapt["trainable_parameters"] > 0 and adapt["peak_memory_bytes"] > 0
    assert adapt["adapt_seconds"] > 0 and adapt["version"] == 1
    assert data["buffer"]["sequences"] == 6
    status = json.loads(canopy("adapt", *pair, "--status", "--json").stdout)
    assert status["buffer"]["sequences"] == 6 and len(status["versions"]) == 1
    assert status["adopted_version"] == (1 if adapt["adopted"] else None)
    cleared = json.loads(canopy("adapt", *pair, "--clear", "--json").stdout)
    assert cleared["buffer"]["sequences"] == 0 and cleared["versions"] == []


def test_adapt_needs_prompt_files(tiny_pair, tmp_path):
    out = canopy("adapt", "--target", tiny_pair["target"], "--draft", tiny_pair["noisy"],
                 "--adapt-home", tmp_path, "--json")
    assert out.returncode == 2 and "--prompts" in json.loads(out.stdout)["error"]
    out = canopy("adapt", "--target", tiny_pair["target"], "--draft", tiny_pair["noisy"],
                 "--prompts", tmp_path / "missing.txt", "--holdout", tmp_path / "missing.txt")
    assert out.returncode == 2 and "Cannot read the prompt file" in out.stderr


def test_adapt_invalid_setting_exits_2(tiny_pair, tmp_path):
    out = canopy("adapt", "--target", tiny_pair["target"], "--draft", tiny_pair["noisy"],
                 "--status", "--rank", 0, "--adapt-home", tmp_path, "--json")
    assert out.returncode == 2 and "rank" in json.loads(out.stdout)["error"]


def test_adapt_in_phases_keeps_state_between_runs(tiny_pair, tmp_path):
    """--only record / adapt / measure: the same steps as one run, each its own process."""
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS) + "\n")
    (tmp_path / "h.txt").write_text("the bird flew\nthe fish swam\n")
    pair = ["--target", tiny_pair["target"], "--draft", tiny_pair["noisy"],
            "--adapt-home", tmp_path / "home", "--max-tokens", 12, "--layers", 1, "--json"]
    out = canopy("adapt", *pair, "--only", "measure", "--prompts", tmp_path / "p.txt")
    assert out.returncode == 2 and "--holdout" in json.loads(out.stdout)["error"]
    before = json.loads(canopy("adapt", *pair, "--only", "measure", "--holdout",
                               tmp_path / "h.txt").stdout)
    assert before["holdout"]["prompts"] == 2 and before["version"] is None
    assert before["buffer"]["sequences"] == 0  # measuring records nothing
    rec = json.loads(canopy("adapt", *pair, "--only", "record", "--prompts",
                            tmp_path / "p.txt").stdout)
    assert rec["record"]["prompts"] == 6 and rec["buffer"]["sequences"] == 6
    adapted = json.loads(canopy("adapt", *pair, "--only", "adapt").stdout)
    assert adapted["adapt"]["train_sequences"] + adapted["adapt"]["holdout_sequences"] == 6
    after = json.loads(canopy("adapt", *pair, "--only", "measure", "--holdout",
                              tmp_path / "h.txt").stdout)
    assert after["version"] == (1 if adapted["adapt"]["adopted"] else None)
