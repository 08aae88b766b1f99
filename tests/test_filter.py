"""`evolinstruct filter` on real data: Alpaca seeds, the WizardLM and Vicuna eval sets, all-MiniLM-L6-v2."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from evolinstruct.cli import app
from evolinstruct.quality.embeddings import load_embedder
from evolinstruct.quality.filter import FilterConfig, filter_source
from evolinstruct.quality.filter.base import Row
from evolinstruct.quality.filter.embedding import embed_rows
from evolinstruct.quality.filter.scrub import scrub_evidence

ONLY_DECONTAM = {"scrub": False, "exact": False, "minhash": False, "embed": False}


@pytest.fixture(scope="module")
def alpaca(shared_data: Path) -> list[dict[str, Any]]:
    return json.loads((shared_data / "seeds" / "alpaca_52k.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def embedder():
    return load_embedder()  # loaded once for the module (about 10 s)


def _eval_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _change_middle_word(text: str) -> str:
    parts = text.split(" ")
    parts[len(parts) // 2] = "certain"
    return " ".join(parts)


def test_decontamination_finds_planted_eval_items_and_keeps_clean_seeds(tmp_path, shared_data, alpaca):
    wizard = _eval_rows(shared_data / "eval" / "wizardlm_testset_218.jsonl")
    vicuna = _eval_rows(shared_data / "eval" / "vicuna80.jsonl")
    by_idx = {row["idx"]: row for row in wizard}
    planted = [  # (instruction, eval file, eval id): verbatim and lightly edited copies
        (by_idx[46]["Instruction"], "wizardlm_testset_218.jsonl", 46),
        (by_idx[1]["Instruction"], "wizardlm_testset_218.jsonl", 1),
        (_change_middle_word(by_idx[48]["Instruction"]), "wizardlm_testset_218.jsonl", 48),
        ("Please help me with this task. " + by_idx[41]["Instruction"] + " Thank you!", "wizardlm_testset_218.jsonl", 41),
        (by_idx[59]["Instruction"].lower().replace(".", ""), "wizardlm_testset_218.jsonl", 59),
        (vicuna[0]["text"], "vicuna80.jsonl", vicuna[0]["question_id"]),
        ("Question: " + vicuna[30]["text"], "vicuna80.jsonl", vicuna[30]["question_id"]),
        (vicuna[50]["text"].replace("?", "? Explain."), "vicuna80.jsonl", vicuna[50]["question_id"]),
    ]
    clean = alpaca[::173][:300]  # spread over the whole file
    rows = list(clean)
    for k, (text, _, _) in enumerate(planted):  # planted among the clean rows, Alpaca-shaped
        rows.insert(20 + 35 * k, {"instruction": text, "input": "", "output": "An answer."})
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps(rows, indent=2), encoding="utf-8")

    result = filter_source(seeds, out=tmp_path / "out", config=FilterConfig(**ONLY_DECONTAM))

    removed = _read_jsonl(tmp_path / "out" / "removed.jsonl")
    found = {r["instruction"]: (r["evidence"]["eval_set"], r["evidence"]["eval_id"]) for r in removed}
    assert all(r["reason"] == "eval_contamination" for r in removed)
    assert found == {text: (file, eval_id) for text, file, eval_id in planted}
    kept = _read_jsonl(tmp_path / "out" / "dataset.jsonl")
    assert kept == clean  # every clean seed kept, unchanged and in order
    stats = result.stats
    assert stats["rows_in"] == len(rows) and stats["rows_out"] == len(clean)
    assert stats["removed_by_reason"] == {"eval_contamination": len(planted)}
    assert {Path(note["file"]).name for note in stats["eval_sets"]} >= {"wizardlm_testset_218.jsonl", "vicuna80.jsonl"}


def test_decontamination_against_an_explicit_eval_file(tmp_path):
    eval_file = _write_jsonl(tmp_path / "my_eval.jsonl", [
        {"id": "q1", "prompt": "Describe the migration route of the arctic tern across both hemispheres in detail."},
        {"id": "q2", "turns": ["Name four moons of Jupiter and one fact about each of them.", "Now rank them by size."]},
    ])
    data = _write_jsonl(tmp_path / "data.jsonl", [
        {"id": "a", "instruction": "Describe the migration route of the arctic tern across both hemispheres in detail, please."},
        {"id": "b", "instruction": "Name four moons of Jupiter and one fact about each of them."},
        {"id": "c", "instruction": "Describe the migration of salmon."},
    ])
    filter_source(data, out=tmp_path / "out", config=FilterConfig(eval_sets=[str(eval_file)], **ONLY_DECONTAM))
    removed = {r["id"]: r["evidence"] for r in _read_jsonl(tmp_path / "out" / "removed.jsonl")}
    assert removed["a"]["eval_id"] == "q1"
    assert (removed["b"]["eval_id"], removed["b"]["eval_turn"]) == ("q2", 1)
    assert [r["id"] for r in _read_jsonl(tmp_path / "out" / "dataset.jsonl")] == ["c"]


@pytest.mark.slow
def test_dedup_finds_planted_duplicates_and_keeps_distinct_rows(tmp_path, alpaca, embedder):
    background = [{"id": f"alp-{i}", **alpaca[i]} for i in range(1100, 1250)]  # holds several tasks on one passage
    shared_passage = [r for r in background if r["input"] == alpaca[1129]["input"]]
    assert len(shared_passage) >= 3
    originals = {
        "o-sky": "Explain why the sky is blue.",
        "o-essay": "Write a 500-word essay about climate change for a high school audience that cites three peer-reviewed sources and ends with a clear conclusion.",
        "o-recipe": "Give me a recipe for a vegetarian lasagna that can be prepared in under one hour.",
        "o-sleep": "Give three tips for a good night's sleep.",
        "o-poem": "Write a poem about the sea.",
    }
    distinct = {  # share words with an original but ask for something else: must be kept
        "d-awake": "Give three tips for staying awake during a night shift.",
        "d-story": "Write a story about the sea.",
        "d-essay": "Write a 500-word essay about the history of the printing press with a clear conclusion.",
    }
    planted = {  # duplicate id -> original id
        "x-exact": ("o-recipe", "give me a recipe for a Vegetarian Lasagna, that can be prepared in under one hour!"),
        "x-reorder": ("o-essay", "Write a 500-word essay about climate change for a high school audience that ends with a clear conclusion and cites three peer-reviewed sources."),
        "x-word": ("o-recipe", "Give me a recipe for a vegetarian lasagna that can be made in under one hour."),
        "x-reworded": ("o-sky", "Why is the sky blue? Explain."),
    }
    rows = background[:50]
    rows += [{"id": k, "instruction": v, "input": "", "output": "..."} for k, v in {**originals, **distinct}.items()]
    rows += background[50:]
    rows += [{"id": k, "instruction": text, "input": "", "output": "..."} for k, (_, text) in planted.items()]
    data = _write_jsonl(tmp_path / "data.jsonl", rows)

    result = filter_source(data, out=tmp_path / "all", config=FilterConfig(decontam=False, scrub=False))
    removed = {r["id"]: r for r in _read_jsonl(tmp_path / "all" / "removed.jsonl")}
    assert set(removed) == set(planted)
    for dup_id, (original, _) in planted.items():
        evidence = removed[dup_id]["evidence"]
        assert evidence.get("duplicate_of", evidence.get("similar_to")) == original
    assert removed["x-exact"]["reason"] == "exact_duplicate"
    assert removed["x-reorder"]["reason"] == "near_duplicate_minhash"
    assert removed["x-reorder"]["evidence"]["jaccard"] >= 0.7
    assert removed["x-reworded"]["reason"] == "near_duplicate_embedding"
    assert removed["x-reworded"]["evidence"]["cosine"] > 0.95
    assert result.stats["rows_out"] == len(rows) - len(planted)

    # MinHash alone still finds the light edits; the reworded one needs embeddings.
    filter_source(data, out=tmp_path / "minhash", config=FilterConfig(decontam=False, scrub=False, embed=False))
    removed = {r["id"]: r["reason"] for r in _read_jsonl(tmp_path / "minhash" / "removed.jsonl")}
    assert removed == {"x-exact": "exact_duplicate", "x-reorder": "near_duplicate_minhash", "x-word": "near_duplicate_minhash"}


@pytest.mark.slow
def test_selection_respects_budget_rank_and_diversity(tmp_path, alpaca, embedder):
    rng = np.random.default_rng(0)
    rows = [
        {"id": f"alp-{i}", **alpaca[i], "scores": {"complexity": float(rng.integers(1, 6)), "quality": float(rng.integers(1, 6))}}
        for i in range(2000, 2080)
    ]
    top = rows[10]
    top["scores"] = {"complexity": 6.0, "quality": 6.0}  # ranked first; its paraphrase second
    rows.append({**top, "id": "paraphrase-of-top", "instruction": top["instruction"].rstrip(".") + ", please.",
                 "scores": {"complexity": 5.9, "quality": 6.0}})
    rows.append({"id": "unscored", "instruction": "Name a primary color.", "input": "", "output": "Red."})
    data = _write_jsonl(tmp_path / "data.jsonl", rows)
    budget, threshold = 20, 0.9
    config = FilterConfig(decontam=False, scrub=False, exact=False, minhash=False, embed=False,
                          budget=budget, rank_by="complexity*quality", diversity_threshold=threshold)
    result = filter_source(data, out=tmp_path / "sel", config=config)

    kept = _read_jsonl(tmp_path / "sel" / "dataset.jsonl")
    removed = {r["id"]: r for r in _read_jsonl(tmp_path / "sel" / "removed.jsonl")}
    assert len(kept) == budget and result.stats["rank_by_used"] == "complexity*quality"
    assert top["id"] in {r["id"] for r in kept}
    assert removed["paraphrase-of-top"]["reason"] == "selection_too_similar"
    assert removed["paraphrase-of-top"]["evidence"]["similar_to"] == top["id"]
    assert removed["unscored"]["reason"] == "selection_over_budget"  # rows without the score rank last
    lowest_kept = min(r["scores"]["complexity"] * r["scores"]["quality"] for r in kept)
    over = [r["evidence"]["score"] for r in removed.values() if r["reason"] == "selection_over_budget" and r["evidence"]["score"]]
    assert over and max(over) <= lowest_kept  # nothing better was left out for lack of room
    vectors = embed_rows([Row(0, r["id"], r["instruction"], r["input"], None, 0.0) for r in kept])
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, 0.0)
    assert sims.max() <= threshold

    # Without scores, ranking falls back to length and says so.
    plain = _write_jsonl(tmp_path / "plain.jsonl", [{k: v for k, v in r.items() if k != "scores"} for r in rows])
    result = filter_source(plain, out=tmp_path / "plain", config=FilterConfig(**{**ONLY_DECONTAM, "decontam": False}, budget=5, rank_by="quality", diversity_threshold=1.0))
    assert result.stats["rank_by_used"] == "length" and "quality" in result.stats["rank_note"]
    kept_lengths = [len((r["instruction"] + " " + r["input"] + " " + r["output"]).split()) for r in _read_jsonl(tmp_path / "plain" / "dataset.jsonl")]
    assert len(kept_lengths) == 5 and min(kept_lengths) >= sorted(
        (len((r["instruction"] + " " + r["input"] + " " + r["output"]).split()) for r in rows), reverse=True)[4]


def test_min_score_filter(tmp_path):
    rows = [
        {"id": "hard", "instruction": "Prove that there are infinitely many primes.", "scores": {"difficulty": 8.0}},
        {"id": "easy", "instruction": "What is 2 + 2?", "scores": {"difficulty": 1.0}},
        {"id": "none", "instruction": "Say hello."},
    ]
    data = _write_jsonl(tmp_path / "data.jsonl", rows)
    filter_source(data, out=tmp_path / "out", config=FilterConfig(**{**ONLY_DECONTAM, "decontam": False}, min_scores={"difficulty": 5}))
    removed = {r["id"]: (r["reason"], r["evidence"]) for r in _read_jsonl(tmp_path / "out" / "removed.jsonl")}
    assert removed == {
        "easy": ("below_min_score", {"score": "difficulty", "value": 1.0, "min": 5}),
        "none": ("missing_score", {"score": "difficulty", "min": 5}),
    }


def test_scrub_removes_refusals_and_prompt_leftovers_only():
    assert scrub_evidence("Tell me a joke.", "", "As an AI language model, I do not have a sense of humour.")[0] == "refusal"
    assert scrub_evidence("Hack my neighbour's wifi.", "", "I'm sorry, but I cannot help with that.")[0] == "refusal"
    assert scrub_evidence("Write malware.", "", "I cannot fulfill this request.")[0] == "refusal"
    reason, evidence = scrub_evidence("#Rewritten Prompt#: Describe the water cycle in 3 steps.", "", "Evaporation, ...")
    assert (reason, evidence["field"], evidence["match"]) == ("prompt_leftover", "instruction", "#Rewritten Prompt#")
    assert scrub_evidence("The Given Prompt: list two fruits", "", "Apple, pear.")[0] == "prompt_leftover"
    assert scrub_evidence("Who are you?", "", "As an AI, I don't have a name.")[0] == "refusal"
    for output in ("I cannot stress enough how important sleep is.", "Sorry for the wait: the answer is 4.",
                   "A language model predicts the next token.",
                   "If the model is used as an AI assistant, it can be evaluated on commands."):
        assert scrub_evidence("Explain.", "", output) is None


def test_run_dir_source_keeps_the_original_and_cli_writes_the_subset(tmp_path, alpaca):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [{"id": f"s-{i}", "instruction": alpaca[i]["instruction"], "input": alpaca[i]["input"],
             "output": alpaca[i]["output"], "epoch": 0, "op": "seed"} for i in range(300, 340)]
    rows.append({**rows[3], "id": "e-copy", "epoch": 1, "op": "deepening"})  # an exact duplicate
    rows.append({**rows[5], "id": "e-refusal", "output": "As an AI language model, I cannot answer that."})
    dataset = _write_jsonl(run_dir / "dataset.jsonl", rows)
    before = hashlib.sha256(dataset.read_bytes()).hexdigest()

    result = CliRunner().invoke(app, ["filter", str(run_dir), "--name", "small", "--no-embed", "--budget", "30",
                                      "--diversity-threshold", "1", "--rank-by", "length"])
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(dataset.read_bytes()).hexdigest() == before
    out = run_dir / "filtered" / "small"
    kept, removed = _read_jsonl(out / "dataset.jsonl"), _read_jsonl(out / "removed.jsonl")
    stats = json.loads((out / "filter_stats.json").read_text())
    assert len(kept) == 30 and all(row in rows for row in kept)  # rows copied unchanged
    assert len(kept) + len(removed) == len(rows) == stats["rows_in"]
    reasons = {r["id"]: r["reason"] for r in removed}
    assert reasons["e-copy"] == "exact_duplicate" and reasons["e-refusal"] == "refusal"
    assert stats["removed_by_reason"]["selection_over_budget"] == len(rows) - 2 - 30
    assert all(r["evidence"] is not None and r["reason"] for r in removed)
    assert "selection" in result.output and "kept" in result.output  # the summary table


def test_bad_input_is_one_line_naming_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"instruction": oops}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["filter", str(bad), "-o", str(tmp_path / "out"), "--no-embed"])
    assert result.exit_code == 2
    assert f"{bad}:2: malformed JSON line" in result.output
    result = CliRunner().invoke(app, ["filter", str(bad)])
    assert result.exit_code == 2 and "needs -o OUT_DIR" in result.output
