"""The model card (OUT_DIR/README.md) and its loss curve (OUT_DIR/loss.svg, a plain SVG: no plotting stack)."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from ..rundir import write_text
from .recipes import Recipe

LOSS_SVG = "loss.svg"
CARD = "README.md"


def loss_by_epoch(log_history: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """Mean training loss per pass over the data: single-batch losses are too noisy to compare on small data."""
    groups: dict[int, list[float]] = {}
    for h in log_history:
        if "loss" in h and "epoch" in h:
            groups.setdefault(max(1, math.ceil(h["epoch"] - 1e-9)), []).append(h["loss"])
    return [(epoch, sum(v) / len(v)) for epoch, v in sorted(groups.items())]


def loss_svg(
    train: list[tuple[float, float]],
    evals: list[tuple[float, float]],
    epoch_means: list[tuple[float, float]] | None = None,
    width: int = 640,
    height: int = 320,
) -> str:
    """A line chart against the step: training loss (blue), its mean per pass over the data (green, at the
    pass's last step), eval loss (orange dots and line)."""
    epoch_means = epoch_means or []
    left, right, top, bottom = 56, 16, 28, 40
    points = train + evals
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="60"><text x="10" y="30">no loss logged</text></svg>\n'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    pad = (y1 - y0) * 0.05 or 0.5
    y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for i in range(5):  # y grid and labels
        value = y0 + (y1 - y0) * i / 4
        y = sy(value)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    for i in range(5):  # x labels: steps
        value = x0 + (x1 - x0) * i / 4
        parts.append(f'<text x="{sx(value):.1f}" y="{height - bottom + 16}" text-anchor="middle">{value:.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">step</text>')
    legend = ((train, "#1f77b4", "train loss"), (epoch_means, "#2ca02c", "mean per epoch"), (evals, "#ff7f0e", "eval loss"))
    for n, (series, color, label) in enumerate(legend):
        ly = 14 * n
        if not series:
            continue
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in series)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>')
        if series is not train or len(series) == 1:
            parts.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in series)
        parts.append(f'<rect x="{width - right - 104}" y="{8 + ly}" width="10" height="3" fill="{color}"/>')
        parts.append(f'<text x="{width - right - 90}" y="{13 + ly}">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _counts(groups: dict[str, dict[str, int]], label: str) -> str:
    return _table([label, "available", "train", "eval"], [[k, v["available"], v["train"], v["eval"]] for k, v in groups.items()])


def write_card(
    out_dir: Path,
    *,
    base_name: str,
    recipe: Recipe,
    lora: Any,
    mix_stats: dict[str, Any],
    log_history: list[dict[str, Any]],
    global_step: int,
    seconds: float,
) -> None:
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    data_epochs = round(max((h.get("epoch", 0) for h in log_history), default=0), 2)
    last_step = {max(1, math.ceil(h["epoch"] - 1e-9)): h["step"] for h in log_history if "loss" in h and "epoch" in h}
    means = [(last_step[e], loss) for e, loss in loss_by_epoch(log_history)] if len(last_step) > 1 else []
    write_text(out_dir / LOSS_SVG, loss_svg(train, evals, means))
    method = "full fine-tuning"
    if lora:
        method = f"{'QLoRA (4-bit base)' if lora.quantize_4bit else 'LoRA'} r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, targets {lora.target_modules}"
        method += ", merged into the base" if lora.merge else ", adapter only (not merged)"
    spec = mix_stats.get("spec", {})
    lr = recipe.lora_learning_rate if lora else recipe.learning_rate
    lines = [
        "---",
        f"base_model: {base_name}",
        "library_name: transformers",
        "tags: [evol-instruct, wizardlm, trl, sft" + (", lora" if lora else "") + "]",
        "---",
        "",
        f"# {out_dir.name}: {base_name} fine-tuned on Evol-Instruct data",
        "",
        f"Trained with `evolinstruct train` (TRL SFTTrainer{' + PEFT' if lora else ''}), loss on response tokens only.",
        "",
        "## Training",
        "",
        _table(["setting", "value"], [
            ["base model", base_name],
            ["method", method],
            ["recipe", recipe.name],
            ["prompt format", recipe.prompt_format + (" (`{instruction}\\n\\n### Response:`)" if recipe.prompt_format == "paper" else " (the model's chat template)")],
            ["steps", f"{global_step} optimizer steps, {data_epochs:g} passes over the data"],
            ["learning rate", f"{lr:g}, {recipe.scheduler}, {recipe.warmup_steps} warmup steps"],
            ["batch", f"{recipe.batch_size} ({recipe.per_device_batch_size} per device, accumulation {recipe.grad_accum()})"],
            ["max length", recipe.max_length],
            ["gradient checkpointing", recipe.gradient_checkpointing],
            ["wall time", f"{seconds:.0f}s"],
        ]),
        "",
        "## Training curve",
        "",
        f"![loss]({LOSS_SVG})",
        "",
    ]
    if train:
        lines.append(f"Training loss {train[0][1]:.4f} (step {train[0][0]}) -> {train[-1][1]:.4f} (step {train[-1][0]}).")
        per_epoch = loss_by_epoch(log_history)
        if len(per_epoch) > 1:
            lines.append("Mean training loss per pass over the data: "
                         + ", ".join(f"{loss:.3f}" for _, loss in per_epoch) + ".")
    if evals:
        lines.append(f"Eval loss {evals[0][1]:.4f} (step {evals[0][0]}) -> {evals[-1][1]:.4f} (step {evals[-1][0]}).")
    lines += [
        "",
        "## Data mix",
        "",
        f"Source: `{mix_stats.get('source', '?')}`; {mix_stats['rows_read']} rows read, {mix_stats['train']} train, "
        f"{mix_stats['eval']} held out (whole lineages). The exact mix is in `mix.jsonl`, its statistics in `mix_stats.json`.",
        "",
        f"Sample: {spec.get('sample') or 'all'}, seed {spec.get('seed', 0)}, epoch weights {spec.get('epoch_weights') or 'none'}, "
        f"op weights {spec.get('op_weights') or 'none'}, min scores {spec.get('min_scores') or 'none'}.",
        "",
    ]
    if mix_stats.get("dropped"):
        lines += ["Dropped: " + ", ".join(f"{k} {v}" for k, v in sorted(mix_stats["dropped"].items())) + ".", ""]
    lines += ["### By epoch", "", _counts(mix_stats["by_epoch"], "epoch"), "", "### By operation", "", _counts(mix_stats["by_op"], "op"), ""]
    for name, s in mix_stats.get("scores", {}).items():
        lines += [
            f"### Score: {name}",
            "",
            f"{s['n']} examples scored, mean {s['mean']}, range {s['min']:g} to {s['max']:g}.",
            "",
            _table(["epoch", f"mean {name}"], [[k, v] for k, v in s["mean_by_epoch"].items()]),
            "",
        ]
    lines += [
        "## Use",
        "",
        "```bash",
        f"evolinstruct evolve seeds.jsonl --backend local --model {out_dir} -o runs/next",
        "```",
        "",
    ]
    write_text(out_dir / CARD, "\n".join(lines))
