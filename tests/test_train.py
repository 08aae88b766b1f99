"""`evolinstruct train`: data reading, the mix, loss masks, a real LoRA run, resume (embedded model, CPU)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from evolinstruct.evolve.export import convert
from evolinstruct.train import (
    LoraOptions,
    MixSpec,
    TrainDataError,
    TrainError,
    TrainOptions,
    build_mix,
    parse_weights,
    read_examples,
    resolve_data_file,
    resolve_recipe,
    train,
)
from evolinstruct.train.card import loss_svg
from evolinstruct.train.formats import PAPER_CHAT_TEMPLATE, paper_prompt
from evolinstruct.train.mix import load_mix, save_mix

OPS = ["add_constraints", "deepening", "mutation"]


def dataset_rows(n_seeds: int = 4, epochs: int = 2) -> list[dict]:
    """dataset.jsonl rows as `evolve` writes them: seeds plus one kept evolution per epoch, with scores."""
    rows = []
    topics = ["the moon", "tea", "rivers", "bread", "owls", "glass", "snow", "maps"]
    for s in range(n_seeds):
        root = f"s-{s}"
        parent = root
        rows.append({"id": root, "instruction": f"Describe {topics[s % len(topics)]}.", "input": "",
                     "output": f"{topics[s % len(topics)].capitalize()} is a fine subject.", "root_id": root,
                     "parent_id": None, "epoch": 0, "op": "seed", "model": "m", "scores": {"difficulty": 2 + s % 3}})
        for e in range(1, epochs + 1):
            rid = f"e-{s}-{e}"
            rows.append({"id": rid, "instruction": f"Describe {topics[s % len(topics)]} in {e + 1} short sentences.",
                         "input": "", "output": f"Here are {e + 1} sentences about {topics[s % len(topics)]}. They are short.",
                         "root_id": root, "parent_id": parent, "epoch": e, "op": OPS[(s + e) % len(OPS)], "model": "m",
                         "scores": {"difficulty": 4 + e + s % 2}})
            parent = rid
    return rows


def write_run(tmp_path: Path, rows: list[dict]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return run


# ----------------------------------------------------------------------------- data and mix (fast)
@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "openai"])
def test_reads_every_export_format(tmp_path: Path, fmt: str) -> None:
    rows = dataset_rows(2, 1)
    rows[0]["input"] = "some input"
    path = tmp_path / f"x.{fmt}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in convert(rows, fmt)), encoding="utf-8")
    examples = list(read_examples(resolve_data_file(path)))
    assert [e.response for e in examples] == [r["output"] for r in rows]
    assert examples[0].prompt == "Describe the moon.\n\nsome input"
    assert examples[1].prompt == rows[1]["instruction"]


def test_run_dir_carries_lineage_scores_and_subsets(tmp_path: Path) -> None:
    rows = dataset_rows(2, 1)
    run = write_run(tmp_path, rows)
    examples = list(read_examples(resolve_data_file(run)))
    assert [(e.epoch, e.op, e.root_id) for e in examples] == [(r["epoch"], r["op"], r["root_id"]) for r in rows]
    assert examples[1].scores == {"difficulty": 5.0}
    (run / "filtered" / "dedup").mkdir(parents=True)
    (run / "filtered" / "dedup" / "dataset.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")
    assert len(list(read_examples(resolve_data_file(run, "dedup")))) == 1
    with pytest.raises(TrainDataError, match="no filtered subset 'nope' .*found: dedup"):
        resolve_data_file(run, "nope")


def test_bad_input_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"\n', encoding="utf-8")
    with pytest.raises(TrainDataError, match=r"bad.jsonl:2: malformed JSON line"):
        list(read_examples(path))
    path.write_text('{"instruction": "a", "output": "b"}\n{"text": "c"}\n', encoding="utf-8")
    with pytest.raises(TrainDataError, match=r"bad.jsonl:2: unknown row format"):
        list(read_examples(path))


def test_mix_filters_weights_samples_and_splits_by_lineage(tmp_path: Path) -> None:
    examples = list(read_examples(resolve_data_file(write_run(tmp_path, dataset_rows(8, 3)))))
    assert len(examples) == 32
    # weight 0 drops, min-score filters
    mix = build_mix(examples, MixSpec(epoch_weights={0: 0}))
    assert len(mix.train) == 24 and all(e.epoch != 0 for e in mix.train) and mix.stats["dropped"] == {"weight 0": 8}
    mix = build_mix(examples, MixSpec(min_scores={"difficulty": 6}))
    assert mix.train and all(e.scores["difficulty"] >= 6 for e in mix.train)
    assert len(mix.train) + mix.stats["dropped"]["difficulty < 6"] == 32
    # seeded weighted sampling: same seed, same mix; heavy epoch dominates
    spec = MixSpec(sample=10, seed=3, epoch_weights={3: 50})
    a, b = build_mix(examples, spec), build_mix(examples, spec)
    assert [e.id for e in a.train] == [e.id for e in b.train] and len(a.train) == 10
    assert sum(e.epoch == 3 for e in a.train) >= 7
    assert [e.id for e in build_mix(examples, MixSpec(sample=10, seed=4)).train] != [e.id for e in a.train]
    # held out whole lineages
    mix = build_mix(examples, MixSpec(eval_fraction=0.25, seed=1))
    assert len(mix.eval) == 8 and len(mix.train) == 24
    assert not {e.root_id for e in mix.eval} & {e.root_id for e in mix.train}
    assert mix.stats["by_epoch"]["1"] == {"available": 8, "train": 6, "eval": 2}
    assert mix.stats["scores"]["difficulty"]["mean_by_epoch"]["3"] == 7.5
    save_mix(mix, tmp_path)
    again = load_mix(tmp_path)
    assert [e.id for e in again.train] == [e.id for e in mix.train] and [e.id for e in again.eval] == [e.id for e in mix.eval]
    with pytest.raises(ValueError, match="no row carries a score named quality"):
        build_mix(examples, MixSpec(min_scores={"quality": 1}))


def test_options_parse_and_recipes() -> None:
    assert parse_weights("0=1, 1=2.5", "--epoch-weights", int) == {0: 1.0, 1: 2.5}
    with pytest.raises(ValueError, match="--op-weights: 'mutation' is not NAME=NUMBER"):
        parse_weights("mutation", "--op-weights")
    paper = resolve_recipe("wizardlm-7b")
    assert (paper.epochs, paper.learning_rate, paper.scheduler, paper.warmup_steps, paper.max_length, paper.batch_size,
            paper.prompt_format) == (3, 2e-5, "cosine", 2, 2048, 64, "paper")
    assert paper.grad_accum(1) == 16 and paper.grad_accum(8) == 2
    tuned = resolve_recipe("wizardlm-7b", learning_rate=1e-4, max_length=128)
    assert (tuned.learning_rate, tuned.lora_learning_rate, tuned.max_length, tuned.epochs) == (1e-4, 1e-4, 128, 3)
    with pytest.raises(ValueError, match="unknown recipe"):
        resolve_recipe("llama-70b")


def test_paper_chat_template_renders_the_training_prompt() -> None:
    from jinja2 import Template

    rendered = Template(PAPER_CHAT_TEMPLATE).render(
        messages=[{"role": "user", "content": "Add 2 and 3."}], add_generation_prompt=True, eos_token="</s>"
    )
    assert rendered == paper_prompt("Add 2 and 3.") == "Add 2 and 3.\n\n### Response:"


def test_loss_svg_draws_both_curves() -> None:
    svg = loss_svg([(1, 2.0), (2, 1.5), (3, 1.0)], [(2, 1.8), (3, 1.6)])
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "eval loss" in svg


# ----------------------------------------------------------------------------- with the embedded model
@pytest.fixture
def one_thread():
    """Train on one torch thread: on a shared 2-core machine, two spinning threads are several times slower."""
    import torch

    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("prompt_format", ["paper", "chat"])
def test_loss_mask_covers_exactly_the_response(tmp_path: Path, prompt_format: str) -> None:
    from evolinstruct.models.embedded import resolve_model_path
    from evolinstruct.train.trainer import build_trainer

    rows = dataset_rows(3, 1)
    rows[2]["output"] = "Tea:\n\n1. Boil water.\n2. Steep, then pour."
    examples = list(read_examples(resolve_data_file(write_run(tmp_path, rows))))
    mix = build_mix(examples, MixSpec())
    recipe = resolve_recipe(None, prompt_format=prompt_format, max_length=128)
    opts = TrainOptions(data=tmp_path, out_dir=tmp_path / "out", lora=LoraOptions(), max_steps=1, progress=False)
    trainer = build_trainer(opts, mix, resolve_model_path("embedded")[0], recipe)
    tokenizer = trainer.processing_class
    assert len(trainer.train_dataset) == len(examples)
    for example, row in zip(examples, trainer.train_dataset, strict=True):
        ids, labels = row["input_ids"], row["labels"]
        first = next(i for i, label in enumerate(labels) if label != -100)
        assert all(label == -100 for label in labels[:first])  # the prompt is masked...
        assert labels[first:] == ids[first:]  # ...and everything after it trains
        if prompt_format == "paper":
            prompt_text = paper_prompt(example.prompt)
            response_text = example.response + tokenizer.eos_token
        else:
            user = [{"role": "user", "content": example.prompt}]
            prompt_text = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": example.response}], tokenize=False)
            response_text = full[len(prompt_text):]
            assert response_text.startswith(example.response + tokenizer.eos_token)
        assert tokenizer.decode(ids[:first]) == prompt_text
        assert tokenizer.decode(labels[first:]) == response_text


GENERATE_TOKENS = 8


def _generate(model_dir: Path, prompt: str) -> str:
    """A greedy answer of the trained model: a non-empty text of 1..GENERATE_TOKENS new tokens."""
    from evolinstruct.models.base import Request, Sampling
    from evolinstruct.models.local import LocalBackend

    backend = LocalBackend(str(model_dir), threads=1)
    try:
        request = Request([{"role": "user", "content": prompt}], Sampling(temperature=0, max_tokens=GENERATE_TOKENS))
        [result] = asyncio.run(backend.generate([request]))
    finally:
        asyncio.run(backend.aclose())
    assert result.ok, result.error
    assert isinstance(result.text, str) and result.text.strip(), result
    assert 0 < result.completion_tokens <= GENERATE_TOKENS and result.prompt_tokens > 0, result
    assert result.finish_reason in ("stop", "length"), result
    return result.text


@pytest.mark.slow
def test_lora_run_saves_adapter_merged_model_card_and_mix(tmp_path: Path, one_thread: int) -> None:
    run = write_run(tmp_path, dataset_rows(4, 2))
    out = tmp_path / "m"
    recipe = resolve_recipe(None, prompt_format="paper", max_length=128, learning_rate=1e-3)
    result = train(TrainOptions(
        data=run, out_dir=out, recipe=recipe, lora=LoraOptions(r=8, alpha=16), max_steps=8, logging_steps=1,
        mix=MixSpec(eval_fraction=0.25), threads=one_thread, progress=False,
    ))
    assert result.global_step == 8 and len(result.train_loss) == 8
    # tiny data, lr 1e-3: it must fit (compared per pass over the data: single batches are noisy)
    assert result.loss_by_epoch[-1][1] < result.loss_by_epoch[0][1]
    assert result.eval_loss
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "model.safetensors", "config.json",
                 "tokenizer.json", "README.md", "mix.jsonl", "mix_stats.json", "loss.svg", "train_log.json"):
        assert (out / name).exists(), name
    assert not list(out.glob("*.bin"))
    stats = json.loads((out / "mix_stats.json").read_text())
    assert stats["train"] + stats["eval"] == 12 == len((out / "mix.jsonl").read_text().splitlines())
    card = (out / "README.md").read_text()
    assert "base_model: SmolLM2-135M-Instruct" in card and "### Score: difficulty" in card and "add_constraints" in card
    svg = (out / "loss.svg").read_text()
    assert svg.count("<polyline") == 3 and "eval loss" in svg and "mean per epoch" in svg
    # the merged model is a plain checkpoint whose chat template is the paper format it was trained on
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True) == "Hi\n\n### Response:"
    assert _generate(out, "Describe the moon.").strip()


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint(tmp_path: Path, one_thread: int) -> None:
    run = write_run(tmp_path, dataset_rows(3, 1))
    out = tmp_path / "m"
    recipe = resolve_recipe(None, max_length=96, batch_size=2, per_device_batch_size=2)

    def opts(max_steps: int, resume: bool) -> TrainOptions:
        return TrainOptions(data=run, out_dir=out, recipe=recipe, lora=LoraOptions(r=4, alpha=8, merge=False),
                            max_steps=max_steps, save_steps=3, logging_steps=1, resume=resume, threads=one_thread,
                            progress=False)

    first = train(opts(3, False))
    assert first.global_step == 3 and first.start_step == 0 and (out / "checkpoints" / "checkpoint-3").is_dir()
    with pytest.raises(TrainError, match="already holds checkpoints: add --resume"):
        train(opts(5, False))
    second = train(opts(5, True))
    assert second.global_step == 5 and second.start_step == 3
    assert second.resumed_from is not None and second.resumed_from.endswith("checkpoint-3")
    # the log carries the first run's steps (restored state), and only steps 4-5 were trained again
    assert second.train_loss[:3] == first.train_loss
    assert [step for step, _ in second.train_loss] == [1, 2, 3, 4, 5]
    # --no-merge leaves the adapter in OUT_DIR, which transformers loads on top of its base
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    text = _generate(out, "Describe tea.")  # base + adapter: a real answer, within the token limit
    assert text.strip()
