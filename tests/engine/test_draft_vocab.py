"""The draft scores a vocabulary subset (FR-Spec): its logits are exactly the full head's rows,
for tied, untied and quantized heads; greedy output equals ar, resident and streamed; sampled
chain output keeps the target's distribution with q = the softmax over the subset."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine.config import DRAFT_VOCAB_AUTO_ROWS, GenerationConfig, TreeConfig
from engine.decoding import drafters
from engine.decoding.draft_vocab import DraftVocab, head_module, low_rows, special_ids
from engine.decoding.generate import generate
from engine.errors import ConfigError
from engine.events import Finished, StepEvent
from engine.formats.loader import load_model
from engine.testing import SPECIAL_TOKENS, make_tiny_model
from tests.engine.test_chain_sampling import first_tokens as sampled_first_tokens
from tests.engine.test_tree_decoding import two_sample_chi2_pvalue

ROWS = 40  # of the tiny models' 271 ids: most of the target's tokens fall outside
PROMPT = [5, 6, 7, 8, 9, 10, 200, 201]


@pytest.mark.parametrize("bad", [0, -3, 1.5, True, "half", None])
def test_bad_draft_vocab_setting_is_one_clear_error(bad):
    with pytest.raises(ConfigError, match="draft_vocab"):
        GenerationConfig(draft_vocab=bad)


def test_auto_is_on_for_large_vocabularies_only():
    assert low_rows("auto", 151_936) == DRAFT_VOCAB_AUTO_ROWS
    assert low_rows("auto", 49_152) is None  # SmolLM2: the full head
    assert low_rows("full", 151_936) is None
    assert low_rows(100, 271) == 100
    assert low_rows(500, 271) is None  # no smaller than the vocabulary: nothing to cut


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("quantized", [False, True])
def test_subset_logits_are_the_full_heads_rows(tmp_path, tied, quantized):
    model = load_model(make_tiny_model(tmp_path / "m", seed=4, tie_word_embeddings=tied)).model
    if quantized:  # mlx-community style: packed rows, scales and biases
        nn.quantize(model, group_size=32, bits=4)
    kind = {(False, False): nn.Linear, (False, True): nn.QuantizedLinear,
            (True, False): nn.Embedding, (True, True): nn.QuantizedEmbedding}[(tied, quantized)]
    assert type(head_module(model)) is kind
    subset = DraftVocab(model, ROWS, always=[268, 150, 3])
    subset.include([201, 12, 150, 999])  # 12 is in the low block; 999 beyond the vocabulary
    assert subset.ids.tolist() == list(range(ROWS)) + [150, 268, 201]
    x = mx.array([PROMPT])
    full = model(x)[0]
    sub = subset.logits(model.hidden(x))[0]
    np.testing.assert_allclose(np.array(sub), np.array(full)[:, subset.ids], atol=1e-4)


def test_a_growing_subset_keeps_its_earlier_local_indices(loaded_pair):
    """A step's carried draft distributions refer to local indices taken before the subset grew
    (engine.decoding.pipeline): joining tokens must not move them."""
    subset = DraftVocab(loaded_pair["noisy"].model, ROWS, always=[250])
    before = subset.ids.copy()
    subset.include([100, 60, 250])
    assert subset.ids[: len(before)].tolist() == before.tolist()
    assert subset.ids[len(before):].tolist() == [60, 100]


def test_special_ids_are_the_tokenizers_added_tokens(loaded_pair):
    tok = loaded_pair["target"].tokenizer
    assert {tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS} <= set(special_ids(tok))


def run(target, draft, mode, draft_vocab, prompt=PROMPT, max_tokens=40):
    # a fixed tree budget: the auto policy may fall back to ar on a loaded machine
    config = GenerationConfig(mode=mode, max_tokens=max_tokens, draft_vocab=draft_vocab,
                              tree=TreeConfig(max_nodes=24, auto=False))
    events = list(generate(target, draft, prompt, config))
    assert isinstance(events[-1], Finished), events[-1]
    return [e for e in events if isinstance(e, StepEvent)]


def ids_of(steps):
    return [t for s in steps for t in s.token_ids]


@pytest.mark.parametrize("mode", ["tree", "chain"])
def test_greedy_with_a_subset_equals_ar_and_drafts_only_subset_tokens(loaded_pair, mode):
    target, draft = loaded_pair["target"], loaded_pair["noisy"]
    ar = ids_of(run(target, None, "ar", "full"))
    assert any(t >= ROWS and t not in PROMPT for t in ar)  # the subset misses target tokens
    steps = run(target, draft, mode, ROWS)
    assert ids_of(steps) == ar
    specials = set(special_ids(target.tokenizer))
    seen = set(PROMPT) | specials
    drafted = 0
    for s in steps:
        # every draft-model node is in the subset as it stood at that step (draft-free
        # branches, prompt lookup and n-grams, may hold any token)
        sources = s.tree_sources or ("root",) + ("draft",) * (len(s.tree_tokens) - 1)
        for t, source in zip(s.tree_tokens, sources):
            if source == "draft":
                assert t < ROWS or t in seen, t
                drafted += 1
        seen.update(s.token_ids)
    assert drafted > 0
    full = run(target, draft, mode, "full")
    assert ids_of(full) == ar


def test_greedy_tree_with_a_quantized_draft_subset_equals_ar(tmp_path, loaded_pair):
    target = loaded_pair["target"]
    draft = load_model(make_tiny_model(tmp_path / "q", like=loaded_pair["target"].path,
                                       noise=0.1, seed=5, tie_word_embeddings=False))
    nn.quantize(draft.model, group_size=32, bits=8)
    assert isinstance(head_module(draft.model), nn.QuantizedLinear)
    assert ids_of(run(target, draft, "tree", ROWS)) == ids_of(run(target, None, "ar", "full"))


def test_greedy_tree_with_a_subset_and_a_streamed_target_equals_ar(tiny_pair, loaded_pair):
    from engine.session import Session

    ar = ids_of(run(loaded_pair["target"], None, "ar", "full", max_tokens=24))
    session = Session.load(tiny_pair["target"], tiny_pair["noisy"], budget_bytes=300_000)
    try:
        config = GenerationConfig(mode="tree", max_tokens=24, draft_vocab=ROWS,
                                  tree=TreeConfig(max_nodes=24, auto=False))
        events = list(session.generate(PROMPT, config))
    finally:
        session.close()
    assert isinstance(events[-1], Finished), events[-1]
    assert ids_of([e for e in events if isinstance(e, StepEvent)]) == ar


SAMPLED_PROMPT = [1, 2]


def first_tokens(pair, mode: str, seed0: int) -> list[int]:
    return sampled_first_tokens(pair, mode, seed0, SAMPLED_PROMPT, draft_vocab=ROWS)


@pytest.fixture(scope="module")
def ar_tokens(loaded_pair):
    return first_tokens(loaded_pair, "ar", 0)


@pytest.mark.slow
def test_sampled_chain_with_a_subset_matches_target_alone(loaded_pair, ar_tokens):
    chain = first_tokens(loaded_pair, "chain", 50_000)
    assert len(set(ar_tokens)) > 1  # a distribution, not a forced token
    assert any(t >= ROWS for t in ar_tokens)  # the target's mass reaches outside the subset
    assert two_sample_chi2_pvalue(ar_tokens, chain) > 1e-3


@pytest.mark.slow
def test_acceptance_with_another_q_than_the_sampled_one_is_caught(loaded_pair, ar_tokens,
                                                                   monkeypatch):
    """The bug this guards against: acceptance reads a q that is not the distribution the
    token was drawn from (here the full softmax's mass on the subset, not renormalized)."""
    real = drafters.DraftModel.over_vocab
    monkeypatch.setattr(drafters.DraftModel, "over_vocab", lambda self, q: 0.3 * real(self, q))
    wrong = first_tokens(loaded_pair, "chain", 50_000)
    assert two_sample_chi2_pvalue(ar_tokens, wrong) < 1e-4
