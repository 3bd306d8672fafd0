"""The oracle copier's tokens per pass (engine.bench.copy_bound), on hand-made answers."""

import pytest

from engine.bench.copy_bound import copy_bound, copy_passes


def test_an_answer_of_new_tokens_takes_a_pass_per_token():
    assert copy_passes([1, 2, 3], [7, 8, 9], max_len=16) == 3
    assert copy_passes([1, 2, 3], [7, 8, 9], max_len=16, keyed=False) == 3


def test_a_quoted_passage_goes_a_branch_length_plus_the_target_token_per_pass():
    passage = list(range(10, 50))  # 40 distinct tokens
    prompt = [1] + passage + [2, 1]  # the answer quotes the passage after token 1
    # each pass: up to 4 copied tokens + the target's own (which continues the passage too)
    assert copy_passes(prompt, passage, max_len=4) == 8  # 40 tokens / 5 per pass
    assert copy_passes(prompt, passage, max_len=16) == 3  # 17 + 17 + 6


def test_keyed_copies_need_the_last_token_to_occur_before_unkeyed_do_not():
    prompt = [5, 6, 7, 8, 9]
    answer = [6, 7, 8, 9]  # after token 3 (not in the text) comes a copy of 6..9
    # keyed: the last token (9) never occurred before it: the first pass emits 6 alone, then
    # 6 is found at position 1 and 7, 8, 9 are copied
    assert copy_passes(prompt + [3], answer, max_len=16) == 2
    # unkeyed: the first pass copies 6, 7, 8 from anywhere, the target adds 9
    assert copy_passes(prompt + [3], answer, max_len=16, keyed=False) == 1


def test_the_bound_sums_tokens_and_passes_over_answers():
    pairs = [([1, 2, 3, 1], [2, 3]), ([4], [9, 9, 9])]
    b = copy_bound(pairs, max_len=16)
    assert b["tokens"] == 5
    # keyed: [2, 3] is copied after the earlier 1 in one pass; 9 9 9 takes three (the first
    # two 9s follow tokens with no earlier occurrence, the third copies after the first 9)
    assert b["keyed_tokens_per_pass"] == pytest.approx(5 / 4)
    # unkeyed: the second pass copies a 9 from anywhere and the target adds the last one
    assert b["unkeyed_tokens_per_pass"] == pytest.approx(5 / 3)
