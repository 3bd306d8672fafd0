"""On the real demo pair (SmolLM2-135M target, its 4-bit requantization as draft)."""

from __future__ import annotations

import pytest

from engine.config import GenerationConfig, TreeConfig
from engine.events import Finished
from engine.session import Session

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Translate to French: the cat sleeps on the mat.",
]


@pytest.fixture(scope="module")
def demo_session(demo_pair):
    return Session.load(*demo_pair)


def answer(session, prompt, mode, max_tokens=32, **config):
    ids = session.encode_chat([{"role": "user", "content": prompt}])
    event = list(session.generate(ids, GenerationConfig(mode=mode, max_tokens=max_tokens,
                                                        **config)))[-1]
    assert isinstance(event, Finished), event
    return event


@pytest.mark.slow
@pytest.mark.demo
@pytest.mark.parametrize("prompt", PROMPTS)
def test_demo_pair_tree_and_chain_equal_ar(demo_session, prompt):
    ar = answer(demo_session, prompt, "ar")
    tree = answer(demo_session, prompt, "tree")
    # the draft's tree at a fixed budget (auto may sit at ar: this draft costs a target pass)
    fixed = answer(demo_session, prompt, "tree", tree=TreeConfig(auto=False))
    chain = answer(demo_session, prompt, "chain")
    assert tree.token_ids == ar.token_ids
    assert fixed.token_ids == ar.token_ids
    assert chain.token_ids == ar.token_ids
    assert fixed.stats.target_passes < ar.stats.target_passes
    if prompt.startswith("What is the capital"):
        assert "Paris" in tree.text


QUOTE = ("Rewrite this function with a docstring, keeping the code the same:\n\n"
         "def mean(values):\n    total = 0\n    for v in values:\n        total += v\n"
         "    return total / len(values)\n")


@pytest.mark.slow
@pytest.mark.demo
@pytest.mark.parametrize("prompt", [PROMPTS[1], QUOTE])
def test_demo_pair_draft_free_modes_equal_ar(demo_pair, demo_session, prompt):
    """Lookahead, prompt lookup alone (no draft) and the merged tree emit ar's tokens."""
    from engine.config import LookupConfig

    ids = demo_session.encode_chat([{"role": "user", "content": prompt}])
    target_alone = Session.load(demo_pair[0], None)
    ar = answer(demo_session, prompt, "ar")
    for session, cfg in (
        (target_alone, GenerationConfig(mode="lookahead", max_tokens=32)),
        (target_alone, GenerationConfig(mode="tree", max_tokens=32,
                                        lookup=LookupConfig(sources=("prompt",)))),
        (demo_session, GenerationConfig(mode="tree", max_tokens=32)),
    ):
        got = list(session.generate(ids, cfg))[-1]
        assert isinstance(got, Finished), got
        assert got.token_ids == ar.token_ids, cfg.mode
