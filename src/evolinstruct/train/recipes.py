"""Training recipes: named presets of hyperparameters that any flag can override.

- `wizardlm-7b`: the paper's WizardLM-7B run (3 epochs, lr 2e-5, cosine, 2 warmup steps, max length
  2048, global batch 64, the paper's prompt format, gradient checkpointing).
- `small` (the default): something that finishes on a laptop CPU with a ~100M model: 1 epoch,
  lr 1e-4 (2e-4 with LoRA, whose adapters start at zero and need a larger step), cosine, 2 warmup
  steps, max length 512, batch 4, chat format, no gradient checkpointing (it costs compute, and
  a small model has memory to spare).

The global batch is kept when the device count changes: grad accumulation = batch / (per-device x devices).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    epochs: float
    learning_rate: float
    lora_learning_rate: float
    scheduler: str
    warmup_steps: int
    max_length: int
    batch_size: int  # global, across devices and accumulation
    per_device_batch_size: int
    prompt_format: str
    gradient_checkpointing: bool
    weight_decay: float = 0.0

    def grad_accum(self, world_size: int = 1) -> int:
        return max(1, self.batch_size // (self.per_device_batch_size * max(1, world_size)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "small": Recipe(
        name="small", epochs=1, learning_rate=1e-4, lora_learning_rate=2e-4, scheduler="cosine", warmup_steps=2,
        max_length=512, batch_size=4, per_device_batch_size=4, prompt_format="chat", gradient_checkpointing=False,
    ),
    "wizardlm-7b": Recipe(
        name="wizardlm-7b", epochs=3, learning_rate=2e-5, lora_learning_rate=2e-5, scheduler="cosine", warmup_steps=2,
        max_length=2048, batch_size=64, per_device_batch_size=4, prompt_format="paper", gradient_checkpointing=True,
    ),
}
DEFAULT_RECIPE = "small"


def resolve_recipe(name: str | None, **overrides: Any) -> Recipe:
    """The named recipe with every non-None override applied; unknown names are a one-line error."""
    key = name or DEFAULT_RECIPE
    if key not in RECIPES:
        raise ValueError(f"unknown recipe '{key}' (choose {', '.join(RECIPES)})")
    known = {f.name for f in fields(Recipe)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"not recipe fields: {', '.join(sorted(unknown))}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "learning_rate" in changes:  # an explicit --lr is the lr, with or without LoRA
        changes["lora_learning_rate"] = changes["learning_rate"]
    recipe = replace(RECIPES[key], **changes)
    if recipe.per_device_batch_size > recipe.batch_size:
        recipe = replace(recipe, per_device_batch_size=recipe.batch_size)
    return recipe
