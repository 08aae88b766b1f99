"""The math task (`--task math`): final answers in every format, normalisation, majority and agreement, the
no_question rule, direction weights, GSM8K seed columns, and runs end to end on the scripted backend
(kept rows carry the majority answer, inconsistent answers are eliminated with their evidence, stats has
the task's tally, a stopped run resumes to the uninterrupted dataset); one slow run on the embedded model."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from evolinstruct.evolve.chain import RoleCalls
from evolinstruct.evolve.config import Algorithm, BudgetConfig, EvolveConfig, Roles, SamplingConfig, Source
from evolinstruct.evolve.mathanswer import final_answer, majority, normalise, parse_final_answer
from evolinstruct.evolve.operations import parse_weights
from evolinstruct.evolve.rules import COPIED_PROMPT, NO_INFORMATION_GAIN
from evolinstruct.evolve.run import run_evolve
from evolinstruct.evolve.tasks import get_task
from evolinstruct.evolve.tasks.math import (
    INCONSISTENT_ANSWER,
    NO_QUESTION,
    OPERATIONS,
    MathChain,
    direction_of,
    direction_weights,
    no_question,
)
from evolinstruct.evolve.templates import load_templates
from evolinstruct.models.base import ModelSpec, Request, Result, Transport
from evolinstruct.records import Record
from evolinstruct.seeds import SeedColumns, read_seeds
from runhelpers import CLI, kill_then_resume
from scripted import on

PROBLEMS = Path(__file__).resolve().parent / "fixtures" / "math_problems.jsonl"
SCRIPTED = ModelSpec(backend="scripted", model="s")

# ---------------------------------------------------------------------------------------- final answers
# Three sampled solutions of one problem per format: (solutions, majority answer or None).
SOLUTIONS = {
    "answer-is": (
        ["Natalia sold 48 / 2 = 24 clips in May.\nAltogether she sold 48 + 24 = 72 clips.\nThe answer is: 72",
         "In May she sold half of 48, which is 24. In total: 48 + 24 = 72.\nThe answer is: 72.",
         "She sold 48 in April and 48 / 2 = 24 in May, so 48 + 24 = 70.\nThe answer is: 70"],
        "72"),
    "boxed": (
        ["The probability is $\\frac{3}{8}$ times 2, so the answer is $\\boxed{\\frac{3}{4}}$.",
         "Simplifying $\\frac{6}{8}$ we get $\\boxed{\\dfrac{3}{4}}$",
         "We get $\\boxed{{0.75}}$."],
        "0.75"),
    "hashes": (
        ["He earns 12 * 50 = <<12*50=600>>600 dollars a week.\n#### 600",
         "The weekly pay is 600 dollars.\n#### $600",
         "12 * 5 = 60 dollars.\n#### 60"],
        "600"),
    "last-number": (
        ["There are 6 * 8 = 48 plants, and 48 * 5 = 240 tomatoes.",
         "Each row gives 8 * 5 = 40 tomatoes, and 6 rows give 240 tomatoes in all.",
         "The garden gives 6 * 40 = 240 tomatoes."],
        "240"),
}
NO_MAJORITY = {
    "answer-is": ["The answer is: 72", "The answer is: 70", "The answer is: 68"],
    "boxed": ["$\\boxed{\\frac{1}{2}}$", "$\\boxed{\\frac{1}{3}}$", "$\\boxed{2}$"],
    "hashes": ["#### 1,200", "#### 1,000", "#### 12"],
    "last-number": ["So she has 5 apples.", "She ends with 7 apples.", "She has 5 + 4 = 9 apples."],
    "mixed-tie": ["The answer is: 10", "#### 12", "I cannot tell."],
}


@pytest.mark.parametrize("fmt", list(SOLUTIONS))
def test_final_answers_in_each_format_with_a_majority(fmt):
    solutions, expected = SOLUTIONS[fmt]
    answers = [final_answer(s) for s in solutions]
    answer, agreement = majority(answers)
    assert answer == expected, answers
    assert agreement == pytest.approx(answers.count(expected) / 3) and agreement > 0.5


@pytest.mark.parametrize("fmt", list(NO_MAJORITY))
def test_final_answers_in_each_format_without_a_majority(fmt):
    answers = [final_answer(s) for s in NO_MAJORITY[fmt]]
    answer, agreement = majority(answers)
    assert answer is None and agreement == pytest.approx(1 / 3), answers


def test_formats_agree_with_each_other():
    answers = [final_answer(s) for s in ("The answer is: 3/4", "$\\boxed{\\frac{3}{4}}$", "#### 0.75",
                                         "so three quarters, that is 0.750 of the cake")]
    assert answers == ["0.75"] * 4


@pytest.mark.parametrize(
    ("text", "raw"),
    [
        ("First 3 + 4 = 7.\nThe answer is: 7\nCheck: 7 - 4 = 3.", "7"),  # the marker beats a later number
        ("#### 5\nThe answer is: 6", "6"),  # the last marker wins
        ("The answer is: $\\boxed{18}$.", "18"),
        ("$\\boxed{\\frac{1}{\\sqrt{2}}}$", "\\frac{1}{\\sqrt{2}}"),  # nested braces
        ("Therefore, the final answer is 15 apples.", "15 apples"),
        ("The answer is 5 because 2 + 3 = 5.", "5"),
        ("10-5 = 5, then she gives away 2, leaving 3", "3"),
        ("The temperature falls to -4 degrees", "-4"),
        ("x^2 = 9", "9"),  # an exponent is not the last number
        ("We need 3/4 of it", "3/4"),
        ("nothing to see here", None),
        ("", None),
        ("$\\boxed{12", "12"),  # a box cut off: its last number
        ("So 30 minutes. The answer is a bit of a simplification.", "30"),  # prose after "the answer is"
        ("The answer is yes.", "yes"),
    ],
)
def test_parse_final_answer(text, raw):
    assert parse_final_answer(text) == raw


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("1,234", "1234"), ("1,000,000", "1000000"), ("$18.00", "18"), ("\\$18", "18"), ("18.", "18"),
        ("2.50", "2.5"), ("3/4", "0.75"), ("6/8", "0.75"), ("\\frac{3}{4}", "0.75"), ("\\dfrac34", "0.75"),
        ("-\\frac{3}{4}", "-0.75"), ("1/3", "1/3"), ("2/6", "1/3"), ("0.333", "0.333"), ("-7", "-7"), ("−7", "-7"),
        ("18 dollars", "18"), ("5 cm^2", "5"), ("12 km/h", "12"), ("90^\\circ", "90"), ("25%", "25"),
        ("25\\%", "25"), ("25 percent", "25"), ("x = 5", "5"), ("12\\text{ cm}", "12"), ("{18}", "18"),
("48 / 2 = 24", "24"), ("10 * 6 = 60 plants in total", "60"), ("5 =", "5"),
        ("4/2", "2"), ("0", "0"), ("-0", "0"), (".5", "0.5"),
        ("\\sqrt{2}", "\\sqrt{2}"), ("(1, 2)", "(1,2)"), ("3x + 2", "3x+2"), ("Yes", "yes"), ("7/0", "7/0"),
        ("", None), (None, None),
    ],
)
def test_normalise(raw, canonical):
    assert normalise(raw) == canonical


def test_majority_needs_more_than_half_and_unparsed_answers_never_vote():
    assert majority(["4", "4", "5"]) == ("4", pytest.approx(2 / 3))
    assert majority(["4", "4", "5", "5"]) == (None, 0.5)  # a tie is no majority
    assert majority(["4", None, None]) == (None, pytest.approx(1 / 3))
    assert majority([None, None, None]) == (None, 0.0)
    assert majority(["9"]) == ("9", 1.0)
    assert majority([]) == (None, 0.0)


# ---------------------------------------------------------------------------------------- the no_question rule
@pytest.mark.parametrize(
    "problem",
    [
        "A baker makes 24 muffins and sells 15. How many muffins are left?",
        "Find the sum of all positive divisors of 36.",
        "Compute $\\dbinom{8}{3}$.",
        "Tom reads twelve pages a day. Determine the number of days he needs for a book of 180 pages.",
        "If a shirt costs $40 and is 25% off, what is the sale price",
        "Let f(x) = 2x + 3. Evaluate f(4).",
        "Leo has three times as many marbles as Sam; together they have sixty-four. How many does Leo have?",
    ],
)
def test_no_question_keeps_answerable_problems(problem):
    assert no_question(problem) is None


@pytest.mark.parametrize(
    ("problem", "asks", "has_number"),
    [
        ("A baker makes 24 muffins in the morning and 18 in the afternoon.", False, True),
        ("The rewritten problem makes the story about a farm instead of a bakery.", False, False),
        ("How many apples does Maria have left after lunch?", True, False),
        ("Sure! I made it harder by adding a discount.", False, False),
    ],
)
def test_no_question_eliminates_what_asks_nothing_answerable(problem, asks, has_number):
    verdict = no_question(problem)
    assert verdict is not None and verdict.reason == NO_QUESTION
    assert verdict.evidence == {"asks": asks, "has_number": has_number, "excerpt": problem}


# ---------------------------------------------------------------------------------------- operations and directions
def test_math_template_set_and_directions():
    templates = load_templates("math")
    assert templates.ops == tuple(OPERATIONS)
    assert {direction_of(op) for op in templates.ops} == {"upward", "downward"}
    for op in templates.ops:
        prompt = templates.render(op, "Tom has 3 apples. How many?")
        assert "Tom has 3 apples. How many?" in prompt and "Prompt Rewriter" in prompt
        assert ("harder" if direction_of(op) == "upward" else "easier") in prompt
        assert templates.operations[op]["kind"] == direction_of(op)
    assert get_task("math").templates == "math" and get_task("math").options == ("math_samples",)
    assert direction_of("upward_my_own") == "upward" and direction_of("mutation") == "other"


def test_direction_weights_become_operation_weights():
    templates = load_templates("math")
    weights = parse_weights(direction_weights("upward=3,downward=1"), templates)
    share = Counter()
    for op, w in weights.items():
        share[direction_of(op)] += w
    assert share["upward"] == 3 * share["downward"]
    assert len({w for op, w in weights.items() if direction_of(op) == "upward"}) == 1  # even within a direction
    only_down = parse_weights(direction_weights("downward=1"), templates)
    assert {op for op, w in only_down.items() if w > 0} == {op for op in OPERATIONS if op.startswith("downward")}
    assert direction_weights("upward=1", ["upward_a", "downward_b", "mutation"]) == "upward_a=1"
    for bad in ("sideways=1", "upward=0", "upward=x"):
        with pytest.raises(ValueError, match="--directions"):
            direction_weights(bad)


# ---------------------------------------------------------------------------------------- seeds
def test_gsm8k_and_math_columns_are_recognised(tmp_path):
    seeds = list(read_seeds(PROBLEMS))
    assert len(seeds) == 10
    assert seeds[0].instruction.startswith("A baker makes 24 muffins") and seeds[0].output.endswith("#### 7")
    math_file = tmp_path / "math.jsonl"
    math_file.write_text(json.dumps({"problem": "Compute $2^{10}$.", "solution": "$2^{10} = \\boxed{1024}$.",
                                     "level": "Level 1"}) + "\n")
    [seed] = read_seeds(math_file)
    assert (seed.instruction, seed.output) == ("Compute $2^{10}$.", "$2^{10} = \\boxed{1024}$.")
    # --column question reads the answer as the output too; an instruction column present wins.
    [first, *_] = read_seeds(PROBLEMS, SeedColumns(instruction="question"))
    assert first.output.endswith("#### 7")
    both = tmp_path / "both.jsonl"
    both.write_text(json.dumps({"instruction": "Add 2 and 2.", "question": "q?", "answer": "4"}) + "\n")
    [seed] = read_seeds(both)
    assert (seed.instruction, seed.output) == ("Add 2 and 2.", "")


# ---------------------------------------------------------------------------------------- the chain's answer check
class Responder:
    """A responder role that answers by purpose: answer_1, answer_2, ... (a Result for a failure)."""

    model = "fake"

    def __init__(self, replies: dict[str, str | Result]) -> None:
        self.replies = replies
        self.calls: list[tuple[str, Request]] = []

    async def __call__(self, purpose: str, request: Request, remaining: int = 0) -> Result:
        self.calls.append((purpose, request))
        reply = self.replies[purpose]
        return reply if isinstance(reply, Result) else Result(text=reply, finish_reason="stop")


def check(first: str, replies: dict[str, str | Result], samples: int = 3) -> tuple[Record, object, Responder]:
    config = EvolveConfig(source=Source(seeds=str(PROBLEMS)),
                          algorithm=Algorithm(task="math", task_options={"math_samples": samples}))
    responder = Responder(replies)
    chain = MathChain(config, load_templates("math"), {}, RoleCalls(evolver=None, responder=responder, judge=None),
                      commit=lambda *_: None)
    record = Record(id="e-1", root_id="s-1", parent_id="s-1", epoch=1, op="upward_add_steps",
                    instruction="Tom has 3 apples and buys 4. How many apples does he have?", output=first)
    verdict = asyncio.run(chain.check_answer(record, 1))
    return record, verdict, responder


def test_check_answer_keeps_a_majority_with_its_agreement():
    record, verdict, responder = check("3 + 4 = 7.\nThe answer is: 7", {"answer_1": "#### 7", "answer_2": "#### 8"})
    assert verdict is None and record.status == "kept"
    assert record.meta["math"] == {"answer": "7", "agreement": 0.6667, "answers": ["7", "7", "8"]}
    purposes = [p for p, _ in responder.calls]
    assert sorted(purposes) == ["answer_1", "answer_2"]
    seeds = {r.sampling.seed for _, r in responder.calls}
    assert len(seeds) == 2  # distinct sampling seeds, so distinct calls
    assert all(r.messages == [{"role": "user", "content": record.instruction}] for _, r in responder.calls)


def test_check_answer_without_a_majority_eliminates_with_the_answers():
    record, verdict, _ = check("The answer is: 7", {"answer_1": "The answer is: 8", "answer_2": "I do not know."})
    assert verdict.reason == INCONSISTENT_ANSWER
    assert verdict.evidence == {"answers": ["7", "8", None], "agreement": 0.3333, "samples": 3}
    assert "math" not in record.meta


@pytest.mark.parametrize("samples", [1, 5])
def test_check_answer_asks_k_minus_one_more(samples):
    replies = {f"answer_{i}": "The answer is: 7" for i in range(1, samples)}
    record, verdict, responder = check("#### 7", replies, samples)
    assert verdict is None and len(responder.calls) == samples - 1
    assert record.meta["math"]["answers"] == ["7"] * samples and record.meta["math"]["agreement"] == 1.0


def test_a_failed_extra_answer_is_an_error_like_a_failed_answer():
    record, verdict, _ = check("#### 7", {"answer_1": "#### 7", "answer_2": Result(error="HTTP 503")})
    assert verdict is None
    assert (record.status, record.reason) == ("error", "call_failed")
    assert record.evidence == {"purpose": "answer_2", "error": "HTTP 503"}


def test_math_samples_must_be_a_positive_whole_number():
    config = EvolveConfig(source=Source(seeds=str(PROBLEMS)), algorithm=Algorithm(task="math", task_options={"math_samples": 0}))
    with pytest.raises(ValueError, match="--math-samples"):
        get_task("math").rules(config)
    with pytest.raises(ValueError, match="has no option"):
        Algorithm(task="math", task_options={"exec_check": True})


# ---------------------------------------------------------------------------------------- end to end (scripted)
def is_evolved(prompt) -> bool:
    return "Add one more requirement." in prompt.text  # what the scripted evolver appends


# Muffin and bus-ticket problems get a different answer per sampling seed: never a majority. The marble
# problem evolves into a statement that asks nothing. Every other problem is answered 42, consistently.
VARYING = (on("answer", r"muffins|bus ticket"), lambda p: f"Let me think.\nThe answer is: {p.request.sampling.seed}")
STATEMENT = (on("evolve", r"marbles"), "Leo and Sam share their marbles.")
FORTY_TWO = (on("answer"), "Step 1: count.\nStep 2: add.\nThe answer is: 42")


def math_config(epochs: int = 1, samples: int = 3, concurrency: int = 4, limit: int | None = None) -> EvolveConfig:
    return EvolveConfig(
        source=Source(seeds=str(PROBLEMS), limit=limit),
        algorithm=Algorithm(epochs=epochs, task="math", task_options={"math_samples": samples}),
        sampling=SamplingConfig(max_tokens=64),
        roles=Roles(evolver=SCRIPTED),
        transport=Transport(concurrency=concurrency),
    )


def read(run_dir: Path, name: str = "dataset.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text(encoding="utf-8").splitlines()]


def test_math_run_keeps_majority_answers_and_eliminates_the_rest(tmp_path, scripted):
    script = scripted(VARYING, STATEMENT, FORTY_TWO)
    stats = run_evolve(math_config(), tmp_path / "run")
    rows, eliminated = read(tmp_path / "run"), read(tmp_path / "run", "eliminated.jsonl")
    assert stats["seeds"] == 10 and stats["stopped_by"] is None

    evolved = [r for r in rows if r["epoch"] == 1]
    assert len(evolved) == 7
    for row in evolved:
        assert row["math"] == {"answer": "42", "agreement": 1.0, "answers": ["42", "42", "42"]}
        assert row["op"] in OPERATIONS
    assert all("math" not in r for r in rows if r["epoch"] == 0)  # seeds are answered once, as in chat

    reasons = Counter(r["reason"] for r in eliminated)
    assert reasons == {INCONSISTENT_ANSWER: 2, NO_QUESTION: 1}
    for row in eliminated:
        if row["reason"] == INCONSISTENT_ANSWER:
            assert re.search(r"muffins|bus ticket", row["instruction"])
            answers = row["evidence"]["answers"]
            assert len(answers) == 3 == len(set(answers)) and row["evidence"]["agreement"] == 0.3333
        else:
            assert row["evidence"] == {"asks": False, "has_number": False, "excerpt": "Leo and Sam share their marbles."}

    # Three answers for each problem that reached the check, each extra one its own purpose and call.
    sent = stats["calls_by_purpose"]["sent"]
    assert sent["answer_1"] == sent["answer_2"] == 9 and sent["answer"] == 10 + 9
    assert script.count("answer") == 10 + 9 * 3

    task = stats["task"]
    assert task["rules"] == stats["eliminated"] == {INCONSISTENT_ANSWER: 2, NO_QUESTION: 1}
    assert task["agreement"] == {"3/3": 7, "1/3": 2}
    assert task["answers_sampled"] == 27 and task["answers_unparsed"] == 0
    assert sum(d["attempted"] for d in task["by_direction"].values()) == 10
    assert set(task["by_direction"]) <= {"upward", "downward"}
    for counts in [*task["by_op"].values(), *task["by_direction"].values()]:
        assert counts["kept"] + counts["eliminated"] + counts["errors"] == counts["attempted"]
        assert counts["success_rate"] == round(counts["kept"] / (counts["kept"] + counts["eliminated"]), 4)
    assert sum(c["kept"] for c in task["by_op"].values()) == stats["kept"] == 7
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["task"] == task


def test_math_runs_the_chat_rules_too(tmp_path, scripted):
    scripted((on("evolve", r"muffins"), "#Rewritten Prompt#: How many muffins are left after 3 more?"),
             (on("equality", r"bus ticket"), "Equal"), FORTY_TWO)
    stats = run_evolve(math_config(limit=3), tmp_path / "run")
    assert stats["eliminated"] == {COPIED_PROMPT: 1, NO_INFORMATION_GAIN: 1}
    assert stats["task"]["agreement"] == {"3/3": 1}
    assert stats["calls_by_purpose"]["sent"]["answer_1"] == 1  # only the kept problem was sampled again


def test_a_stopped_math_run_resumes_to_the_uninterrupted_dataset(tmp_path, scripted):
    scripted(VARYING, STATEMENT, FORTY_TWO)
    base = math_config(epochs=2, concurrency=2, limit=6)
    full = run_evolve(base, tmp_path / "full")
    assert full["stopped_by"] is None and full["evolutions"]["not_attempted"] == 0

    run_dir = tmp_path / "run"
    stopped = run_evolve(replace(base, budget=BudgetConfig(max_calls=17)), run_dir)
    assert stopped["stopped_by"] == "max_calls" and stopped["evolutions"]["not_attempted"] > 0
    finished = run_evolve(replace(base, budget=BudgetConfig(max_calls=1000)), run_dir)
    assert finished["stopped_by"] is None and finished["resumed"] is True
    assert stopped["llm_calls"] + finished["llm_calls"] == full["llm_calls"]  # no call was sent twice
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert (run_dir / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    assert finished["task"] == full["task"]


def test_failed_extra_answers_are_errors_and_the_rerun_retries_them(tmp_path, scripted):
    """An answer call that fails stops its chain as an error (errors.jsonl, exit 3 in the CLI); the next
    run sends only what is missing and ends with the dataset of a run without failures."""
    flaky = (lambda p: p.purpose == "answer" and is_evolved(p) and p.request.sampling.seed % 2 == 1,
             Result(error="HTTP 503: overloaded"))
    scripted(flaky, FORTY_TWO)
    run_dir = tmp_path / "run"
    failed = run_evolve(math_config(), run_dir)
    errors = read(run_dir, "errors.jsonl")
    assert errors and failed["evolutions"]["errors"] == len(errors)
    assert {e["evidence"]["purpose"] for e in errors} <= {"answer", "answer_1", "answer_2"}
    assert any(e["evidence"]["purpose"] != "answer" for e in errors)  # an extra answer failed, not only the first

    scripted(FORTY_TWO)
    retried = run_evolve(math_config(), run_dir)
    assert retried["evolutions"]["errors"] == 0 and retried["kept"] == 10
    clean = run_evolve(math_config(), tmp_path / "clean")
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "clean" / "dataset.jsonl").read_bytes()
    assert retried["llm_calls"] < clean["llm_calls"]  # what had succeeded was replayed


# ---------------------------------------------------------------------------------------- end to end (embedded model)
@pytest.mark.slow
def test_math_run_on_the_embedded_model(tmp_path):
    config = EvolveConfig(
        source=Source(seeds=str(PROBLEMS), limit=3),
        algorithm=Algorithm(epochs=1, seed=1, task="math", task_options={"math_samples": 3}),
        sampling=SamplingConfig(max_tokens=96),
        transport=Transport(concurrency=8),
    )
    run_dir = tmp_path / "run"
    stats = run_evolve(config, run_dir)
    assert stats["stopped_by"] is None and stats["seeds"] == 3 and stats["evolutions"]["attempted"] == 3
    rows, eliminated = read(run_dir), read(run_dir, "eliminated.jsonl")
    for row in rows:
        if row["epoch"] > 0:
            math = row["math"]
            assert len(math["answers"]) == 3 and math["answer"] == majority(math["answers"])[0]
            assert math["agreement"] > 0.5
    for row in eliminated:
        assert row["evidence"], row
        if row["reason"] == INCONSISTENT_ANSWER:
            assert len(row["evidence"]["answers"]) == 3
    task = stats["task"]
    assert sum(task["agreement"].values()) == sum(1 for r in rows if r["epoch"] > 0) + sum(
        1 for r in eliminated if r["reason"] == INCONSISTENT_ANSWER)
    assert sum(d["attempted"] for d in task["by_direction"].values()) == 3
    again = run_evolve(config, run_dir)  # a rerun replays every call
    assert again["llm_calls"] == 0 and again["task"] == task


@pytest.mark.slow
def test_a_killed_math_run_resumes_without_repeating_a_call(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [*CLI, "evolve", str(PROBLEMS), "-o", str(run_dir), "--task", "math", "--math-samples", "3",
           "--limit", "4", "--epochs", "2", "--max-tokens", "64", "--concurrency", "4"]
    stats = kill_then_resume(cmd, run_dir, min_calls=6, timeout=600)
    assert stats["task"]["name"] == "math"
