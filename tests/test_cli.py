"""The `canopy` command line contract (DESIGN.md): JSON keys, exit codes, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STATS_KEYS = {
    "generated_tokens", "target_passes", "tokens_per_pass", "tokens_per_second",
    "acceptance_by_depth", "peak_target_resident_bytes", "target_bytes_read", "io_wait_seconds",
}


def canopy(*args, env=None):
    return subprocess.run([sys.executable, "-m", "app.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def ar_ids(tiny_pair):
    out = canopy("generate", "--target", tiny_pair["target"], "--prompt", "hello there",
                 "--mode", "ar", "--max-tokens", 24, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["token_ids"]


@pytest.mark.parametrize("mode", ["tree", "chain"])
def test_generate_json_contract(tiny_pair, ar_ids, mode):
    out = canopy("generate", "--target", tiny_pair["target"], "--draft", tiny_pair["noisy"],
                 "--prompt", "hello there", "--mode", mode, "--max-tokens", 24, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)  # stdout is exactly one JSON object
    assert {"text", "token_ids", "stats"} <= set(data)
    assert STATS_KEYS <= set(data["stats"])
    assert data["token_ids"] == ar_ids
    assert data["stats"]["generated_tokens"] == 24


def test_chat_with_system_prompt_and_sampling(tiny_pair):
    out = canopy("generate", "--target", tiny_pair["target"], "--draft", tiny_pair["same"],
                 "--prompt", "hi", "--chat", "--system", "be brief", "--temperature", "0.7",
                 "--top-p", "0.9", "--seed", 1, "--max-tokens", 10, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stats"]["generated_tokens"] <= 10


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--target", "/nonexistent/model"], "not found"),
        (["--target", "{tmp}"], "config.json is missing"),
        (["--target", "{target}", "--draft", "{tmp}"], "config.json is missing"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_pair, tmp_path, args, needle):
    args = [a.format(tmp=tmp_path, target=tiny_pair["target"]) for a in args]
    out = canopy("generate", *args, "--prompt", "x", "--max-tokens", 3)
    assert out.returncode != 0
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_incompatible_pair(tiny_pair, tmp_path):
    import shutil

    from tokenizers import Tokenizer

    other = tmp_path / "other"
    shutil.copytree(tiny_pair["noisy"], other)
    tok = Tokenizer.from_file(str(other / "tokenizer.json"))
    tok.add_special_tokens(["<|extra|>"])
    tok.save(str(other / "tokenizer.json"))
    out = canopy("generate", "--target", tiny_pair["target"], "--draft", other,
                 "--prompt", "x", "--max-tokens", 3)
    assert out.returncode == 2 and "different tokenizers" in out.stderr
    assert "Traceback" not in out.stderr


def test_context_length_check(tiny_pair):
    out = canopy("generate", "--target", tiny_pair["target"], "--mode", "ar",
                 "--prompt", "hello " * 50, "--max-tokens", 5000)
    assert out.returncode == 2 and "context" in out.stderr


def test_version():
    out = canopy("--version")
    assert out.returncode == 0 and out.stdout.startswith("canopy ")


def test_help_shows_defaults_from_the_config():
    from engine.config import GenerationConfig, StreamConfig

    text = " ".join(canopy("generate", "--help").stdout.split())
    assert f"(default: {GenerationConfig().tree.max_nodes})" in text
    assert f"(default: {StreamConfig().prefetch})" in text
    assert f"(default: {GenerationConfig().max_tokens})" in text


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--mode", "chain"], "needs a draft"),  # found before any model loads
        (["--max-tokens", "0"], "--max-tokens"),
        (["--prefetch", "0"], "--prefetch"),
        (["--budget-mb", "-5"], "--budget-mb"),
        (["--mode", "bogus"], "invalid choice"),
        (["--target", "/nonexistent/model"], "not found"),
    ],
)
def test_json_failures_print_an_error_object_and_exit_2(tiny_pair, args, needle):
    out = canopy("generate", "--target", tiny_pair["target"], "--prompt", "x", "--json", *args)
    assert out.returncode == 2, out.stderr
    assert needle in json.loads(out.stdout)["error"]
    assert "Traceback" not in out.stderr


def test_missing_draft_is_found_before_loading(tiny_pair, tmp_path):
    import shutil

    target = tmp_path / "t"
    shutil.copytree(tiny_pair["target"], target)
    (target / "model.safetensors").write_bytes(b"\0" * 16)  # loading it would fail differently
    out = canopy("generate", "--target", target, "--mode", "chain", "--prompt", "x")
    assert out.returncode == 2 and "needs a draft" in out.stderr


def test_bench_rejects_a_budget_it_would_ignore():
    out = canopy("bench", "--quick", "--budget-mb", "10")
    assert out.returncode == 2 and "--budget-mb" in out.stderr


def test_bench_io_says_what_cold_means(tmp_path):
    out = canopy("bench", "--io", "--io-mb", 2, "--io-layers", 2, "--io-repeat", 1,
                 "--io-dir", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "cold (page cache dropped)" in out.stdout or "cold (fresh file" in out.stdout
    assert "warm:" in out.stdout and not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["--mode", "lookahead"], ["--mode", "tree"],
                                  ["--mode", "tree", "--branches", "prompt"]])
def test_draft_free_modes_need_no_draft(tiny_pair, ar_ids, args):
    out = canopy("generate", "--target", tiny_pair["target"], "--prompt", "hello there",
                 "--max-tokens", 24, "--json", *args)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["token_ids"] == ar_ids
    assert set(data["stats"]["proposed_by_source"]) <= {"prompt", "ngram", "jacobi"}


def test_unknown_branch_source_exits_2(tiny_pair):
    out = canopy("generate", "--target", tiny_pair["target"], "--prompt", "x",
                 "--branches", "prompt,bogus")
    assert out.returncode == 2 and "bogus" in out.stderr
