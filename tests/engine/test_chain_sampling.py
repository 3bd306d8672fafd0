"""Chain mode with temperature and top-p, end to end: the only engine path whose acceptance
uses the residual norm(max(0, p - q)). Its output must have the target's distribution."""

from __future__ import annotations

import pytest

from engine.config import GenerationConfig, SamplingConfig
from engine.decoding import verify
from engine.decoding.generate import generate
from tests.engine.test_tree_decoding import two_sample_chi2_pvalue

PROMPT = [1, 2]  # the noisy draft's q differs from p here (sum min(p, q) ~ 0.7)
RUNS = 400


def first_tokens(pair, mode: str, seed0: int, prompt=PROMPT, **options) -> list[int]:
    """The first sampled token of RUNS seeded runs (t=0.7, top-p 0.8); `options`: further
    GenerationConfig fields."""
    out = []
    for s in range(RUNS):
        config = GenerationConfig(mode=mode, max_tokens=1, chain_length=2, **options,
                                  sampling=SamplingConfig(0.7, 0.8, seed=seed0 + s))
        draft = None if mode == "ar" else pair["noisy"]
        last = list(generate(pair["target"], draft, prompt, config))[-1]
        out.append(last.token_ids[0] if last.token_ids else -1)
    return out


@pytest.fixture(scope="module")
def ar_tokens(loaded_pair):
    return first_tokens(loaded_pair, "ar", 0)


@pytest.mark.slow
def test_sampled_chain_matches_target_alone(loaded_pair, ar_tokens):
    chain = first_tokens(loaded_pair, "chain", 50_000)
    assert len(set(ar_tokens)) > 1  # a distribution, not a forced token
    assert two_sample_chi2_pvalue(ar_tokens, chain) > 1e-3


@pytest.mark.slow
def test_a_wrong_residual_is_caught(loaded_pair, ar_tokens, monkeypatch):
    """The bug this guards against: after rejecting the draft's token, sample from p instead of
    the residual. The same test must reject it (the test has power)."""
    import numpy as np

    monkeypatch.setattr(verify, "fit_vocab", lambda q, size: np.zeros(size))  # residual = p
    wrong = first_tokens(loaded_pair, "chain", 50_000)
    assert two_sample_chi2_pvalue(ar_tokens, wrong) < 1e-4
