"""Prompt cache across turns: a follow-up prefills only what is new, output equals a cold run."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import GenerationConfig, PromptCacheConfig, TreeConfig
from engine.decoding.generate import generate
from engine.decoding.prompt_cache import PromptCache, TurnCache, common_prefix
from engine.events import Failed, Finished, PrefillDone
from engine.session import Session
from engine.streaming.weights import index_model
from engine.testing import make_tiny_model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pc")
    target = make_tiny_model(root / "t", num_layers=4, seed=21, shards=2)
    draft = make_tiny_model(root / "d", like=target, noise=0.1, seed=5)
    return target, draft


@pytest.fixture(scope="module")
def resident(pair):
    return Session.load(*pair)


def half_budget(model_dir) -> int:
    """Resident base + half the layer bytes: a streamed target with pinned and streamed layers."""
    index = index_model(model_dir)
    layers = [index.layer_bytes(i) for i in range(len(index.layers))]
    return sum(t.length for t in index.other) + max(sum(layers) // 2, max(layers))


def answer(session, ids, mode="tree", conversation=None, max_tokens=12, **extra) -> Finished:
    config = GenerationConfig(mode=mode, max_tokens=max_tokens, **extra)
    events = list(session.generate(ids, config, conversation=conversation))
    assert isinstance(events[0], PrefillDone)
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


def user_turns(seed: int, n: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(3, 260, int(rng.integers(4, 20)))] for _ in range(n)]


def converse(session, turns, mode, conversation):
    """Token-level chat: history + user turn -> answer appended (with a separator token)."""
    history: list[int] = []
    results = []
    for user in turns:
        prompt = history + [1] + user + [2]
        result = answer(session, prompt, mode, conversation)
        results.append((prompt, result))
        history = prompt + list(result.token_ids) + [0]
    return results


def check_multi_turn(session, mode, conversation):
    held = 0  # tokens of the history the previous turn left in the cache
    for turn, (prompt, warm) in enumerate(converse(session, user_turns(3, 4), mode, conversation)):
        cold = answer(session, prompt, mode)  # no conversation: a fresh prefill of the history
        assert warm.token_ids == cold.token_ids, (mode, turn)
        assert cold.stats.to_dict()["prefill_cached_tokens"] == 0
        # everything up to the previous answer's last token came from the cache
        assert warm.stats.to_dict()["prefill_cached_tokens"] >= held, (turn, held)
        assert warm.stats.to_dict()["kv_cache_bytes"] > 0
        held = len(prompt) + len(warm.token_ids) - 1


@pytest.mark.parametrize("mode", ["ar", "tree"])
def test_multi_turn_greedy_equals_cold_resident(resident, mode):
    check_multi_turn(resident, mode, conversation=f"res-{mode}")


@pytest.mark.parametrize("mode", ["ar", "tree"])
def test_multi_turn_greedy_equals_cold_streamed(pair, mode):
    session = Session.load(*pair, budget_bytes=half_budget(pair[0]))
    try:
        check_multi_turn(session, mode, conversation=f"str-{mode}")
    finally:
        session.close()


def test_follow_up_prefills_only_new_tokens(resident):
    # the draft speculates every step (auto off): a tiny draft as big as its target is too
    # slow for the cost model, which would never feed it
    spec = {"tree": TreeConfig(auto=False)}
    first = [1, 40, 41, 42, 43, 2]
    a = answer(resident, first, "tree", "follow", max_tokens=10, **spec)
    follow = first + list(a.token_ids) + [0, 1, 50, 51, 2]
    entry = resident.prompt_cache.take("follow")
    held = list(entry.target.ids)
    resident.prompt_cache.put("follow", entry)
    # the cache holds the prompt and every answer token but the last (the final bonus); a step
    # cut by max_tokens may have cached more, which count when they match the new prompt
    n = len(first) + len(a.token_ids) - 1
    assert held[:n] == (first + list(a.token_ids))[:n]
    b = answer(resident, follow, "tree", "follow", **spec)
    d = b.stats.to_dict()
    assert d["prefill_cached_tokens"] == common_prefix(held, follow[:-1]) >= n
    assert d["draft_prefill_cached_tokens"] > 0
    assert b.token_ids == answer(resident, follow, "tree", **spec).token_ids


def test_regenerate_and_edit_reuse_the_common_prefix(resident):
    prompt = [1, 60, 61, 62, 63, 64, 65, 66, 2]
    first = answer(resident, prompt, "tree", "regen")
    again = answer(resident, prompt, "tree", "regen")  # regenerate: whole prompt but the root
    assert again.token_ids == first.token_ids
    assert again.stats.to_dict()["prefill_cached_tokens"] == len(prompt) - 1
    edited = prompt[:4] + [99, 98] + prompt[6:]  # edit in the middle of the last message
    warm = answer(resident, edited, "tree", "regen")
    assert warm.stats.to_dict()["prefill_cached_tokens"] == 4
    assert warm.token_ids == answer(resident, edited, "tree").token_ids


def test_lru_keeps_at_most_n_conversations(pair):
    session = Session.load(*pair, prompt_cache=PromptCacheConfig(max_conversations=2))
    prompts = {k: [1, 70 + k, 71, 72, 2] for k in range(3)}
    for k, ids in prompts.items():
        answer(session, ids, "ar", k, max_tokens=4)
    assert len(session.prompt_cache) == 2 and 0 not in session.prompt_cache
    assert answer(session, prompts[0], "ar", 0, max_tokens=4).stats.to_dict()[
        "prefill_cached_tokens"] == 0  # evicted: cold
    assert answer(session, prompts[2], "ar", 2, max_tokens=4).stats.to_dict()[
        "prefill_cached_tokens"] == len(prompts[2]) - 1
    assert len(session.prompt_cache) == 2


def test_byte_bound_evicts(pair, resident):
    answer(resident, [1, 5, 6, 7, 2], "ar", "bytes", max_tokens=4)
    one = resident.prompt_cache.take("bytes").nbytes
    session = Session.load(*pair, prompt_cache=PromptCacheConfig(max_bytes=int(one * 1.5)))
    for k in range(3):
        answer(session, [1, 5, 6, 7, 2], "ar", k, max_tokens=4)
    assert len(session.prompt_cache) == 1 and 2 in session.prompt_cache


def test_evicted_conversation_restored_from_disk(pair, tmp_path):
    config = PromptCacheConfig(max_conversations=1, folder=str(tmp_path / "pc"))
    session = Session.load(*pair, prompt_cache=config)
    prompt = [1, 80, 81, 82, 83, 2]
    a = answer(session, prompt, "tree", "disk")
    answer(session, [1, 9, 2], "tree", "other")  # evicts "disk" to the folder
    assert "disk" not in session.prompt_cache
    assert len(list((tmp_path / "pc").glob("*.safetensors"))) == 1
    follow = prompt + list(a.token_ids) + [0, 1, 84, 2]
    b = answer(session, follow, "tree", "disk")
    assert b.stats.to_dict()["prefill_cached_tokens"] >= len(prompt) + len(a.token_ids) - 1
    assert b.token_ids == answer(session, follow, "tree").token_ids
    # a new session of the same pair finds it on disk after a flush; another pair does not
    session.prompt_cache.flush()
    again = Session.load(*pair, prompt_cache=config)
    assert answer(again, follow, "tree", "disk").stats.to_dict()["prefill_cached_tokens"] > 0
    other = Session.load(pair[0], None, prompt_cache=config)
    assert answer(other, follow, "ar", "disk").stats.to_dict()["prefill_cached_tokens"] == 0


def test_failed_turn_leaves_no_cache(resident):
    answer(resident, [1, 90, 91, 2], "ar", "fail", max_tokens=4)
    assert "fail" in resident.prompt_cache
    turn = TurnCache(resident.prompt_cache, "fail")
    events = list(generate(resident.target, None, [1, 90, 91, 2],  # chain needs a draft: fails
                           GenerationConfig(mode="chain", max_tokens=4), turn=turn))
    assert isinstance(events[-1], Failed)
    assert "fail" not in resident.prompt_cache


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2]) == 2
    assert len(PromptCache()) == 0


def test_disk_folder_is_bounded(pair, tmp_path):
    config = PromptCacheConfig(max_conversations=1, folder=str(tmp_path / "pc"))
    session = Session.load(*pair, prompt_cache=config)
    answer(session, [1, 5, 6, 2], "ar", "a", max_tokens=3)
    answer(session, [1, 7, 8, 2], "ar", "b", max_tokens=3)  # "a" goes to disk
    one = sum(f.stat().st_size for f in (tmp_path / "pc").glob("*.safetensors"))
    session.prompt_cache.config = PromptCacheConfig(
        max_conversations=1, folder=str(tmp_path / "pc"), max_disk_bytes=int(one * 1.5))
    answer(session, [1, 9, 10, 2], "ar", "c", max_tokens=3)  # "b" to disk, "a" pruned
    assert len(list((tmp_path / "pc").glob("*.safetensors"))) == 1
    assert session.prompt_cache.take("a").target is None
    assert session.prompt_cache.take("b").target is not None


def test_rebuilt_weights_do_not_restore_old_caches(tmp_path):
    target = make_tiny_model(tmp_path / "t", num_layers=2, seed=1)
    config = PromptCacheConfig(folder=str(tmp_path / "pc"))
    session = Session.load(target, None, prompt_cache=config)
    answer(session, [1, 5, 6, 7, 2], "ar", "x", max_tokens=3)
    session.prompt_cache.flush()
    make_tiny_model(tmp_path / "t", num_layers=2, seed=2)  # same folder, new weights
    again = Session.load(target, None, prompt_cache=config)
    warm = answer(again, [1, 5, 6, 7, 2], "ar", "x", max_tokens=3)
    assert warm.stats.to_dict()["prefill_cached_tokens"] == 0
    assert warm.token_ids == answer(again, [1, 5, 6, 7, 2], "ar", max_tokens=3).token_ids
