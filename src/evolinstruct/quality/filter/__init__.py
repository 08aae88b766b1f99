"""`evolinstruct filter`: one module per stage (base.py: what they share), run.py runs them in order."""

from .run import FilterConfig, FilterOutcome, filter_dataset, filter_source

__all__ = ["FilterConfig", "FilterOutcome", "filter_dataset", "filter_source"]
