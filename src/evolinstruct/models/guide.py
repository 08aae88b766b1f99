"""Guided decoding of a response's head: the first characters must match a regex, the rest is free.

A judge as small as the embedded 135M model rarely writes FastChat's "8 7" score line on its own, so
its verdicts would all be unparseable. With a guide such as `(10|[1-9]) (10|[1-9])\\n` an in-process
backend masks, at each step until the head is complete, every token that would leave no way to match;
the model still picks the scores, from its own distribution over the tokens that fit. Matching uses
the `regex` package's partial matches (a transformers dependency), so any regex works as a head.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import regex

# Tokens looked at first, by descending logit: the head's tokens are almost always among them, and a
# full-vocabulary scan (tens of thousands of regex checks) is the fallback only.
TOP_CANDIDATES = 512


@lru_cache(maxsize=64)
def compile_guide(pattern: str) -> regex.Pattern:
    return regex.compile(pattern, regex.DOTALL)


def head_complete(pattern: str, text: str) -> bool:
    """Whether `text` starts with a complete head: decoding is free from here on."""
    return compile_guide(pattern).match(text) is not None


def fits(pattern: str, text: str) -> bool:
    """Whether `text` can still become, or already starts with, a complete head."""
    compiled = compile_guide(pattern)
    return compiled.fullmatch(text, partial=True) is not None or compiled.match(text) is not None


class TokenGuide:
    """The tokens allowed next, given a tokenizer's pieces (the text of each token id on its own)."""

    def __init__(self, pieces: Sequence[str], stop_ids: Sequence[int]) -> None:
        self.pieces = pieces
        self.stop_ids = set(stop_ids)

    def allowed(self, pattern: str, text: str, ranked_ids: Sequence[int]) -> list[int]:
        """Ids from `ranked_ids` (best first) that keep `text` on a path to a head; else from the whole vocabulary."""
        allowed = [i for i in ranked_ids if i not in self.stop_ids and self.pieces[i] and fits(pattern, text + self.pieces[i])]
        if allowed:
            return allowed
        return [i for i, piece in enumerate(self.pieces) if i not in self.stop_ids and piece and fits(pattern, text + piece)]


def token_pieces(tokenizer: Any) -> list[str]:
    """The text of every token id on its own (transformers tokenizer)."""
    return tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
