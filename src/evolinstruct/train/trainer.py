"""`evolinstruct train`: the data mix into TRL's SFTTrainer, with PEFT LoRA/QLoRA, then merge and a model card.

No training loop here: TRL tokenizes prompt-completion rows and masks the prompt (completion-only loss),
transformers' Trainer runs, checkpoints and resumes, accelerate spreads it over devices (DeepSpeed ZeRO-3
or FSDP via configs/accelerate/). What this module adds is the wiring and the layout of OUT_DIR:

    OUT_DIR/                 the model to use: merged LoRA or full fine-tune (safetensors), tokenizer
    OUT_DIR/adapter/         the LoRA adapter alone (with --lora)
    OUT_DIR/checkpoints/     Trainer checkpoints (--resume picks the latest)
    OUT_DIR/mix.jsonl, mix_stats.json, train_log.json, loss.svg, README.md (the model card)
    OUT_DIR/train_config.json  what binds the output (data, base, recipe, mix, LoRA, seed), written first

A non-empty OUT_DIR is refused unless it is an earlier output of the same config (a resume, or a rerun),
or `--overwrite` is given: training never writes over someone's README.md or config.json unasked.

With `--lora --no-merge` the adapter itself sits in OUT_DIR: transformers loads base + adapter from there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rundir import write_json
from .card import loss_by_epoch, write_card
from .data import read_examples, resolve_data_file
from .formats import PAPER_CHAT_TEMPLATE, PROMPT_FORMATS, to_dataset
from .mix import MIX_FILE, Mix, MixSpec, build_mix, load_mix, save_mix
from .recipes import Recipe

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
TRAIN_LOG = "train_log.json"
TRAIN_CONFIG = "train_config.json"


class TrainError(RuntimeError):
    """A training setup that cannot run; the message is one line that says what to do."""


@dataclass
class LoraOptions:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = "all-linear"  # or a comma list, e.g. q_proj,v_proj
    quantize_4bit: bool = False  # QLoRA
    merge: bool = True


@dataclass
class TrainOptions:
    data: Path
    out_dir: Path
    base: str = "embedded"
    recipe: Recipe | None = None
    subset: str | None = None
    mix: MixSpec = field(default_factory=MixSpec)
    lora: LoraOptions | None = None
    max_steps: int | None = None
    save_steps: int | None = None
    save_total_limit: int = 2
    logging_steps: int | None = None
    resume: bool = False
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    overwrite: bool = False  # write into a non-empty OUT_DIR that is not an output of this config


@dataclass
class TrainResult:
    out_dir: Path
    global_step: int
    start_step: int  # > 0 when resumed from a checkpoint
    resumed_from: str | None
    train_loss: list[tuple[int, float]]
    loss_by_epoch: list[tuple[int, float]]
    eval_loss: list[tuple[int, float]]
    seconds: float
    files: list[str]


def _require_train_extras() -> None:
    missing = [m for m in ("trl", "peft", "datasets", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise TrainError(f"training needs {', '.join(missing)}: pip install 'evolinstruct[train]'")
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and importlib.util.find_spec("deepspeed") is None:
        raise TrainError("this accelerate config uses DeepSpeed, which is not installed: pip install deepspeed")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def precision() -> dict[str, bool]:
    """bf16 where the hardware has it (recent CUDA GPUs), else fp32: CPUs train in fp32 here."""
    import torch

    bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return {"bf16": bf16, "fp16": False}


def prepare_mix(opts: TrainOptions, last_checkpoint: str | None) -> Mix:
    """The saved mix when resuming (the exact same examples), else a fresh one saved next to the model."""
    if last_checkpoint is not None and (opts.out_dir / MIX_FILE).exists():
        return load_mix(opts.out_dir)
    source = resolve_data_file(opts.data, opts.subset)
    mix = build_mix(read_examples(source), opts.mix)
    mix.stats["source"] = str(source)
    if _is_main_process():
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        save_mix(mix, opts.out_dir)
    return mix


def bound_config(opts: TrainOptions) -> dict[str, Any]:
    """What makes an OUT_DIR the output of one training: the data, base, recipe, mix, LoRA and seed. Not bound:
    --max-steps (a resume may train longer), checkpoint and logging intervals, threads."""
    recipe = opts.recipe.to_dict() if opts.recipe is not None else None
    mix = dataclasses.asdict(opts.mix)
    mix["epoch_weights"] = {str(k): v for k, v in mix["epoch_weights"].items()}
    config = {
        "data": str(Path(opts.data).resolve()), "subset": opts.subset, "base": opts.base, "recipe": recipe,
        "mix": mix, "lora": dataclasses.asdict(opts.lora) if opts.lora else None, "seed": opts.seed,
    }
    return json.loads(json.dumps(config))  # as it reads back from train_config.json, to compare with it


def check_out_dir(opts: TrainOptions) -> dict[str, Any]:
    """Refuse an OUT_DIR that holds something else: a file, or a non-empty directory that is not an earlier
    output of the same config, unless --overwrite. Returns the config to record there."""
    out, config = opts.out_dir, bound_config(opts)
    if out.exists() and not out.is_dir():
        raise TrainError(f"{out}: exists and is not a directory; give -o a directory for the model")
    if not out.is_dir() or not any(out.iterdir()) or opts.overwrite:
        return config
    marker = out / TRAIN_CONFIG
    try:
        stored = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
    except (OSError, ValueError):
        stored = None
    if stored == config:
        return config  # the same training: a resume (or a rerun, which the checkpoint check handles)
    if stored is None:
        raise TrainError(f"{out} is not empty and holds no `evolinstruct train` output ({TRAIN_CONFIG}): "
                         "choose a new or empty "
                         "directory, or pass --overwrite to write the model there (README.md, config.json, "
                         "model and tokenizer files are replaced)")
    diffs = [k for k in sorted(set(stored) | set(config)) if stored.get(k) != config.get(k)]
    raise TrainError(f"{out} holds a training with another config ({', '.join(diffs)} differ): rerun with "
                     "its options to resume, choose another -o, or pass --overwrite")


def _last_checkpoint(opts: TrainOptions) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = opts.out_dir / CHECKPOINTS
    last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    if opts.resume and last is None:
        raise TrainError(f"{folder}: no checkpoint to resume from; run without --resume to start")
    if not opts.resume and last is not None:
        raise TrainError(f"{opts.out_dir} already holds checkpoints: add --resume to continue, or choose another -o")
    return last


def _peft_config(lora: LoraOptions) -> Any:
    from peft import LoraConfig

    targets: str | list[str] = lora.target_modules
    if targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets, task_type="CAUSAL_LM")


def _quantization_config() -> Any:
    import torch

    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainError("QLoRA (--qlora) needs bitsandbytes and a CUDA GPU: pip install bitsandbytes")
    if not torch.cuda.is_available():
        raise TrainError("QLoRA (--qlora) needs a CUDA GPU; use --lora on this machine")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
    )


def planned_steps(n_train: int, recipe: Recipe, max_steps: int | None) -> int:
    if max_steps:
        return max_steps
    per_epoch = math.ceil(math.ceil(n_train / (recipe.per_device_batch_size * _world_size())) / recipe.grad_accum(_world_size()))
    return max(1, math.ceil(per_epoch * recipe.epochs))


def load_tokenizer(model_path: str, prompt_format: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if prompt_format not in PROMPT_FORMATS:
        raise TrainError(f"--prompt-format must be one of {', '.join(PROMPT_FORMATS)}")
    if prompt_format == "chat" and not tokenizer.chat_template:
        raise TrainError(f"{model_path} has no chat template: use --prompt-format paper")
    if tokenizer.eos_token is None:
        raise TrainError(f"{model_path}: the tokenizer has no EOS token, so the model could never learn to stop")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if prompt_format == "paper":
        # Saved with the model, so chat-template consumers (--backend local) prompt it as it was trained.
        tokenizer.chat_template = PAPER_CHAT_TEMPLATE
    return tokenizer


def _checkpointing_arg(config_cls: Any, enabled: bool) -> dict[str, bool]:
    # transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def build_trainer(opts: TrainOptions, mix: Mix, model_path: str, recipe: Recipe, callbacks: list[Any] | None = None) -> Any:
    """The configured SFTTrainer (the model loaded, the datasets tokenized and masked), not yet trained."""
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(model_path, recipe.prompt_format)
    steps = planned_steps(len(mix.train), recipe, opts.max_steps)
    has_eval = bool(mix.eval)
    prec = precision()
    import torch

    config = SFTConfig(
        output_dir=str(opts.out_dir / CHECKPOINTS),
        num_train_epochs=recipe.epochs,
        max_steps=opts.max_steps or -1,
        learning_rate=recipe.lora_learning_rate if opts.lora else recipe.learning_rate,
        lr_scheduler_type=recipe.scheduler,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        per_device_train_batch_size=recipe.per_device_batch_size,
        per_device_eval_batch_size=recipe.per_device_batch_size,
        gradient_accumulation_steps=recipe.grad_accum(_world_size()),
        max_length=recipe.max_length,
        completion_only_loss=True,  # loss on the response only, in both prompt formats
        logging_steps=opts.logging_steps or max(1, steps // 50),
        save_strategy="steps",
        save_steps=opts.save_steps or max(1, steps // 5),
        save_total_limit=opts.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=max(1, steps // 10) if has_eval else None,
        report_to="none",
        seed=opts.seed,
        disable_tqdm=not opts.progress,
        model_init_kwargs={"dtype": torch.bfloat16 if prec["bf16"] else torch.float32},
        dataloader_pin_memory=torch.cuda.is_available(),
        **_checkpointing_arg(SFTConfig, recipe.gradient_checkpointing),
        **prec,
    )
    peft_config = _peft_config(opts.lora) if opts.lora else None
    quantization = _quantization_config() if opts.lora and opts.lora.quantize_4bit else None
    return SFTTrainer(
        model=model_path,
        args=config,
        train_dataset=to_dataset(mix.train, recipe.prompt_format, tokenizer),
        eval_dataset=to_dataset(mix.eval, recipe.prompt_format, tokenizer) if has_eval else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        quantization_config=quantization,
        callbacks=callbacks,
    )


def merge_adapter(base_path: str, adapter_dir: Path, out_dir: Path, tokenizer: Any) -> None:
    """Reload the unquantized base (bf16 on GPUs, else fp32) on the main process and fold the adapter in:
    works after any distributed setup (the saved adapter is already gathered) and after QLoRA."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if precision()["bf16"] else torch.float32
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)  # safetensors
    tokenizer.save_pretrained(out_dir)


