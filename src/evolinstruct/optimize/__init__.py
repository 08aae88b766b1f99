"""`evolinstruct optimize`: Auto Evol-Instruct (arXiv 2406.00770) learns the evolving method from your seeds.

- prompts.py: the method's prompts (byte for byte) and the method as a template set for `evolve --templates`;
- failure.py: the paper's failure detector, our rules, or both;
- dev.py: a method's dev metrics (success by each detector, score);
- loop.py: the optimizer loop on the run store (resumable, budgets), history.jsonl, method.json;
- holdout.py: the held-out seeds evolved with the initial and the final method;
- run.py: `run_optimize`, all of it, resumable.
"""

from .failure import FAILURE_MODES, paper_failure
from .loop import HISTORY_FILE, METHOD_FILE, OptimizeConfig, OptimizeError, choose, split_seeds
from .prompts import METHOD_OP, extract_method, load_prompts, method_template_set
from .run import run_optimize

__all__ = [
    "FAILURE_MODES", "HISTORY_FILE", "METHOD_FILE", "METHOD_OP", "OptimizeConfig", "OptimizeError", "choose",
    "extract_method", "load_prompts", "method_template_set", "paper_failure", "run_optimize", "split_seeds",
]
