"""Draft and target whose vocabularies are padded to different sizes (Qwen2.5 0.5B vs 7B)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.config import GenerationConfig, SamplingConfig
from engine.decoding.generate import generate
from engine.decoding.verify import accept_sampled
from engine.events import Finished
from engine.formats.compat import check_pair
from engine.formats.loader import load_model
from engine.testing import make_tiny_model


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    """A target with 37 padding rows; drafts cut to the tokenizer and padded further."""
    root = tmp_path_factory.mktemp("padded")
    target = make_tiny_model(root / "t", seed=5, vocab_padding=37)
    return {
        "target": target,
        "shorter": make_tiny_model(root / "d0", like=target, noise=0.1, seed=2, vocab_padding=0),
        "longer": make_tiny_model(root / "d1", like=target, noise=0.1, seed=2, vocab_padding=90),
    }


def test_fixture_vocab_sizes(padded):
    sizes = {k: load_model(v).model.args.vocab_size for k, v in padded.items()}
    assert sizes["shorter"] < sizes["target"] < sizes["longer"]
    check_pair(padded["target"], padded["shorter"])  # the pair is accepted as compatible


class InRange:
    """A model that fails the test when fed an id beyond its rows (MLX would read arbitrary
    memory: garbage logits, NaN, or a segfault)."""

    def __init__(self, model):
        self.model, self.vocab = model, model.args.vocab_size

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, tokens, *args, **kw):
        assert int(tokens.max().item()) < self.vocab, "an id beyond this model's vocabulary"
        return self.model(tokens, *args, **kw)


def checked(path):
    loaded = load_model(path)
    return replace(loaded, model=InRange(loaded.model))


@pytest.mark.parametrize("draft", ["shorter", "longer"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_chain_and_tree_run_with_padded_vocabularies(padded, draft, temperature):
    target, d = checked(padded["target"]), checked(padded[draft])
    sampling = SamplingConfig(temperature, 0.9 if temperature else 1.0, seed=1)
    runs = {}
    for mode in ("ar", "chain", "tree"):
        config = GenerationConfig(mode=mode, max_tokens=24, sampling=sampling, chain_length=3)
        last = list(generate(target, None if mode == "ar" else d, [3, 4, 5], config))[-1]
        assert isinstance(last, Finished), last
        runs[mode] = last.token_ids
    if temperature == 0.0:
        assert runs["chain"] == runs["tree"] == runs["ar"]
    else:  # the target samples its padding rows here: the draft must still be fed valid ids
        n_tokenizer = len(target.tokenizer.get_vocab())
        assert any(t >= n_tokenizer for t in runs["ar"] + runs["tree"])


def test_residual_reads_the_draft_over_the_targets_vocabulary():
    """Rejecting a sampled draft token leaves norm(max(0, p - q)) over p's rows only."""
    p = np.array([0.5, 0.3, 0.2])
    q_short = np.array([0.0, 1.0])  # always proposes token 1; p(1) / q(1) = 0.3
    q_long = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    for q in (q_short, q_long):
        bonus = []
        for seed in range(400):
            path, b = accept_sampled([9, 1], [-1, 0], np.stack([p, p]), [None, q],
                                     np.random.default_rng(seed))
            if path == [0]:
                bonus.append(b)
        counts = np.bincount(bonus, minlength=3)
        assert counts[1] == 0 and counts[0] > counts[2] > 0  # residual (0.5, 0, 0.2) / 0.7
    q_pad = np.array([0.0, 0.0, 0.0, 0.0, 1.0])
    path, _ = accept_sampled([9, 4], [-1, 0], np.stack([p, p]), [None, q_pad],
                             np.random.default_rng(0))
    assert path == [0]  # a token only the draft's padding has: p(x) = 0, always rejected


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_longer_draft_never_proposes_ids_the_target_lacks(padded, temperature):
    import mlx.core as mx

    from engine.decoding.draft_model import DraftModel

    draft, target = load_model(padded["longer"]), load_model(padded["target"])
    model = DraftModel(draft.model, SamplingConfig(temperature, 1.0),
                       target_vocab=target.vocab_size)
    logits = mx.zeros((2, draft.vocab_size))
    logits[:, -1] = 50.0  # the draft's favourite is a row only its padding has
    dist = model.distribution(logits)
    assert dist.shape == (2, target.vocab_size)
    assert mx.allclose(dist.sum(axis=-1), mx.ones(2)).item()
