"""`evolinstruct score`: the paper's difficulty, DEITA's rankings and cheap heuristics, stored per record."""

from .run import LLM_SCORERS, ScoreOptions, ScoreProgress, run_score

__all__ = ["LLM_SCORERS", "ScoreOptions", "ScoreProgress", "run_score"]
