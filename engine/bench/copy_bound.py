"""How many tokens per target pass copying from the text could reach on a given answer.

Hardware-free, from `ar`'s greedy answer and the prompt alone: an oracle copier that, at every
pass, proposes the one continuation from the text (prompt + answer so far) that the target will
accept furthest, capped at `max_len` tokens like prompt lookup's branches. Each pass then emits
the accepted copy plus the target's own token, so the bound is tokens / passes.

- keyed: copies start right after an earlier occurrence of the last committed token (prompt
  lookup with a 1-token match, every match tried: no branch limit, no cost);
- unkeyed: a copy may start anywhere in the text (an upper bound of every drafter that copies
  from the text, copies resumed after an edit included; lookahead's Jacobi guesses and the
  draft model are not copies and are not bounded by it).

A goal above the unkeyed bound cannot be met by copying on that answer; one between the two
needs copies that no n-gram match points to.
"""

from __future__ import annotations

from collections.abc import Sequence


def _common(text: Sequence[int], start: int, answer: Sequence[int], at: int, cap: int) -> int:
    """Length of the common prefix of text[start:] and answer[at:], at most `cap`."""
    n = 0
    limit = min(cap, len(text) - start, len(answer) - at)
    while n < limit and text[start + n] == answer[at + n]:
        n += 1
    return n


def copy_passes(prompt: Sequence[int], answer: Sequence[int], max_len: int,
                keyed: bool = True) -> int:
    """Target passes the oracle copier needs to emit `answer` after `prompt` (see module)."""
    text, at, passes = list(prompt), 0, 0
    while at < len(answer):
        last = text[-1] if text else None
        starts = (range(len(text)) if not keyed else
                  (j + 1 for j in range(len(text) - 1) if text[j] == last))
        best = max((_common(text, s, answer, at, max_len) for s in starts), default=0)
        step = min(best + 1, len(answer) - at)  # the copy and the target's own token
        text.extend(answer[at : at + step])
        at += step
        passes += 1
    return passes


def copy_bound(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_len: int) -> dict:
    """Tokens per pass of the keyed and unkeyed oracle copiers over (prompt, answer) pairs."""
    tokens = sum(len(a) for _, a in pairs)
    keyed = sum(copy_passes(p, a, max_len, True) for p, a in pairs)
    unkeyed = sum(copy_passes(p, a, max_len, False) for p, a in pairs)
    return {"tokens": tokens,
            "keyed_tokens_per_pass": tokens / keyed if keyed else 0.0,
            "unkeyed_tokens_per_pass": tokens / unkeyed if unkeyed else 0.0}
