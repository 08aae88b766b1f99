"""`evolinstruct train`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..kv import parse_pairs
from ..models import BackendError
from .console import console, fail, interrupted_exit, sigterm_as_ctrl_c


def train_cmd(
    data: Annotated[Path, typer.Argument(help="A RUN_DIR (its dataset.jsonl) or any file `evolinstruct export` writes.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="OUT_DIR: the model, adapter, checkpoints, mix and model card.")],
    base: Annotated[str, typer.Option(help="Base causal LM: 'embedded' (SmolLM2-135M-Instruct), a local path or a hub id.")] = "embedded",
    recipe: Annotated[str | None, typer.Option(help="Preset: small (default; CPU-sized) or wizardlm-7b (the paper's). Flags below override it.")] = None,
    subset: Annotated[str | None, typer.Option(help="Train on RUN_DIR/filtered/NAME (written by `evolinstruct filter`).")] = None,
    prompt_format: Annotated[str | None, typer.Option(help="paper ('{instruction}\\n\\n### Response:') or chat (the model's chat template).")] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0, help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="LR schedule (transformers name: cosine, linear, constant, ...).")] = None,
    warmup_steps: Annotated[int | None, typer.Option(min=0, help="Warmup steps.")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many optimizer steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Global batch size (per-device x grad-accum x devices).")] = None,
    per_device_batch_size: Annotated[int | None, typer.Option(min=1, help="Examples per device per forward pass.")] = None,
    grad_accum: Annotated[int | None, typer.Option(min=1, help="Gradient accumulation steps (sets --batch-size = per-device x this x devices).")] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="Max tokens per example (longer ones are cut).")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory.")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter instead of all weights.")] = False,
    qlora: Annotated[bool, typer.Option("--qlora", help="LoRA on a 4-bit base (needs bitsandbytes and a CUDA GPU).")] = False,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(min=1, help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, typer.Option(min=0.0, max=1.0, help="LoRA dropout.")] = 0.05,
    lora_target_modules: Annotated[str, typer.Option(help="'all-linear' or a comma list, e.g. q_proj,v_proj.")] = "all-linear",
    merge: Annotated[bool, typer.Option("--merge/--no-merge", help="Merge the LoRA adapter into the base in OUT_DIR (the adapter stays in OUT_DIR/adapter).")] = True,
    sample: Annotated[int | None, typer.Option(min=1, help="Sample N examples (weighted, without replacement, seeded).")] = None,
    epoch_weights: Annotated[str | None, typer.Option(help="Sampling weight per evolution epoch, e.g. '0=1,1=2' (0 drops).")] = None,
    op_weights: Annotated[str | None, typer.Option(help="Sampling weight per operation, e.g. 'seed=0.5,mutation=2' (0 drops).")] = None,
    min_score: Annotated[list[str] | None, typer.Option(help="Keep rows whose score NAME >= VALUE, e.g. difficulty=5 (repeatable).")] = None,
    eval_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Hold out this fraction (whole lineages) for eval loss.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling, the split and training.")] = 0,
    save_steps: Annotated[int | None, typer.Option(min=1, help="Checkpoint every N steps (default: 5 per run).")] = None,
    logging_steps: Annotated[int | None, typer.Option(min=1, help="Log the loss every N steps (default: ~50 points per run).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT_DIR, on the saved mix.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into a non-empty OUT_DIR that is not an earlier output of this config (its README.md, config.json, ... are replaced).")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch.")] = None,
) -> None:
    """Fine-tune a causal LM on the evolved data (TRL SFT; full or LoRA), loss on responses only."""
    from ..train import (
        LoraOptions,
        MixSpec,
        TrainDataError,
        TrainError,
        TrainOptions,
        parse_weights,
        resolve_recipe,
        train,
    )

    try:
        if grad_accum is not None:
            from ..train.recipes import RECIPES

            per_device = per_device_batch_size or RECIPES.get(recipe or "small", RECIPES["small"]).per_device_batch_size
            batch_size = per_device * grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
        chosen = resolve_recipe(
            recipe, prompt_format=prompt_format, epochs=epochs, learning_rate=lr, scheduler=scheduler,
            warmup_steps=warmup_steps, batch_size=batch_size, per_device_batch_size=per_device_batch_size,
            max_length=max_length, gradient_checkpointing=gradient_checkpointing,
        )
        spec = MixSpec(
            sample=sample, seed=seed, eval_fraction=eval_fraction,
            epoch_weights=parse_weights(epoch_weights, "--epoch-weights", int),
            op_weights=parse_weights(op_weights, "--op-weights"),
            min_scores=parse_pairs(min_score, "--min-score", allow_negative=True),
        )
        lora_opts = None
        if lora or qlora:
            lora_opts = LoraOptions(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=lora_target_modules,
                                    quantize_4bit=qlora, merge=merge)
        with sigterm_as_ctrl_c() as received:
            try:
                result = train(TrainOptions(
                    data=data, out_dir=out, base=base, recipe=chosen, subset=subset, mix=spec, lora=lora_opts,
                    max_steps=max_steps, save_steps=save_steps, logging_steps=logging_steps, resume=resume, seed=seed,
                    threads=threads, overwrite=overwrite,
                ))
            except KeyboardInterrupt:
                console.print(f"[yellow]interrupted[/]: checkpoints written so far are in {out / 'checkpoints'}; "
                              "rerun the same command with --resume to continue from the latest one.",
                              highlight=False, soft_wrap=True)
                raise typer.Exit(interrupted_exit(received)) from None
    except (TrainDataError, TrainError, BackendError, ValueError, OSError) as exc:
        fail(str(exc))
    losses = result.train_loss
    if losses:
        console.print(f"loss {losses[0][1]:.4f} (step {losses[0][0]}) -> {losses[-1][1]:.4f} (step {losses[-1][0]})")
    if len(result.loss_by_epoch) > 1:
        console.print("mean loss per pass over the data: " + ", ".join(f"{loss:.3f}" for _, loss in result.loss_by_epoch))
    if result.eval_loss:
        console.print(f"eval loss {result.eval_loss[0][1]:.4f} -> {result.eval_loss[-1][1]:.4f}")
    resumed = f", resumed from step {result.start_step}" if result.resumed_from else ""
    console.print(f"trained {result.global_step} steps in {result.seconds:.0f}s{resumed} -> {out} (model card: {out / 'README.md'})")
