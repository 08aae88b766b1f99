"""Duplicate search: exact (normalised text), MinHash LSH (word shingles) and embedding cosine.

All three stream: a row is compared with the rows kept before it, so the first occurrence wins and
memory grows with the kept set (a hash, a MinHash signature, a 384-float embedding per row), never
with the square of the row count.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens after NFKC folding; punctuation and spacing do not count."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def normalised_key(text: str) -> str:
    """The exact-duplicate key: a digest of the normalised words."""
    return hashlib.sha1(" ".join(words(text)).encode("utf-8")).hexdigest()


class ExactDeduper:
    def __init__(self) -> None:
        self._first: dict[str, str] = {}  # normalised key -> id of the row that kept it

    def check(self, row_id: str, instruction: str, input_text: str = "") -> dict[str, Any] | None:
        """Evidence if the prompt duplicates a kept row's, else None (and the row is now kept)."""
        key = normalised_key(instruction) + normalised_key(input_text)
        if key in self._first:
            return {"duplicate_of": self._first[key]}
        self._first[key] = row_id
        return None


def shingles(tokens: Sequence[str], size: int) -> set[bytes]:
    """Word n-grams; a text shorter than `size` words is one shingle, so short prompts still compare."""
    if len(tokens) <= size:
        return {" ".join(tokens).encode("utf-8")} if tokens else set()
    return {" ".join(tokens[i : i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


class MinHashDeduper:
    """Near-duplicates by estimated Jaccard similarity of word shingles (datasketch MinHash LSH).

    Instruction and input are compared separately and both must reach the threshold: Alpaca has many
    different tasks on one shared passage ("Summarize ...", "Find the nouns in ...") and one task on
    many passages, and none of those are duplicates. LSH over the instruction gives candidates; each
    is confirmed with the stored signatures, and the closest confirmed one is the evidence.
    """

    def __init__(self, threshold: float = 0.7, shingle_size: int = 2, num_perm: int = 128) -> None:
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError as exc:  # optional extra
            raise ImportError("MinHash dedup needs the 'quality' extra: pip install 'evolinstruct[quality]'") from exc
        self.threshold = threshold
        self.shingle_size = shingle_size
        self._template = MinHash(num_perm=num_perm)
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def _signature(self, text: str) -> np.ndarray | None:
        grams = shingles(words(text), self.shingle_size)
        if not grams:
            return None
        minhash = self._template.copy()
        minhash.update_batch(grams)
        return minhash.hashvalues

    @staticmethod
    def _jaccard(a: np.ndarray | None, b: np.ndarray | None) -> float:
        if a is None or b is None:
            return 1.0 if a is b else 0.0  # two empty inputs are the same input
        return float(np.mean(a == b))

    def check(self, row_id: str, instruction: str, input_text: str = "") -> dict[str, Any] | None:
        from datasketch import MinHash

        signature = self._signature(instruction)
        if signature is None:
            return None
        input_signature = self._signature(input_text)
        minhash = MinHash(hashvalues=signature, permutations=self._template.permutations, scheme=self._template.scheme)
        best: tuple[float, str, float] | None = None
        for other in self._lsh.query(minhash):
            other_sig, other_input = self._signatures[other]
            jaccard = self._jaccard(signature, other_sig)
            input_jaccard = self._jaccard(input_signature, other_input)
            if min(jaccard, input_jaccard) >= self.threshold and (best is None or jaccard > best[0]):
                best = (jaccard, other, input_jaccard)
        if best is not None:
            evidence: dict[str, Any] = {"duplicate_of": best[1], "jaccard": round(best[0], 3)}
            if input_signature is not None:
                evidence["input_jaccard"] = round(best[2], 3)
            return evidence
        self._lsh.insert(row_id, minhash)
        self._signatures[row_id] = (signature, input_signature)
        return None


@dataclass(slots=True)
class Rejection:
    position: int  # index of the rejected item within the offered block
    nearest: int  # index (in acceptance order) of the accepted item it is too close to
    cosine: float


class DiverseSet:
    """Greedy set of unit vectors no two of which are closer than `threshold` in cosine.

    Items are offered in blocks (in the order that decides who wins: file order for dedup, rank
    order for selection). A block is compared with the accepted set in slices of `slice_rows`, so
    memory stays at block x slice floats however large the set grows.
    """

    def __init__(self, dim: int, capacity: int, threshold: float, slice_rows: int = 8192) -> None:
        self.threshold = threshold
        self.vectors = np.empty((capacity, dim), dtype=np.float32)
        self.size = 0
        self.slice_rows = slice_rows

    @property
    def full(self) -> bool:
        return self.size >= len(self.vectors)

    def offer(self, block: np.ndarray) -> tuple[list[int], list[Rejection], list[int]]:
        """Accept what is diverse enough; returns (accepted, rejected, not offered: the set was full)."""
        n = len(block)
        best = np.full(n, -np.inf, dtype=np.float32)
        nearest = np.full(n, -1, dtype=np.int64)
        for start in range(0, self.size, self.slice_rows):
            sims = block @ self.vectors[start : min(start + self.slice_rows, self.size)].T
            arg = sims.argmax(axis=1)
            top = sims[np.arange(n), arg]
            better = top > best
            best[better], nearest[better] = top[better], arg[better] + start
        within = block @ block.T
        accepted: list[int] = []
        rejected: list[Rejection] = []
        for i in range(n):
            if self.full:
                return accepted, rejected, list(range(i, n))
            cos, near = float(best[i]), int(nearest[i])
            if accepted:  # rows accepted earlier in this same block
                sims = within[i, accepted]
                k = int(sims.argmax())
                if sims[k] > cos:
                    cos, near = float(sims[k]), self.size - len(accepted) + k
            if near >= 0 and cos > self.threshold:
                rejected.append(Rejection(i, near, cos))
                continue
            self.vectors[self.size] = block[i]
            self.size += 1
            accepted.append(i)
        return accepted, rejected, []


def greedy_diverse(
    ids: Sequence[str],
    vectors_for: Callable[[int, int], np.ndarray],
    threshold: float,
    limit: int | None = None,
    block_rows: int = 1024,
) -> tuple[list[int], dict[int, dict[str, Any]], list[int], np.ndarray]:
    """Walk items 0..len(ids)-1 in order, keeping each one within `threshold` cosine of none kept.

    `vectors_for(start, end)` gives the unit embeddings of items start..end-1 (embedded on demand, a
    block at a time). Returns (kept indices, {rejected index: evidence}, indices never reached because
    `limit` was hit, embeddings of the kept items in kept order).
    """
    total = len(ids)
    capacity = total if limit is None else min(limit, total)
    chosen: DiverseSet | None = None
    kept: list[int] = []
    rejected: dict[int, dict[str, Any]] = {}
    for start in range(0, total, block_rows):
        if chosen is not None and chosen.full:
            return kept, rejected, list(range(start, total)), chosen.vectors[: chosen.size]
        block = vectors_for(start, min(start + block_rows, total))
        if chosen is None:
            chosen = DiverseSet(dim=block.shape[1], capacity=capacity, threshold=threshold)
        accepted, rejections, unreached = chosen.offer(block)
        kept.extend(start + i for i in accepted)
        for r in rejections:
            rejected[start + r.position] = {"similar_to": ids[kept[r.nearest]], "cosine": round(r.cosine, 4)}
        if unreached:
            rest = [start + i for i in unreached] + list(range(start + len(block), total))
            return kept, rejected, rest, chosen.vectors[: chosen.size]
    vectors = chosen.vectors[: chosen.size] if chosen is not None else np.zeros((0, 384), dtype=np.float32)
    return kept, rejected, [], vectors
