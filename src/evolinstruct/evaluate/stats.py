"""Scores into results: capacity per skill, difficulty bins, win/tie/loss and bootstrap intervals.

Capacity is the paper's relative score: the model's total score over the reference's total score on the
same questions, in percent ("WizardLM achieves 78% of ChatGPT's score; more than 90% on 17 of 29
skills"). Only questions with both scores (a parsed verdict) count. Confidence intervals resample the
questions (within a skill for a skill's interval) with a seeded numpy generator: percentile bootstrap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Difficulty bins of the Evol-Instruct test set (1-10). The top bin is the paper's "high difficulty"
# part (difficulty >= 8), which its human evaluation singles out.
DIFFICULTY_BINS: list[tuple[str, int, int]] = [("1-3", 1, 3), ("4-5", 4, 5), ("6-7", 6, 7), ("8-10", 8, 10)]
CAPACITY_THRESHOLD = 90.0


@dataclass(slots=True)
class Scored:
    """One question's outcome: each side's score (None when no verdict parsed)."""

    id: str
    skill: str
    difficulty: int | None
    model_score: float | None
    reference_score: float | None

    @property
    def judged(self) -> bool:
        return self.model_score is not None and self.reference_score is not None


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy comes with the local backend's torch
        raise RuntimeError("eval statistics need numpy: pip install 'evolinstruct[quality]' (or numpy)") from exc
    return numpy


def capacity(model_scores: Sequence[float], reference_scores: Sequence[float]) -> float | None:
    """100 x sum(model) / sum(reference); None when the reference's total is 0 (nothing to compare to)."""
    total = float(sum(reference_scores))
    if total <= 0:
        return None
    return 100.0 * float(sum(model_scores)) / total


def bootstrap_capacity(
    model_scores: Sequence[float], reference_scores: Sequence[float], resamples: int, seed: int, confidence: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile interval of the capacity over `resamples` resamplings of the questions."""
    np = _numpy()
    m = np.asarray(model_scores, dtype=float)
    r = np.asarray(reference_scores, dtype=float)
    if len(m) == 0 or resamples <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(m), size=(resamples, len(m)))
    ref_totals = r[picks].sum(axis=1)
    valid = ref_totals > 0
    if not valid.any():
        return None, None
    ratios = 100.0 * m[picks].sum(axis=1)[valid] / ref_totals[valid]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_mean(values: Sequence[float], resamples: int, seed: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    np = _numpy()
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or resamples <= 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def difficulty_bin(difficulty: int | None) -> str | None:
    if difficulty is None:
        return None
    for name, low, high in DIFFICULTY_BINS:
        if low <= difficulty <= high:
            return name
    return None


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values)) / len(values) if values else None


def _group(name_key: str, name: str, rows: list[Scored], resamples: int, seed: int) -> dict[str, Any]:
    judged = [s for s in rows if s.judged]
    m = [s.model_score for s in judged]
    r = [s.reference_score for s in judged]
    low, high = bootstrap_capacity(m, r, resamples, seed)
    return {
        name_key: name,
        "n": len(judged),
        "n_items": len(rows),
        "model_score": _mean(m),
        "reference_score": _mean(r),
        "capacity_pct": capacity(m, r),
        "ci_low": low,
        "ci_high": high,
    }


def win_tie_loss(scored: Iterable[Scored]) -> dict[str, int]:
    out = {"win": 0, "tie": 0, "loss": 0}
    for s in scored:
        if not s.judged:
            continue
        if s.model_score > s.reference_score:
            out["win"] += 1
        elif s.model_score < s.reference_score:
            out["loss"] += 1
        else:
            out["tie"] += 1
    return out


def summarize(scored: list[Scored], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The score part of results.json (see docs/EVAL.md for the schema)."""
    by_skill: dict[str, list[Scored]] = defaultdict(list)
    by_bin: dict[str, list[Scored]] = defaultdict(list)
    for s in scored:
        by_skill[s.skill].append(s)
        name = difficulty_bin(s.difficulty)
        if name:
            by_bin[name].append(s)
    # A per-group seed derived from the run seed keeps every interval reproducible and independent.
    skills = [_group("skill", name, rows, resamples, seed + i + 1) for i, (name, rows) in enumerate(sorted(by_skill.items()))]
    bins = [_group("bin", name, by_bin[name], resamples, seed + 1000 + i) for i, (name, _, _) in enumerate(DIFFICULTY_BINS) if by_bin.get(name)]
    overall = _group("all", "all", scored, resamples, seed)
    judged = [s for s in scored if s.judged]
    wtl = win_tie_loss(judged)
    np = _numpy()
    outcomes = [1.0 if s.model_score > s.reference_score else 0.5 if s.model_score == s.reference_score else 0.0 for s in judged]
    win_low, win_high = bootstrap_mean(outcomes, resamples, seed + 2000)
    rated = [g for g in skills if g["capacity_pct"] is not None]
    return {
        "n": len(judged),
        "n_items": len(scored),
        "model_score": overall["model_score"],
        "reference_score": overall["reference_score"],
        "capacity_pct": overall["capacity_pct"],
        "skills": skills,
        "difficulty_bins": bins,
        "win_tie_loss": wtl,
        "win_rate": (wtl["win"] + 0.5 * wtl["tie"]) / len(judged) if judged else None,
        "skills_over_90": sum(1 for g in rated if g["capacity_pct"] > CAPACITY_THRESHOLD),
        "n_skills": len(skills),
        "n_skills_rated": len(rated),
        "bootstrap": {
            "resamples": resamples,
            "seed": seed,
            "confidence": 0.95,
            "method": "percentile; questions resampled with replacement (within a skill for skill intervals)",
            "capacity_ci": [overall["ci_low"], overall["ci_high"]],
            "win_rate_ci": [win_low, win_high],
            "numpy": np.__version__,
        },
    }
