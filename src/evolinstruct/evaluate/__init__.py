"""`evolinstruct eval`: the paper's LLM-judged evaluation (pairwise, per skill), MT-Bench grading and blind human ranking."""

from .runner import EvalConfig, run_eval

__all__ = ["EvalConfig", "run_eval"]
