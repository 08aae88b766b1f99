"""Guided heads: which continuations keep a response on its way to a complete head (no model needed)."""

from __future__ import annotations

from evolinstruct.models.guide import TokenGuide, fits, head_complete

PAIR = r"(10|[1-9]) (10|[1-9])\n"


def test_partial_and_complete_heads():
    assert fits(PAIR, "") and fits(PAIR, "1") and fits(PAIR, "10") and fits(PAIR, "10 ")
    assert not fits(PAIR, "0") and not fits(PAIR, "11") and not fits(PAIR, "Assistant")
    assert fits(PAIR, "8 7\nbecause") and head_complete(PAIR, "8 7\nbecause")  # a token may cross the head's end
    assert not head_complete(PAIR, "8 7") and not head_complete(PAIR, "1")


def test_allowed_tokens_prefer_the_ranked_ones_and_fall_back_to_the_vocabulary():
    pieces = ["<eos>", "Sure", " 8", "8", "10", "1", "\n", " ", "7\n\n", ""]
    guide = TokenGuide(pieces, stop_ids=[0])
    assert guide.allowed(PAIR, "", ranked_ids=[1, 3, 4, 2]) == [3, 4]  # ranked order kept, misfits dropped
    assert guide.allowed(PAIR, "", ranked_ids=[1, 2]) == [3, 4, 5]  # none of the ranked fit: scan everything
    assert guide.allowed(PAIR, "1", ranked_ids=[0, 4, 7]) == [7]  # "11" and the stop token never fit
    assert guide.allowed(PAIR, "9 ", ranked_ids=[8, 6]) == [8]  # "9 7\n\n" completes the head
