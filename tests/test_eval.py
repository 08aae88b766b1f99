"""`evolinstruct eval`: judge prompts, verdict parsing, position handling, capacity, the human sheet, end to end."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolinstruct.cli import app
from evolinstruct.evaluate.human import CRITERIA, HumanEvalError, import_sheet, write_sheet
from evolinstruct.evaluate.parsing import PAIR_HEAD, parse_pair_scores, parse_rating
from evolinstruct.evaluate.prompts import (
    JUDGE_CATEGORY,
    judge_category,
    load_pair_prompts,
    load_single_prompts,
    mtbench_judge_messages,
)
from evolinstruct.evaluate.runner import combine_pairwise, spread_over_skills
from evolinstruct.evaluate.stats import Scored, capacity, summarize
from evolinstruct.evaluate.testsets import TestsetError, load_testset
from evolinstruct.report.eval_section import eval_page_html, eval_section_html
from runhelpers import replay_into, stored_calls

runner = CliRunner()
TINY = ["--max-tokens", "16", "--judge-max-tokens", "16", "--bootstrap", "200"]


# ---------------------------------------------------------------- prompts by skill / category
def test_every_testset_skill_has_a_judge_prompt(shared_data):
    _, items = load_testset("wizardlm", shared_data)
    skills = {item.skill for item in items}
    assert len(skills) == 29 and len(items) == 218
    assert all(skill.lower() in JUDGE_CATEGORY for skill in skills)  # each of the 29 skills is mapped on purpose
    _, vicuna = load_testset("vicuna", shared_data)
    assert all(item.skill.lower() in JUDGE_CATEGORY for item in vicuna)
    assert [judge_category(s) for s in ("Math", "Reasoning", "Code Debug", "Code Generation", "Complex Format")] == [
        "math", "math", "coding", "coding", "coding"]
    assert [judge_category(s) for s in ("Writting", "Computer Science", "coding", "math", "fermi", "unknown")] == [
        "general", "general", "coding", "math", "general", "general"]


def test_pair_prompts_are_fastchats(shared_data):
    prompts = load_pair_prompts(shared_data)
    math = prompts[judge_category("Math")].messages("Q?", "first answer", "second answer")
    assert "mathematical proficiency" in math[1]["content"] and "Python tuple" in math[1]["content"]
    code = prompts[judge_category("Code Debug")].messages("Q?", "a", "b")
    assert "coding abilities" in code[1]["content"]
    general = prompts["general"].messages("Q?", "first answer", "second answer")
    text = general[1]["content"]
    assert text.index("first answer") < text.index("second answer") and "two values" in text
    assert prompts["general"].temperature == 0.2 and prompts["general"].max_tokens == 1024  # the reviewer file


def test_mtbench_uses_reference_answers_where_fastchat_does(shared_data):
    kind, items = load_testset("mtbench", shared_data)
    assert kind == "mtbench" and all(len(i.turns) == 2 for i in items)
    prompts = load_single_prompts(shared_data)
    by_id = {i.id: i for i in items}
    math = by_id["111"]  # a math question: graded against GPT-4's reference answers
    assert math.skill == "math" and len(math.reference_answers) == 2
    name, messages = mtbench_judge_messages(prompts, math, ["a1", "a2"], 0)
    assert name == "single-math-v1" and math.reference_answers[0] in messages[1]["content"]
    name, messages = mtbench_judge_messages(prompts, math, ["a1", "a2"], 1)
    assert name == "single-math-v1-multi-turn" and "a2" in messages[1]["content"] and math.turns[1] in messages[1]["content"]
    writing = by_id["81"]
    assert mtbench_judge_messages(prompts, writing, ["a1", "a2"], 0)[0] == "single-v1"
    assert mtbench_judge_messages(prompts, writing, ["a1", "a2"], 1)[0] == "single-v1-multi-turn"


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "expected"), [
    ("8 7\nAssistant 1 was more detailed.", (8.0, 7.0)),
    ("8, 7", (8.0, 7.0)),
    ("**9 6.5**\nexplanation", (9.0, 6.5)),
    ("Assistant 1: 8\nAssistant 2: 7\nBoth are fine.", (8.0, 7.0)),
    ("Assistant 1 receives a score of 3, Assistant 2 a score of 9.", (3.0, 9.0)),
    ("8/10 and 7/10", (8.0, 7.0)),
    ("First I solve it: 2 + 2 = 4.\nBoth got it.\n(9, 4)", (9.0, 4.0)),
    ("The car travels 120 miles in 2 hours", None),  # numbers, but not two scores in range
    ("[System]\nWe would like to request your feedback", None),
    ("", None),
    ("11 12", None),
    ("Assistant 1 is better.", None),
])
def test_pair_verdicts_parse_robustly(text, expected):
    assert parse_pair_scores(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Good answer. Rating: [[7]]", 7.0),
    ("[[8.5]]", 8.5),
    ("Rating: [6]", 6.0),
    ("Rating: 4", 4.0),
    ("I rate it highly.", None),
    ("[[42]]", None),
])
def test_single_ratings_parse(text, expected):
    assert parse_rating(text) == expected


# ---------------------------------------------------------------- position handling
def test_both_orders_are_mapped_back_to_the_model_and_combined():
    # Shown first, the model gets 8 against 6; shown second, the judge says "5 9": the model has 9.
    out = combine_pairwise([(True, "8 6"), (False, "5 9")])
    assert out["model_score"] == 8.5 and out["reference_score"] == 5.5
    assert out["position_consistent"] is True and out["unparsed"] == 0
    flipped = combine_pairwise([(True, "8 6"), (False, "9 5")])  # the judge always prefers Assistant 1
    assert flipped["model_score"] == 6.5 and flipped["reference_score"] == 7.5 and flipped["position_consistent"] is False
    half = combine_pairwise([(True, "junk"), (False, "4 7")])  # one order unparsed: the other one counts
    assert (half["model_score"], half["reference_score"], half["unparsed"]) == (7.0, 4.0, 1)
    none = combine_pairwise([(True, "junk"), (False, "more junk")])
    assert none["model_score"] is None and none["unparsed"] == 2


# ---------------------------------------------------------------- capacity arithmetic
def test_capacity_against_a_hand_computed_example():
    scored = [
        Scored("1", "Math", 2, 8.0, 10.0),
        Scored("2", "Math", 9, 6.0, 10.0),
        Scored("3", "Art", 5, 9.0, 8.0),
        Scored("4", "Art", 8, 7.0, 7.0),
        Scored("5", "Law", 1, None, None),  # no parsed verdict: not counted
    ]
    out = summarize(scored, resamples=500, seed=3)
    # Math: (8 + 6) / (10 + 10) = 70%. Art: (9 + 7) / (8 + 7) = 106.67%. All: 30 / 35 = 85.71%.
    skills = {s["skill"]: s for s in out["skills"]}
    assert skills["Math"]["capacity_pct"] == pytest.approx(70.0)
    assert skills["Art"]["capacity_pct"] == pytest.approx(1600 / 15)
    assert skills["Law"]["capacity_pct"] is None and skills["Law"]["n"] == 0 and skills["Law"]["n_items"] == 1
    assert out["capacity_pct"] == pytest.approx(3000 / 35)
    assert out["skills_over_90"] == 1 and out["n_skills"] == 3 and out["n_skills_rated"] == 2
    assert out["win_tie_loss"] == {"win": 1, "tie": 1, "loss": 2} and out["win_rate"] == pytest.approx(1.5 / 4)
    assert skills["Math"]["model_score"] == 7.0 and skills["Math"]["reference_score"] == 10.0
    bins = {b["bin"]: b for b in out["difficulty_bins"]}
    assert set(bins) == {"1-3", "4-5", "8-10"}
    assert bins["8-10"]["capacity_pct"] == pytest.approx(100 * 13 / 17) and bins["8-10"]["n"] == 2
    low, high = out["bootstrap"]["capacity_ci"]
    # A resample's capacity lies between the lowest and highest single-question ratio: 6/10 and 9/8.
    assert low <= out["capacity_pct"] <= high and 60.0 - 1e-9 <= low and high <= 112.5 + 1e-9
    assert summarize(scored, resamples=500, seed=3) == out  # seeded: the same intervals every time
    assert capacity([5], [0]) is None


# ---------------------------------------------------------------- test sets
def test_limit_spreads_over_skills_and_bad_files_fail_in_one_line(shared_data, tmp_path):
    _, items = load_testset("wizardlm", shared_data)
    picked = spread_over_skills(items, 29)
    assert len({i.skill for i in picked}) == 29
    assert [i.position for i in picked] == sorted(i.position for i in picked)
    bad = tmp_path / "mine.jsonl"
    bad.write_text('{"instruction": "a", "skill": "x"}\n{"instruction": \n')
    with pytest.raises(TestsetError, match=r"mine.jsonl:2: malformed JSON line"):
        load_testset(str(bad))
    with pytest.raises(TestsetError, match="not found"):
        load_testset("wizardlm", tmp_path / "nowhere")
    result = runner.invoke(app, ["eval", "--data-dir", str(tmp_path / "nowhere"), "-o", str(tmp_path / "e")])
    assert result.exit_code == 2 and "wizardlm_testset_218.jsonl" in result.output and "--data-dir" in result.output


# ---------------------------------------------------------------- HTML
def test_eval_section_draws_capacity_and_difficulty_bars():
    scored = [Scored("1", "Math", 2, 8.0, 10.0), Scored("2", "Code <Debug>", 9, 6.0, 5.0)]
    results = {"model": "m", "reference": "r", "judge": "j", "testset": "wizardlm", "mode": "pairwise",
               "unparsed": 1, "verdicts": 4, **summarize(scored, resamples=100)}
    html = eval_section_html(results)
    assert html.count("<svg") == 2 and "<script" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")
    assert "Code &lt;Debug&gt;" in html and "80%" in html and "120%" in html  # capacities 80% and 120%
    assert "unparsed verdicts: 1 of 4" in html
    assert eval_page_html(results).startswith("<!DOCTYPE html>")


# ---------------------------------------------------------------- human evaluation
def _fake_eval_dir(path: Path, model: str, reference: str, answers: dict[str, tuple[str, str]]) -> Path:
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"model": model, "reference": reference}))
    with open(path / "answers.jsonl", "w") as f:
        for item_id, (m, r) in answers.items():
            f.write(json.dumps({"id": item_id, "skill": "s", "turns": [f"question {item_id}"],
                                "model_answer": [m], "reference_answer": [r]}) + "\n")
    return path


def test_human_sheet_round_trip(tmp_path):
    ids = [str(i) for i in range(1, 7)]
    first = _fake_eval_dir(tmp_path / "e1", "wizard", "chatgpt", {i: (f"wizard says {i}", f"chatgpt says {i}") for i in ids})
    second = _fake_eval_dir(tmp_path / "e2", "alpaca", "chatgpt", {i: (f"alpaca says {i}", "unused") for i in ids})
    sheet, key_path = tmp_path / "sheet.csv", tmp_path / "key.json"
    result = runner.invoke(app, ["eval", "human-sheet", str(first), str(second), "-o", str(sheet), "--key", str(key_path)])
    assert result.exit_code == 0, result.output
    text = sheet.read_text()
    assert "wizard says 3" in text and "alpaca says 3" in text
    assert "model:" not in text and "[e1]" not in text and "wizard [" not in text  # blind: no system names
    key = json.loads(key_path.read_text())
    assert len(key["systems"]) == 3
    letters_per_item = {item: mapping for item, mapping in key["items"].items()}
    assert len({tuple(m[letter] for letter in "ABC") for m in letters_per_item.values()}) > 1  # shuffled per question

    # Fill it as a rater would: the wizard model first, chatgpt second, alpaca third, except calculation,
    # where alpaca is best; accuracy left blank for the last question.
    rank_of = {"wizard": 1, "chatgpt": 2, "alpaca": 3}
    rows = list(csv.DictReader(open(sheet, newline="")))
    for row in rows:
        system = key["items"][row["item"]][row["letter"]]
        name = next(n for n in rank_of if f": {n} [" in system)
        for criterion in CRITERIA:
            rank = rank_of[name]
            if criterion == "calculation":
                rank = {"alpaca": 1, "wizard": 2, "chatgpt": 3}[name]
            row[f"rank_{criterion}"] = "" if criterion == "accuracy" and row["item"] == "6" else str(rank)
        row["rater"] = "r1"
    with open(sheet, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    stats_path = tmp_path / "stats.json"
    result = runner.invoke(app, ["eval", "human-import", str(sheet), "--key", str(key_path), "-o", str(stats_path)])
    assert result.exit_code == 0, result.output
    stats = json.loads(stats_path.read_text())
    wizard, chatgpt, alpaca = stats["systems"]
    overall = stats["criteria"]["overall"]
    assert overall["mean_rank"] == {wizard: 1.0, chatgpt: 2.0, alpaca: 3.0} and overall["rankings"] == 6
    assert overall["first_place"][wizard] == 6
    assert overall["pairwise"][f"{wizard} vs {chatgpt}"]["win_rate"] == 1.0
    assert stats["criteria"]["calculation"]["mean_rank"][alpaca] == 1.0
    assert stats["criteria"]["calculation"]["pairwise"][f"{wizard} vs {alpaca}"]["loss"] == 6
    assert stats["criteria"]["accuracy"]["rankings"] == 5 and stats["raters"] == 1

    rows[0]["rank_overall"] = "first"
    with open(sheet, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(HumanEvalError, match=r"sheet.csv:2: rank_overall 'first' is not a rank"):
        import_sheet(sheet, key_path)


def test_html_sheet_is_blind_and_keeps_the_key_apart(tmp_path):
    first = _fake_eval_dir(tmp_path / "e1", "wizard", "chatgpt", {"1": ("<b>bold</b> answer", "plain answer")})
    key_path, n, systems = write_sheet([first], tmp_path / "sheet.html", seed=1)
    html = (tmp_path / "sheet.html").read_text()
    assert n == 1 and key_path == tmp_path / "sheet.key.json" and len(systems) == 2
    assert "&lt;b&gt;bold&lt;/b&gt; answer" in html and "wizard" not in html and "chatgpt" not in html
    assert all(f'data-criterion="{c}"' in html for c in CRITERIA)


@pytest.mark.slow
def test_html_sheet_filled_in_chromium_imports(tmp_path):
    from playwright.sync_api import sync_playwright

    first = _fake_eval_dir(tmp_path / "e1", "wizard", "chatgpt",
                           {"1": ('says "hi",\nthen <stops>', "plain"), "2": ("two", "deux")})
    key_path, _, _ = write_sheet([first], tmp_path / "sheet.html", seed=4)
    key = json.loads(key_path.read_text())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((tmp_path / "sheet.html").as_uri())
        page.fill("#rater", "ann")
        for item, mapping in key["items"].items():
            for letter, system in mapping.items():
                rank = "1" if system.startswith("model:") else "2"
                for criterion in CRITERIA:
                    page.fill(f'input[data-item="{item}"][data-letter="{letter}"][data-criterion="{criterion}"]', rank)
        with page.expect_download() as download:
            page.click("#save")
        filled = tmp_path / "filled.csv"
        download.value.save_as(filled)
        browser.close()
    assert not errors
    rows = list(csv.DictReader(open(filled, newline="", encoding="utf-8")))
    assert any(r["answer"] == 'says "hi",\nthen <stops>' for r in rows)  # quoting survives the round trip
    stats = import_sheet(filled, key_path)
    model, reference = stats["systems"]
    assert stats["criteria"]["overall"]["mean_rank"] == {model: 1.0, reference: 2.0} and stats["raters"] == 1


# ---------------------------------------------------------------- end to end, embedded model
@pytest.mark.slow
def test_end_to_end_with_the_embedded_model_resumes_without_calls(tmp_path, shared_data):
    out = tmp_path / "eval"
    args = ["eval", "--testset", "wizardlm", "--limit", "2", "--data-dir", str(shared_data), "-o", str(out), *TINY]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    calls = results["calls"]["by_purpose"]["sent"]
    assert calls == {"eval_answer": 2, "eval_reference": 2, "eval_judge": 4}  # both orders judged
    # The embedded judge is guided (--judge-guide auto): every verdict opens with its two scores.
    assert results["n_items"] == 2 and results["verdicts"] == 4 and results["unparsed"] == 0
    assert results["settings"]["judge_guide"] == "on" and results["capacity_pct"] is not None
    assert results["n"] == sum(s["n"] for s in results["skills"]) and results["n_skills"] == 2
    assert {"model", "reference", "judge", "testset", "capacity_pct", "skills", "difficulty_bins", "win_tie_loss",
            "unparsed", "skills_over_90", "n_skills", "bootstrap"} <= set(results)
    assert "per skill" in result.output and "% of the reference" in result.output or "no judged questions" in result.output
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [(a["id"], a["skill"]) for a in answers] == [("1", "Math"), ("20", "Code Generation")]  # one per skill
    assert any(a["model_answer"] != a["reference_answer"] for a in answers)  # the reference samples differently
    judgments = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert [[v["model_first"] for v in j["verdicts"]] for j in judgments] == [[True, False]] * 2
    assert all(re.match(PAIR_HEAD, v["verdict"]) for j in judgments for v in j["verdicts"])
    assert (out / "report.html").read_text().count("<svg") >= 1
    stored = stored_calls(out)

    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["calls"]["sent"] == 0 and rerun["calls"]["cache_hits"] == 8 and rerun["resumed"] is True
    assert stored_calls(out) == stored
    assert {k: rerun[k] for k in ("capacity_pct", "skills", "unparsed")} == {k: results[k] for k in ("capacity_pct", "skills", "unparsed")}

    # The paper's alternation reuses the same answers and verdicts: the model is Assistant 1 on odd ids
    # only (question 1 odd, question 20 even).
    alternate = tmp_path / "alternate"
    replay_into(out, alternate)
    result = runner.invoke(app, [*args[:-len(TINY) - 2], "-o", str(alternate), "--position", "alternate", *TINY])
    assert result.exit_code == 0, result.output
    alt = json.loads((alternate / "results.json").read_text())
    assert alt["calls"]["sent"] == 0 and alt["verdicts"] == 2
    rows = [json.loads(line) for line in (alternate / "judgments.jsonl").read_text().splitlines()]
    positions = {a["id"]: int(a["id"]) for a in answers}  # the test set's idx is its position
    assert [[v["model_first"] for v in r["verdicts"]] for r in rows] == [[positions[r["id"]] % 2 == 1] for r in rows]
    assert {r["id"]: r["verdicts"][0]["verdict"] for r in rows} == {
        j["id"]: j["verdicts"][0 if positions[j["id"]] % 2 == 1 else 1]["verdict"] for j in judgments}

    # A different setting in the same EVAL_DIR is refused in one line.
    refused = runner.invoke(app, [*args, "--position", "alternate"])
    assert refused.exit_code == 2 and "different config" in refused.output
    unguided = runner.invoke(app, [*args, "--judge-guide", "off"])
    assert unguided.exit_code == 2 and "different config" in unguided.output


def test_guided_verdicts_need_an_in_process_judge(tmp_path):
    result = runner.invoke(app, ["eval", "-o", str(tmp_path / "e"), "--judge-backend", "openai", "--judge", "gpt-4",
                                 "--judge-guide", "on"])
    assert result.exit_code == 2 and "--judge-guide on needs an in-process judge" in result.output
    assert not (tmp_path / "e").exists()


def test_guided_verdicts_are_read_from_their_head_only():
    # The free text after a guided head may hold other numbers, even a labelled pair: only the head counts.
    text = "3 8\nAssistant 1: 9/10, Assistant 2: 2/10 (9, 2)"
    assert combine_pairwise([(True, text)], guided=True)["model_score"] == 3.0
    assert combine_pairwise([(True, text)])["model_score"] == 9.0  # unguided: FastChat's robust reading
    cut = combine_pairwise([(True, "7 1")], guided=True)  # cut off before the head's newline
    assert cut["unparsed"] == 1 and cut["model_score"] is None


# ---------------------------------------------------------------- MT-Bench against a real server
@pytest.mark.slow
def test_mtbench_two_turns_with_a_llama_cpp_judge(tmp_path, shared_data, llama_server):
    out = tmp_path / "mt"
    server = ["--model-base-url", llama_server.base_url, "--model", llama_server.model,
              "--reference-base-url", llama_server.base_url, "--reference", llama_server.model,
              "--judge-base-url", llama_server.base_url, "--judge", llama_server.model]
    result = runner.invoke(app, ["eval", "--testset", "mtbench", "--limit", "1", "--data-dir", str(shared_data),
                                 "-o", str(out), "--temperature", "0.7", *server, *TINY])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "single" and results["judge"] == f"{llama_server.model} (openai)"
    assert results["calls"]["by_purpose"]["sent"] == {"eval_answer": 2, "eval_reference": 2, "eval_judge": 4}
    assert results["verdicts"] == 4 and [t["turn"] for t in results["turns"]] == [1, 2]
    row = json.loads((out / "judgments.jsonl").read_text().splitlines()[0])
    assert [g["model"]["prompt"] for g in row["turns_graded"]] == ["single-v1", "single-v1-multi-turn"]
    answer = json.loads((out / "answers.jsonl").read_text().splitlines()[0])
    assert len(answer["model_answer"]) == 2 and answer["skill"] == "writing"
    # Turn 2 was asked with the conversation so far: its stored request holds turn 1's answer.
    import sqlite3

    with sqlite3.connect(out / "run.sqlite") as db:
        requests = [json.loads(r[0]) for r in db.execute("SELECT request FROM calls WHERE purpose = 'eval_answer'")]
    two_turn = next(r for r in requests if len(r["messages"]) == 3)
    assert two_turn["messages"][1] == {"role": "assistant", "content": answer["model_answer"][0]}
