"""On the real coder pair (Qwen2.5-Coder 1.5B target, 0.5B draft), built by
`canopy models demo --pair coder`: every mode emits the target's own tokens, resident and
streamed. Slow (a 6.7 GB fp32 target); skipped when the pair is not built."""

from __future__ import annotations

import pytest

from engine.config import GenerationConfig, SamplingConfig, StreamConfig, TreeConfig
from engine.events import Finished
from engine.formats.pairs import coder_paths
from engine.session import Session

PROMPT = "Write a Python function that returns the n-th Fibonacci number."
TOKENS = 16
FIXED_TREE = TreeConfig(max_nodes=32, auto=False)  # always speculate: exercise real trees
GREEDY = SamplingConfig()

pytestmark = [pytest.mark.slow, pytest.mark.coder]


@pytest.fixture(scope="module")
def pair():
    target, draft = coder_paths()
    if not ((target / "config.json").exists() and (draft / "config.json").exists()):
        pytest.skip("the coder pair is not built: run `canopy models demo --pair coder` (1.6 GB "
                    "download, ~5 minutes, 9 GB on disk)")
    return target, draft


def answer(session, mode, sampling=GREEDY, tree=FIXED_TREE) -> Finished:
    ids = session.encode_chat([{"role": "user", "content": PROMPT}])
    config = GenerationConfig(mode=mode, max_tokens=TOKENS, sampling=sampling, tree=tree)
    event = list(session.generate(ids, config))[-1]
    assert isinstance(event, Finished), event
    return event


@pytest.fixture(scope="module")
def reference(pair):
    """Resident runs: greedy ar/tree/chain and seeded sampled ar/tree (one load of the pair)."""
    session = Session.load(*pair)
    sampled = SamplingConfig(0.7, 0.95, seed=11)
    try:
        return {
            "ar": answer(session, "ar"),
            "tree": answer(session, "tree"),
            "chain": answer(session, "chain"),
            "ar_sampled": answer(session, "ar", sampled),
            "tree_sampled": answer(session, "tree", sampled),
        }
    finally:
        session.close()


def test_resident_greedy_tree_and_chain_equal_ar(reference):
    ar = reference["ar"]
    assert "def " in ar.text  # the target answers with code
    assert reference["tree"].token_ids == ar.token_ids
    assert reference["chain"].token_ids == ar.token_ids
    assert reference["tree"].stats.target_passes < ar.stats.target_passes


def test_resident_seeded_sampled_tree_equals_seeded_ar(reference):
    assert reference["tree_sampled"].token_ids == reference["ar_sampled"].token_ids


def test_streamed_at_half_the_target_equals_resident_ar(pair, reference):
    target_bytes = sum(f.stat().st_size for f in pair[0].glob("*.safetensors"))
    session = Session.load(*pair, budget_bytes=target_bytes // 2, stream=StreamConfig(prefetch=1))
    try:
        tree, chain = answer(session, "tree"), answer(session, "chain")
    finally:
        session.close()
    assert tree.token_ids == reference["ar"].token_ids
    assert chain.token_ids == reference["ar"].token_ids
    assert 0 < tree.stats.peak_target_resident_bytes <= target_bytes // 2
    assert tree.stats.target_bytes_read > 0 and tree.stats.peak_rss_bytes > 0
