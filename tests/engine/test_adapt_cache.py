"""Adopting a new adapter changes the draft's weights: cached draft KV must not be reused."""

from __future__ import annotations

import mlx.core as mx
import pytest

from engine.adapt.lora import LoRATail, last_layers
from engine.adapt.run import Adaptation
from engine.config import AdaptConfig, GenerationConfig, PromptCacheConfig
from engine.decoding.generate import generate
from engine.decoding.prompt_cache import PromptCache
from engine.events import Finished
from engine.session import Session

PROMPT = [5, 17, 33, 2, 41, 9, 12, 30]


@pytest.fixture
def session(tiny_pair, tmp_path):
    s = Session.load(tiny_pair["target"], tiny_pair["noisy"],
                     prompt_cache=PromptCacheConfig(folder=str(tmp_path / "kv")))
    yield s
    s.close()


def turn(session, ids, conversation=1) -> Finished:
    events = list(session.generate(ids, GenerationConfig(mode="chain", max_tokens=12),
                                   conversation=conversation))
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


def adopt_new_version(adaptation: Adaptation) -> None:
    """Save an adapter with non-zero factors as a new adopted version and use it."""
    model = adaptation.session.draft.model
    tail = LoRATail(model, last_layers(model, 1), rank=2, scale=1.0)
    adapter = tail.adapter()
    adapter.factors = {k: v + 0.05 for k, v in adapter.factors.items()}
    adaptation.store.save(adapter, {}, adopt=True)
    adaptation.use_adopted()


def test_adopting_an_adapter_drops_cached_draft_kv(tiny_pair, session, tmp_path):
    adaptation = Adaptation(session, tiny_pair["target"], tiny_pair["noisy"],
                            AdaptConfig(layers=1), home=tmp_path / "adapt")
    first = turn(session, PROMPT)
    follow_up = PROMPT + list(first.token_ids) + [7, 8]
    cache = session.prompt_cache
    assert cache._entries[1].draft is not None  # the draft's KV is kept for the next turn
    adopt_new_version(adaptation)
    assert adaptation.version == 1
    assert cache._entries[1].draft is None and cache._entries[1].target is not None
    second = turn(session, follow_up)
    assert second.stats.extra.get("draft_prefill_cached_tokens", 0) == 0  # re-prefilled
    assert second.stats.extra.get("prefill_cached_tokens", 0) > 0  # the target's reused
    ar = list(generate(session.target, None, follow_up,
                       GenerationConfig(mode="ar", max_tokens=12)))[-1]
    assert second.token_ids == ar.token_ids
    # the same version again (e.g. after a run that adopted nothing) keeps the draft KV
    assert cache._entries[1].draft is not None
    adaptation.use_adopted()
    assert cache._entries[1].draft is not None
    # reset: back to the shipped draft, so the adapted draft's KV goes too
    adaptation.reset()
    assert cache._entries[1].draft is None


def test_draft_kv_on_disk_from_another_draft_version_is_not_restored(session, tmp_path):
    turn(session, PROMPT)
    session.prompt_cache.flush()
    reader = PromptCache(session.prompt_cache.config, session.prompt_cache.fingerprint)
    assert reader.take(1).draft is not None  # same draft weights: restored whole
    reader = PromptCache(session.prompt_cache.config, session.prompt_cache.fingerprint)
    reader.drop_drafts("adapter-3")
    entry = reader.take(1)
    assert entry.draft is None and entry.target is not None
    mx.eval(entry.target.layers[0].keys)

