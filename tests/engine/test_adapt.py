"""Online draft adaptation (engine.adapt): recording, the buffer, LoRA slices, adoption, use."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.adapt.lora import AppliedAdapter
from engine.adapt.record import Buffer, Recorder, Sequence
from engine.adapt.run import Adaptation
from engine.adapt.train import Trainer
from engine.config import AdaptConfig, GenerationConfig
from engine.decoding.generate import generate
from engine.events import Finished
from engine.formats.loader import load_model
from engine.session import Session


def params(model) -> dict:
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def prompts(n, seed=0, length=10):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, 250, length)] for _ in range(n)]


def run(target, draft, ids, observer=None, **kw):
    config = GenerationConfig(**{"max_tokens": 24, **kw})
    events = list(generate(target, draft, ids, config, observer=observer))
    assert isinstance(events[-1], Finished), events[-1]
    return list(events[-1].token_ids)


def record(target, draft, n=6, seed=0, mode="tree", top_k=32) -> list[Sequence]:
    seqs = []
    for ids in prompts(n, seed):
        rec = Recorder(ids, top_k)
        run(target, draft, ids, rec, mode=mode)
        seqs.append(rec.sequence())
    return seqs


@pytest.fixture(scope="module")
def pair(tiny_pair):
    """A fresh draft per module: tests here apply adapters to it (and must remove them)."""
    return load_model(tiny_pair["target"]), load_model(tiny_pair["noisy"])


@pytest.fixture(scope="module")
def recorded(pair):
    return record(*pair, n=8)


@pytest.mark.parametrize("mode", ["tree", "chain", "ar"])
def test_recorded_topk_is_the_targets_distribution_at_each_position(pair, mode):
    """Positions line up with ids: at each one the recorded top-k equal the target's own
    log-softmax from a plain forward over the sequence, and (greedy) its top-1 is the next id."""
    target, draft = pair
    ids = prompts(1, seed=4)[0]
    rec = Recorder(ids, 8)
    out = run(target, draft if mode != "ar" else None, ids, rec, mode=mode)
    seq = rec.sequence()
    assert list(seq.ids[: len(ids) + len(out)]) == ids + out
    assert list(seq.positions) == list(range(len(ids) - 1, len(ids) - 1 + len(seq)))
    logits = target.model(mx.array(seq.ids[None, : seq.positions[-1] + 1]))[0]
    logp = np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))[seq.positions]
    mine = np.take_along_axis(logp, seq.topk_ids, axis=-1)
    assert np.abs(mine - seq.topk_logprobs.astype(np.float32)).max() < 2e-2  # stored in fp16
    best = np.sort(logp, axis=-1)[:, -8:]
    assert np.allclose(np.sort(mine, axis=-1), best, atol=1e-4)  # they are the top 8
    top1 = np.take_along_axis(seq.topk_ids, seq.topk_logprobs.argmax(-1)[:, None], -1)[:, 0]
    assert list(top1) == list(seq.ids[seq.positions + 1])
    if mode == "ar":
        assert not seq.rejected.any()


def test_buffer_bounds_persistence_and_clear(tmp_path, recorded):
    one = Buffer(tmp_path / "probe", 10**9)
    one.add(recorded[0])
    cap = int(one.size_bytes * 3.5)
    buf = Buffer(tmp_path / "buf", cap)
    for seq in recorded:
        buf.add(seq)
        assert buf.size_bytes <= cap
    assert 1 <= len(buf) < len(recorded)
    shards = sorted((tmp_path / "buf").glob("*.safetensors"))
    assert len(shards) == len(buf)  # evicted shards are gone from disk too
    again = Buffer(tmp_path / "buf", cap)  # persistence: a new object reads the same data
    kept = again.sequences()
    for a, b in zip(kept, recorded[-len(kept) :]):  # the newest survive
        assert np.array_equal(a.ids, b.ids) and np.array_equal(a.topk_ids, b.topk_ids)
        assert np.array_equal(a.topk_logprobs, b.topk_logprobs)
        assert np.array_equal(a.rejected, b.rejected)
    train, held = again.split(0.2)
    assert held and train and len(train) + len(held) == len(again)
    again.clear()
    assert len(again) == 0 and again.size_bytes == 0
    assert not list((tmp_path / "buf").glob("*.safetensors"))
    assert len(Buffer(tmp_path / "buf", cap)) == 0


def test_one_slice_lowers_the_distillation_loss(pair, recorded):
    _, draft = pair
    cfg = AdaptConfig(layers=1, steps_per_slice=4, learning_rate=1e-3)
    trainer = Trainer(draft.model, recorded[:6], recorded[6:], cfg)
    before = trainer.evaluate(recorded[:6])[0]
    next(trainer.slices())
    after = trainer.evaluate(recorded[:6])[0]
    assert after < before - 1e-3, (before, after)


def test_frozen_weights_bit_identical_only_chosen_layers_adapters_change(pair, recorded):
    _, draft = pair
    original = params(draft.model)
    cfg = AdaptConfig(layers=1, max_epochs=2, learning_rate=1e-3)
    trainer = Trainer(draft.model, recorded[:6], recorded[6:], cfg)
    base_tail = {k: np.array(v) for k, v in tree_flatten(trainer.tail.parameters())
                 if "lora_" not in k}
    list(trainer.slices())
    for k, v in params(draft.model).items():  # training never writes into the draft
        assert np.array_equal(v, original[k]), k
    for k, v in tree_flatten(trainer.tail.parameters()):
        if "lora_" not in k:
            assert np.array_equal(np.array(v), base_tail[k]), k
    adapter = trainer.best_adapter
    last = len(draft.model.layers) - 1
    assert adapter.layers == [last]
    assert all(k.startswith(f"{last}.") for k in adapter.factors)
    assert any(np.abs(np.array(v)).max() > 0 for k, v in adapter.factors.items()
               if k.endswith("lora_b"))  # they did train (lora_b starts at zero)
    assert trainer.trainable_parameters == adapter.parameters
    # fused: only the chosen layer's weights differ; removing restores every bit
    applied = AppliedAdapter(draft.model, adapter, fuse=True)
    changed = {k for k, v in params(draft.model).items() if not np.array_equal(v, original[k])}
    assert changed and all(k.startswith(f"model.layers.{last}.") for k in changed)
    applied.remove()
    for k, v in params(draft.model).items():
        assert np.array_equal(v, original[k]), k


def test_fused_and_applied_adapters_give_the_same_logits(pair, recorded):
    _, draft = pair
    trainer = Trainer(draft.model, recorded[:6], recorded[6:],
                      AdaptConfig(layers=2, max_epochs=1, learning_rate=1e-3))
    list(trainer.slices())
    adapter = trainer.tail.adapter()
    x = mx.array(recorded[0].ids[None, :20])
    outs = []
    for fuse in (True, False):
        applied = AppliedAdapter(draft.model, adapter, fuse=fuse)
        outs.append(np.array(draft.model(x)))
        applied.remove()
    assert np.abs(outs[0] - outs[1]).max() < 1e-4
    assert np.abs(outs[0] - np.array(draft.model(x))).max() > 1e-4  # the adapter does something


@pytest.fixture
def session(tiny_pair):
    s = Session.load(tiny_pair["target"], tiny_pair["noisy"])
    yield s
    s.close()


def fill(adaptation: Adaptation, n=8):
    for ids in prompts(n, seed=11):
        rec = adaptation.recorder(ids)
        list(adaptation.session.generate(ids, GenerationConfig(max_tokens=24), observer=rec))
        adaptation.keep(rec)


def test_greedy_output_after_adaptation_equals_ar(tiny_pair, session, tmp_path):
    adaptation = Adaptation(session, tiny_pair["target"], tiny_pair["noisy"],
                            AdaptConfig(layers=1, learning_rate=1e-3), home=tmp_path)
    fill(adaptation)
    list(adaptation.run())
    version = adaptation.store.versions()[-1]
    assert version["version"] == 1
    if not version["adopted"]:  # force it in use: losslessness must hold for any adapter
        adaptation.applied = AppliedAdapter(session.draft.model, adaptation.store.load_adopted()
                                            or _load(adaptation, 1))
    for ids in prompts(3, seed=21):
        ar = run(session.target, None, ids, mode="ar", max_tokens=32)
        for mode in ("tree", "chain"):
            assert run(session.target, session.draft, ids, mode=mode, max_tokens=32) == ar


def _load(adaptation, version):
    from engine.adapt.lora import Adapter

    return Adapter.load(adaptation.store.adapters / f"v{version}.safetensors")


def test_cancelled_mid_slice_leaves_the_draft_as_it_was_and_usable(tiny_pair, session, tmp_path):
    adaptation = Adaptation(session, tiny_pair["target"], tiny_pair["noisy"],
                            AdaptConfig(layers=1, steps_per_slice=4), home=tmp_path)
    fill(adaptation)
    original = params(session.draft.model)
    calls = [0]

    def stop_after_two_steps():  # e.g. the user sent a message: stop before the next step
        calls[0] += 1
        return calls[0] > 2

    progress = list(adaptation.run(stop_after_two_steps))
    assert progress[-1].cancelled and progress[-1].steps == 2  # within the first slice
    assert adaptation.store.versions() == [] and adaptation.version is None
    for k, v in params(session.draft.model).items():
        assert np.array_equal(v, original[k]), k
    ids = prompts(1, seed=5)[0]
    assert run(session.target, session.draft, ids) == run(session.target, None, ids, mode="ar")
    # closing the generator between slices is just as safe
    gen = adaptation.run()
    next(gen)
    gen.close()
    for k, v in params(session.draft.model).items():
        assert np.array_equal(v, original[k]), k


def test_versions_adoption_use_and_reset(tiny_pair, session, tmp_path):
    cfg = AdaptConfig(layers=1, learning_rate=1e-3)
    adaptation = Adaptation(session, tiny_pair["target"], tiny_pair["noisy"], cfg, home=tmp_path)
    original = params(session.draft.model)
    fill(adaptation)
    list(adaptation.run())
    info = adaptation.last
    assert info["trainable_parameters"] > 0 and info["adapt_seconds"] > 0
    assert info["adopted"] == (info["holdout_agreement_after"]
                               >= info["holdout_agreement_before"])
    if info["adopted"]:
        assert adaptation.version == 1 and adaptation.store.adopted == 1
        changed = [k for k, v in params(session.draft.model).items()
                   if not np.array_equal(v, original[k])]
        assert changed  # in use by the draft
        # a second session of the same pair picks the adopted version up
        other = Adaptation(session, tiny_pair["target"], tiny_pair["noisy"], cfg, home=tmp_path)
        assert other.store.adopted == 1
    adaptation.reset()
    assert adaptation.store.adopted is None and adaptation.store.versions() == []
    for k, v in params(session.draft.model).items():
        assert np.array_equal(v, original[k]), k
