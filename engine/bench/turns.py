"""Time to first token turn by turn in one conversation, with and without the prompt cache.

The conversation is played once with its KV caches kept (`conversation` key); then each turn's
exact prompt (same history, the answers of that run) is replayed cold. Greedy, so the answers
of both runs are the same tokens.
"""

from __future__ import annotations

from ..config import GenerationConfig
from ..events import Failed, Finished

QUESTIONS = (
    "Explain in a few sentences what a hash table is and why lookups are fast on average. "
    "Mention collisions and how chaining or open addressing handle them.",
    "Now compare it with a balanced binary search tree: when would you pick the tree instead? "
    "Think about ordered iteration, worst cases and memory.",
    "Write a short Python function that counts word frequencies in a text and returns the ten "
    "most common words, and say what its complexity is.",
    "How would that function change if the text did not fit in memory and came as a stream of "
    "lines from a large file? Keep the answer practical.",
    "Summarise everything we discussed in this conversation as a list of five bullet points "
    "for a student who is revising for an exam.",
)


def ttft_by_turn(session, config: GenerationConfig, questions=QUESTIONS, key="bench") -> list:
    """Per turn: prompt tokens, reused tokens, TTFT with the cache and TTFT cold (seconds)."""
    messages: list[dict] = []
    rows = []
    for question in questions:
        messages.append({"role": "user", "content": question})
        ids = session.encode_chat(messages)
        warm = _finish(session.generate(ids, config, conversation=key))
        cold = _finish(session.generate(ids, config))
        if warm.token_ids != cold.token_ids:
            raise AssertionError("cached and cold answers differ")  # the lossless invariant
        rows.append({
            "prompt_tokens": len(ids),
            "prefill_cached_tokens": warm.stats.extra["prefill_cached_tokens"],
            "ttft_cached": warm.stats.time_to_first_token,
            "ttft_cold": cold.stats.time_to_first_token,
            "kv_cache_bytes": warm.stats.extra["kv_cache_bytes"],
        })
        messages.append({"role": "assistant", "content": warm.text})
    return rows


def _finish(events) -> Finished:
    last = None
    for last in events:
        if isinstance(last, Failed):
            raise RuntimeError(last.message)
    return last
