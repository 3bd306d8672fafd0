"""Edges of the decode loop: EOS inside an accepted draft path, prompts longer than a prefill
chunk (and the draft catching up in chunks), seeds that reproduce across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine.config import GenerationConfig, SamplingConfig, TreeConfig
from engine.costmodel.policy import Plan, StepPolicy
from engine.decoding import generate as generate_module
from engine.decoding.draft_model import DraftModel
from engine.decoding.generate import generate
from engine.events import Finished, StepEvent

PROMPT = [10, 20, 30, 40]


def finish(target, draft, ids, **kw) -> tuple[Finished, list[StepEvent]]:
    events = list(generate(target, draft, ids, GenerationConfig(**kw)))
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1], [e for e in events if isinstance(e, StepEvent)]


def test_eos_inside_an_accepted_draft_path(loaded_pair):
    target, draft = loaded_pair["target"], loaded_pair["same"]
    tree = TreeConfig(adaptive=False)
    free, steps = finish(target, draft, PROMPT, mode="tree", max_tokens=40, tree=tree)
    # an emitted token that the draft proposed with a drafted token after it, seen first here
    seen, eos = set(), None
    for s in steps:
        for k, (t, drafted) in enumerate(zip(s.token_ids, s.from_draft)):
            if eos is None and drafted and k + 1 < len(s.token_ids) and s.from_draft[k + 1] \
                    and t not in seen:
                eos = t
            seen.add(t)
    assert eos is not None, "the identical draft should accept runs of drafted tokens"
    original = target.tokenizer.eos_token_ids
    target.tokenizer.eos_token_ids = {eos}
    try:
        ar, _ = finish(target, None, PROMPT, mode="ar", max_tokens=40)
        got, steps = finish(target, draft, PROMPT, mode="tree", max_tokens=40, tree=tree)
    finally:
        target.tokenizer.eos_token_ids = original
    assert got.reason == ar.reason == "eos" and got.token_ids == ar.token_ids
    last = steps[-1]
    # EOS is a drafted node the target accepted (not its bonus token); what precedes it in the
    # path is emitted as drafted, and nothing follows it
    eos_node = next(n for n in last.accepted[1:] if last.tree_tokens[n] == eos)
    assert last.bonus_token is None
    assert len(last.token_ids) == last.accepted.index(eos_node) - 1 and all(last.from_draft)
    assert eos not in got.token_ids


class ScriptedPolicy(StepPolicy):
    """Falls back to ar for steps 2..13, so 12+ committed tokens pile up for the draft."""

    calls = 0

    def plan(self, pending: int = 0) -> Plan:
        self.calls += 1
        if 2 <= self.calls <= 13:
            return Plan(False, 1, self.threshold)
        return super().plan(pending)


def test_prompt_longer_than_prefill_chunk_and_draft_catch_up(loaded_pair, monkeypatch):
    target, draft = loaded_pair["target"], loaded_pair["noisy"]
    prompt = [(7 * i) % 250 + 3 for i in range(45)]
    whole, _ = finish(target, None, prompt, mode="ar", max_tokens=30)
    chunked_ar, _ = finish(target, None, prompt, mode="ar", max_tokens=30, prefill_chunk=8)
    chunks = []
    original = DraftModel.catch_up

    def spy(self, tokens=None):
        chunks.append(len(self.pending) if tokens is None else min(tokens, len(self.pending)))
        return original(self, tokens)

    monkeypatch.setattr(DraftModel, "catch_up", spy)
    monkeypatch.setattr(generate_module, "StepPolicy", ScriptedPolicy)
    tree, steps = finish(target, draft, prompt, mode="tree", max_tokens=30, prefill_chunk=8,
                         tree=TreeConfig(auto=False))  # speculate whenever not scripted to ar
    assert chunked_ar.token_ids == tree.token_ids == whole.token_ids
    assert chunks and max(chunks) > 8  # the draft caught up on more than one chunk
    assert sum(len(s.tree_tokens) > 1 for s in steps[13:]) > 0  # and drafted again after


def seeded_run(tiny_pair, hash_seed: str) -> list[int]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "generate", "--target", str(tiny_pair["target"]),
         "--draft", str(tiny_pair["noisy"]), "--mode", "chain", "--prompt", "seeds",
         "--temperature", "0.9", "--seed", "11", "--max-tokens", "16", "--json"],
        capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["token_ids"]


def test_seeds_reproduce_across_processes(tiny_pair):
    """No hash() of strings (randomized per process) feeds any seed."""
    assert seeded_run(tiny_pair, "1") == seeded_run(tiny_pair, "2")


@pytest.mark.parametrize("mode", ["ar", "chain", "tree"])
def test_same_seed_same_tokens(loaded_pair, mode):
    sampling = SamplingConfig(0.9, 0.9, seed=5)
    runs = [finish(loaded_pair["target"], None if mode == "ar" else loaded_pair["noisy"],
                   PROMPT, mode=mode, max_tokens=20, sampling=sampling)[0].token_ids
            for _ in range(2)]
    assert runs[0] == runs[1]
