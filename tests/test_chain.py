"""The chain's semantics through `run_evolve`, on the scripted backend (tests/scripted.py): no model, no
server, a few seconds in all. Elimination order, the pool, operation weights, kept seed responses, roles,
budgets, determinism across concurrency, and shards."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from evolinstruct.evolve.config import (
    Algorithm,
    BudgetConfig,
    EvolveConfig,
    ExecutorConfig,
    Roles,
    SamplingConfig,
    Source,
)
from evolinstruct.evolve.operations import choose_operation, parse_weights
from evolinstruct.evolve.rules import (
    COPIED_PROMPT,
    EMPTY,
    NO_INFORMATION_GAIN,
    PUNCT_STOPWORDS,
    SORRY_SHORT,
    TRUNCATED,
    TRUNCATED_ANSWER,
)
from evolinstruct.evolve.run import run_evolve
from evolinstruct.evolve.templates import load_templates
from evolinstruct.models.base import ModelSpec, Result, Transport
from scripted import answer, on, write_seeds

TOPICS = ["the moon", "tea", "rivers", "bread", "owls", "glass", "snow", "maps", "bees", "clocks", "salt", "kites",
          "ferns", "bells", "wool", "caves", "tides", "maple", "chess", "lamps"]
SCRIPTED = ModelSpec(backend="scripted", model="s")


def seed_file(tmp_path: Path, n: int, outputs: list[str] | None = None) -> str:
    return write_seeds(tmp_path / "seeds.jsonl", [f"Describe {TOPICS[i]}." for i in range(n)], outputs)


def config(seeds: str, epochs: int = 1, concurrency: int = 4, roles: Roles | None = None, **algorithm) -> EvolveConfig:
    return EvolveConfig(
        source=Source(seeds=seeds),
        algorithm=Algorithm(epochs=epochs, **algorithm),
        sampling=SamplingConfig(max_tokens=64),
        roles=roles or Roles(evolver=SCRIPTED),
        transport=Transport(concurrency=concurrency),
    )


def read(run_dir: Path, name: str = "dataset.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text(encoding="utf-8").splitlines()]


def records(run_dir: Path) -> list[dict]:
    """Every record of a run: kept (the dataset) and eliminated."""
    return read(run_dir) + read(run_dir, "eliminated.jsonl")


def sent(stats: dict) -> dict[str, int]:
    return stats["calls_by_purpose"]["sent"]


def is_child_answer(prompt) -> bool:
    """An answer call for an evolved instruction (a seed is one sentence, "Describe X.")."""
    return prompt.purpose == "answer" and re.fullmatch(r"Describe [^.]+\.", prompt.text) is None


# ---------------------------------------------------------------------------------------- elimination order
JUDGE_EQUAL = (on("equality"), "Equal")
SORRY = (is_child_answer, "I'm sorry, I cannot help with that.")


@pytest.mark.parametrize(
    ("rules", "reason", "calls"),
    [
        # Rules on the instruction fire before the judge (which here would say Equal) is ever asked.
        ([(on("evolve"), "#Rewritten Prompt#: Describe the moon."), JUDGE_EQUAL], COPIED_PROMPT,
         ["answer", "evolve"]),
        ([(on("evolve"), "  \n"), JUDGE_EQUAL], EMPTY, ["answer", "evolve"]),
        # A truncated evolution is eliminated before any rule on its words (which here would pass).
        ([(on("evolve"), Result(text="Describe the moon and its", finish_reason="length")), JUDGE_EQUAL], TRUNCATED,
         ["answer", "evolve"]),
        # The judge fires before the answer call (whose answer here would be eliminated too).
        ([JUDGE_EQUAL, SORRY], NO_INFORMATION_GAIN, ["answer", "evolve", "equality"]),
        # Rules on the response come last, after the answer.
        ([SORRY], SORRY_SHORT, ["answer", "evolve", "equality", "answer"]),
        ([(is_child_answer, "... and the of it.")], PUNCT_STOPWORDS, ["answer", "evolve", "equality", "answer"]),
        ([], None, ["answer", "evolve", "equality", "answer"]),
    ],
    ids=["copied", "empty", "truncated", "judge-equal", "sorry-short", "stopwords", "kept"],
)
def test_elimination_order(tmp_path, scripted, rules, reason, calls):
    script = scripted(*rules)
    stats = run_evolve(config(seed_file(tmp_path, 1), concurrency=1), tmp_path / "run")
    assert [c.purpose for c in script.calls] == calls
    assert sent(stats) == dict(Counter(calls))
    assert stats["llm_calls"] == len(calls)
    [seed, *kept] = read(tmp_path / "run")
    eliminated = read(tmp_path / "run", "eliminated.jsonl")
    assert seed["epoch"] == 0 and seed["output"] == answer("Describe the moon.")
    if reason is None:
        assert not eliminated and stats["eliminated"] == {}
        [child] = kept
        assert child["parent_id"] == seed["id"] and child["output"] == script.calls[-1].reply
        assert child["equality_judge"] == "Not Equal"
        return
    assert not kept
    [child] = eliminated
    assert child["reason"] == reason and child["evidence"] and child["epoch"] == 1
    assert stats["eliminated"] == {reason: 1} and stats["evolutions"]["eliminated"] == 1
    if reason == NO_INFORMATION_GAIN:
        assert child["evidence"]["judge_answer"] == "Equal" and child["output"] == ""
    if reason in (SORRY_SHORT, PUNCT_STOPWORDS):
        assert child["output"] == script.calls[-1].reply  # the answer that was judged is kept as evidence
    if reason == COPIED_PROMPT:
        assert child["evidence"]["phrase"] == "rewritten prompt"
    if reason == TRUNCATED:
        assert child["evidence"] == {"finish_reason": "length", "purpose": "evolve"}
        assert child["instruction"] == "Describe the moon and its"


# ---------------------------------------------------------------------------------------- empty and truncated
def test_an_empty_answer_from_any_backend_is_an_error_and_the_rerun_asks_again(tmp_path, scripted):
    script = scripted((on("answer"), ""))  # a local model that stopped at once
    run_dir, cfg = tmp_path / "run", config(seed_file(tmp_path, 2))
    stats = run_evolve(cfg, run_dir)
    assert stats["seed_errors"] == 2 and stats["seeds_answered"] == 0 and stats["stored_calls"] == 0
    errors = read(run_dir, "errors.jsonl")
    assert [r["evidence"]["error"].startswith("empty completion from s") for r in errors] == [True, True]
    script.rules.clear()
    again = run_evolve(cfg, run_dir)
    assert again["seeds_answered"] == 2 and again["pending_failures"] == 0
    assert again["calls_by_purpose"]["sent"]["answer"] == 4  # the two seeds asked again, and two children


def truncated_answer(prompt) -> Result:
    """The default answer, cut off at max_tokens."""
    return Result(text=answer(prompt.text)[:40], finish_reason="length")


def test_truncated_answers_are_kept_marked_and_dropped_with_drop_truncated(tmp_path, scripted):
    scripted((on("answer", "moon"), truncated_answer))  # the moon seed's answer and its children's
    seeds = seed_file(tmp_path, 2)
    stats = run_evolve(config(seeds, epochs=2), tmp_path / "kept")
    rows = read(tmp_path / "kept")
    assert len(rows) == 6 and stats["truncated_answers_kept"] == 3
    marked = [r for r in rows if "moon" in r["instruction"]]
    assert len(marked) == 3 and all(r["truncated"] is True for r in marked)
    assert all("truncated" not in r for r in rows if r not in marked)

    stats = run_evolve(config(seeds, epochs=2, drop_truncated=True), tmp_path / "dropped")
    rows = read(tmp_path / "dropped")
    assert [r["instruction"] for r in rows if r["epoch"] == 0] == ["Describe tea."]
    assert not [r for r in rows if "moon" in r["instruction"]]
    dropped = read(tmp_path / "dropped", "eliminated.jsonl")
    assert len(dropped) == 3 and {r["reason"] for r in dropped} == {TRUNCATED_ANSWER}
    assert all(r["truncated"] is True and r["evidence"]["purpose"] == "answer" for r in dropped)
    # The dropped seed is still evolved, from its own instruction each epoch (its children were dropped too).
    seed_id = next(r["id"] for r in dropped if r["epoch"] == 0)
    assert sorted(r["parent_id"] for r in dropped if r["epoch"] > 0) == [seed_id, seed_id]
    assert stats["seeds_eliminated"] == {TRUNCATED_ANSWER: 1} and stats["seed_errors"] == 0
    assert stats["eliminated"] == {TRUNCATED_ANSWER: 2} and stats["evolutions"]["attempted"] == 4


def test_an_eliminated_child_leaves_its_parent_in_the_pool(tmp_path, scripted):
    # The judge finds every evolution of the moon seed equal to it; tea's evolutions pass.
    script = scripted((on("equality", "moon"), "Equal"))
    run_dir = tmp_path / "run"
    stats = run_evolve(config(seed_file(tmp_path, 2), epochs=3, concurrency=1), run_dir)
    assert stats["evolutions"] == {"planned": 6, "attempted": 6, "kept": 3, "eliminated": 3, "errors": 0,
                                   "not_attempted": 0}
    by_root: dict[str, list[dict]] = {}
    for row in sorted(records(run_dir), key=lambda r: r["epoch"]):
        by_root.setdefault(row["root_id"], []).append(row)
    lineage = {rows[0]["instruction"]: rows for rows in by_root.values()}  # by seed instruction, seed first
    moon, tea = lineage["Describe the moon."], lineage["Describe tea."]
    # Every epoch evolves the moon seed itself again: the eliminated child never entered the pool.
    assert [r["status"] for r in moon[1:]] == ["eliminated"] * 3
    assert [r["parent_id"] for r in moon[1:]] == [moon[0]["id"]] * 3
    assert len({r["id"] for r in moon}) == 4  # a new child each epoch
    evolved_from = Counter(c.given for c in script.calls if c.purpose == "evolve")
    assert evolved_from["Describe the moon."] == 3
    # A kept child replaces its parent: tea's lineage is a chain.
    assert [r.get("status", "kept") for r in tea] == ["kept"] * 4
    assert [r["parent_id"] for r in tea] == [None] + [r["id"] for r in tea[:-1]]
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        current = dict(db.execute("SELECT root_id, current_id FROM chains"))
    assert current == {moon[0]["id"]: moon[0]["id"], tea[0]["id"]: tea[-1]["id"]}


# ---------------------------------------------------------------------------------------- operations
def child_ops(run_dir: Path) -> dict[str, str]:
    return {r["id"]: r["op"] for r in records(run_dir) if r["epoch"] > 0}


def test_op_weights_choose_the_operations_deterministically(tmp_path, scripted):
    seeds = seed_file(tmp_path, 20)
    script = scripted()
    run_evolve(config(seeds, epochs=2, op_weights="mutation=1"), tmp_path / "mutation")
    assert set(child_ops(tmp_path / "mutation").values()) == {"mutation"}
    # The prompts the backend received were the mutation template's (it recognises them by their text).
    assert {c.op for c in script.calls if c.purpose == "evolve"} == {"mutation"}

    weighted = config(seeds, epochs=2, op_weights="add_constraints=3,deepening=1")
    stats = run_evolve(weighted, tmp_path / "a")
    ops = child_ops(tmp_path / "a")
    counts = Counter(ops.values())
    assert set(counts) == {"add_constraints", "deepening"} and len(ops) == 40
    assert counts["add_constraints"] > counts["deepening"] > 0
    assert {op: c["attempted"] for op, c in stats["by_op"].items()} == dict(counts)
    # Each choice is a pure function of (run seed, parent id, epoch): the same in another run directory...
    run_evolve(weighted, tmp_path / "b")
    assert child_ops(tmp_path / "b") == ops
    weights = parse_weights("add_constraints=3,deepening=1", load_templates("paper"))
    for row in records(tmp_path / "a"):
        if row["epoch"] > 0:
            assert row["op"] == choose_operation(weights, 0, row["parent_id"], row["epoch"])
    # ...and other weights (the default: uniform over the paper's six) choose otherwise.
    run_evolve(config(seeds, epochs=2), tmp_path / "uniform")
    assert len(set(child_ops(tmp_path / "uniform").values())) == 6


# ---------------------------------------------------------------------------------------- seeds and roles
def test_kept_seed_responses_are_not_answered(tmp_path, scripted):
    outputs = ["The moon is Earth's only natural satellite.", "", "Rivers carry water to the sea."]
    seeds = seed_file(tmp_path, 3, outputs)
    script = scripted()
    stats = run_evolve(config(seeds, epochs=2, seed_responses="keep"), tmp_path / "keep")
    # Answers: the six evolutions, and the one seed whose file has no output.
    assert sent(stats)["answer"] == 7 and script.count("answer") == 7
    assert sent(stats)["evolve"] == 6
    rows = {r["instruction"]: r for r in read(tmp_path / "keep") if r["epoch"] == 0}
    assert rows["Describe the moon."]["output"] == outputs[0] and rows["Describe the moon."]["model"] == "seed-file"
    assert rows["Describe rivers."]["output"] == outputs[2] and rows["Describe rivers."]["model"] == "seed-file"
    assert rows["Describe tea."]["output"] == answer("Describe tea.") and rows["Describe tea."]["model"] == "s"
    assert not any(c.purpose == "answer" and c.text in ("Describe the moon.", "Describe rivers.") for c in script.calls)

    generated = run_evolve(config(seeds, epochs=2), tmp_path / "generate")
    assert sent(generated)["answer"] == 9  # the paper's way: every seed is answered too


def test_answer_and_judge_models_receive_only_their_own_prompts(tmp_path, scripted):
    script = scripted()
    roles = Roles(evolver=ModelSpec(backend="scripted", model="e"), responder=ModelSpec(backend="scripted", model="a"),
                  judge=ModelSpec(backend="scripted", model="j"))
    run_dir = tmp_path / "run"
    stats = run_evolve(config(seed_file(tmp_path, 3), epochs=2, roles=roles), run_dir)
    assert script.by_model() == {"a": Counter(answer=9), "e": Counter(evolve=6), "j": Counter(equality=6)}
    assert stats["models"] == {"evolver": "e", "responder": "a", "judge": "j"}
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        stored = set(db.execute("SELECT DISTINCT purpose, model FROM calls"))
    assert stored == {("answer", "a"), ("evolve", "e"), ("equality", "j")}
    for row in read(run_dir):
        assert row["model"] == ("a" if row["epoch"] == 0 else "e")


# ---------------------------------------------------------------------------------------- budgets
MOON_EQUAL = (on("equality", "moon"), "Equal")  # some eliminations, so that outputs have both kinds
STEPS_SORRY = (on("answer", "step by step", where="text"), "Sorry, no.")


def test_max_calls_stops_cleanly_and_the_rerun_ends_with_the_uninterrupted_dataset(tmp_path, scripted):
    scripted(MOON_EQUAL)
    seeds = seed_file(tmp_path, 6)
    base = config(seeds, epochs=2, concurrency=2)
    full = run_evolve(base, tmp_path / "full")
    assert full["stopped_by"] is None and full["evolutions"]["not_attempted"] == 0

    run_dir = tmp_path / "run"
    stopped = run_evolve(replace(base, budget=BudgetConfig(max_calls=7)), run_dir)
    assert stopped["stopped_by"] == "max_calls"
    assert 0 < stopped["llm_calls"] <= 7
    assert stopped["evolutions"]["not_attempted"] > 0
    assert (run_dir / "dataset.jsonl").exists() and json.loads((run_dir / "stats.json").read_text()) == stopped

    finished = run_evolve(replace(base, budget=BudgetConfig(max_calls=1000)), run_dir)  # budgets do not bind a run
    assert finished["stopped_by"] is None and finished["resumed"] is True
    assert finished["evolutions"]["not_attempted"] == 0
    assert finished["cache_hits"] >= stopped["llm_calls"]
    assert stopped["llm_calls"] + finished["llm_calls"] == full["llm_calls"]  # no call was sent twice
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert (run_dir / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


def test_max_cost_stops_by_cost(tmp_path, scripted):
    scripted()
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"*": {"input": 1_000_000, "output": 1_000_000}}))  # one USD a token
    base = config(seed_file(tmp_path, 4), epochs=2, concurrency=1)
    full = run_evolve(replace(base, budget=BudgetConfig(prices=str(prices))), tmp_path / "full")
    assert full["stopped_by"] is None
    assert full["cost"]["this_run"] == full["tokens"]["prompt"] + full["tokens"]["completion"]

    run_dir = tmp_path / "run"
    stopped = run_evolve(replace(base, budget=BudgetConfig(max_cost=200, prices=str(prices))), run_dir)
    assert stopped["stopped_by"] == "max_cost"
    assert stopped["cost"]["this_run"] >= 200 and stopped["cost"]["total"] == stopped["cost"]["this_run"]
    assert 0 < stopped["llm_calls"] < full["llm_calls"]
    assert stopped["evolutions"]["not_attempted"] > 0

    resumed = run_evolve(replace(base, budget=BudgetConfig(max_cost=1e9, prices=str(prices))), run_dir)
    assert resumed["stopped_by"] is None and resumed["evolutions"]["not_attempted"] == 0
    assert resumed["cost"]["total"] == full["cost"]["total"]  # every call was paid for once
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "full" / "dataset.jsonl").read_bytes()


# ---------------------------------------------------------------------------------------- determinism and shards
def test_the_dataset_is_the_same_at_concurrency_1_and_16(tmp_path, scripted):
    script = scripted(MOON_EQUAL, STEPS_SORRY)
    seeds = seed_file(tmp_path, 16)
    one = run_evolve(config(seeds, epochs=3, concurrency=1), tmp_path / "c1")
    order_at_1 = [c.text for c in script.calls]
    script.calls.clear()
    sixteen = run_evolve(config(seeds, epochs=3, concurrency=16), tmp_path / "c16")
    assert [c.text for c in script.calls] != order_at_1  # the calls really were sent in another order
    assert sorted(c.text for c in script.calls) == sorted(order_at_1)
    assert set(one["eliminated"]) == {NO_INFORMATION_GAIN, SORRY_SHORT} and one["kept"] > 0
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert (tmp_path / "c1" / name).read_bytes() == (tmp_path / "c16" / name).read_bytes(), name
    assert one["evolutions"] == sixteen["evolutions"] and one["by_op"] == sixteen["by_op"]


def test_two_shards_cover_every_seed_exactly_once(tmp_path, scripted):
    scripted(MOON_EQUAL)
    base = config(seed_file(tmp_path, 10), epochs=2)
    full = run_evolve(base, tmp_path / "full")
    shards = []
    for i in range(2):
        stats = run_evolve(replace(base, executor=ExecutorConfig(shard=i, shards=2)), tmp_path / f"shard{i}")
        assert stats["stopped_by"] is None and stats["evolutions"]["not_attempted"] == 0
        shards.append(records(tmp_path / f"shard{i}"))
    seeds = [{r["id"] for r in rows if r["epoch"] == 0} for rows in shards]
    assert all(seeds) and not seeds[0] & seeds[1]  # both shards have seeds, none has another's
    assert seeds[0] | seeds[1] == {r["id"] for r in records(tmp_path / "full") if r["epoch"] == 0}
    assert len(seeds[0]) + len(seeds[1]) == full["seeds"] == 10
    # Each seed's lineage is the one the unsharded run made.
    merged = sorted(shards[0] + shards[1], key=lambda r: r["id"])
    assert merged == sorted(records(tmp_path / "full"), key=lambda r: r["id"])