def train(opts: TrainOptions) -> TrainResult:
    if opts.recipe is None:
        from .recipes import resolve_recipe

        opts.recipe = resolve_recipe(None)
    # Before anything heavy is imported or written; one process decides (the others start with it).
    bound = check_out_dir(opts) if _is_main_process() else bound_config(opts)
    _require_train_extras()
    # Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning threads slow training 3-10x.
    # Only effective before torch starts its thread pool (the CLI imports torch here first).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import datasets
    from transformers import TrainerCallback

    from ..models.embedded import resolve_model_path

    datasets.disable_progress_bars()  # tokenizing a few thousand rows needs no five progress bars

    recipe = opts.recipe
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    if opts.lora and opts.lora.quantize_4bit:
        _quantization_config()  # fail before anything is written when QLoRA cannot run here
    last = _last_checkpoint(opts)
    if _is_main_process():
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        write_json(opts.out_dir / TRAIN_CONFIG, bound)
    mix = prepare_mix(opts, last)
    model_path, base_name = resolve_model_path(opts.base)

    class StartStep(TrainerCallback):
        """Records the step training starts at: the checkpoint's step when resumed, else 0."""

        start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = state.global_step

    start_step = StartStep()
    started = time.perf_counter()
    trainer = build_trainer(opts, mix, model_path, recipe, callbacks=[start_step])
    trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - started

    tokenizer = trainer.processing_class
    saved = opts.out_dir / ADAPTER if opts.lora and opts.lora.merge else opts.out_dir
    trainer.save_model(str(saved))  # the adapter, the full model, or with --no-merge the adapter in OUT_DIR
    if trainer.is_world_process_zero():
        (saved / "training_args.bin").unlink(missing_ok=True)  # a pickle; train_log.json has the arguments
        if saved != opts.out_dir:
            merge_adapter(model_path, saved, opts.out_dir, tokenizer)
    result = TrainResult(
        out_dir=opts.out_dir,
        global_step=trainer.state.global_step,
        start_step=start_step.start,
        resumed_from=last,
        train_loss=[(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h],
        loss_by_epoch=loss_by_epoch(trainer.state.log_history),
        eval_loss=[(h["step"], h["eval_loss"]) for h in trainer.state.log_history if "eval_loss" in h],
        seconds=seconds,
        files=[],
    )
    if trainer.is_world_process_zero():
        write_json(opts.out_dir / TRAIN_LOG, {
            "base": base_name, "base_path": model_path, "recipe": recipe.to_dict(),
            "lora": opts.lora.__dict__ if opts.lora else None, "max_steps": opts.max_steps,
            "global_step": result.global_step, "start_step": result.start_step, "resumed_from": last,
            "seconds": round(seconds, 1), "precision": precision(), "world_size": _world_size(),
            "log_history": trainer.state.log_history,
        })
        write_card(opts.out_dir, base_name=base_name, recipe=recipe, lora=opts.lora, mix_stats=mix.stats,
                   log_history=trainer.state.log_history, global_step=result.global_step, seconds=seconds)
        result.files = sorted(p.name for p in opts.out_dir.iterdir())
    return result
