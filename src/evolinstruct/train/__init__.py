"""Fine-tuning on the evolved data: data mix, prompt formats, recipes, TRL/PEFT wiring and the model card.

The heavy imports (torch, transformers, TRL, PEFT) happen only inside `train()`, so `evolinstruct --help`
and the data-mix code stay fast and work without the `[train]` extra.
"""

from .data import Example, TrainDataError, read_examples, resolve_data_file
from .mix import MixSpec, build_mix, parse_weights
from .recipes import RECIPES, Recipe, resolve_recipe
from .trainer import LoraOptions, TrainError, TrainOptions, TrainResult, train

__all__ = [
    "RECIPES", "Example", "LoraOptions", "MixSpec", "Recipe", "TrainDataError", "TrainError", "TrainOptions",
    "TrainResult", "build_mix", "parse_weights", "read_examples", "resolve_data_file", "resolve_recipe", "train",
]
