"""Evol-Instruct itself: the config, the prompts and operations, the elimination rules, one chain per
seed lineage, the executor that runs many chains at once, and the run that wires them to a store."""

from .config import (
    SEPARATORS,
    Algorithm,
    BatchConfig,
    BudgetConfig,
    EvolveConfig,
    ExecutorConfig,
    Roles,
    SamplingConfig,
    Source,
)
from .run import run_evolve

__all__ = [
    "SEPARATORS", "Algorithm", "BudgetConfig", "EvolveConfig", "ExecutorConfig", "Roles", "SamplingConfig", "Source",
    "run_evolve",
]
__all__ += ["BatchConfig"]
