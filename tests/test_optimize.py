"""`evolinstruct optimize` (Auto Evol-Instruct): the loop's decisions with a scripted backend, resume, and the
method as a template set for `evolve --templates`. Fast: no model, no server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from evolinstruct.evolve.config import Algorithm, EvolveConfig, Roles, SamplingConfig, Source
from evolinstruct.evolve.run import run_evolve
from evolinstruct.evolve.templates import extract_final, load_templates
from evolinstruct.models.base import ModelSpec, Transport
from evolinstruct.optimize import (
    METHOD_OP,
    OptimizeConfig,
    choose,
    extract_method,
    load_prompts,
    paper_failure,
    run_optimize,
    split_seeds,
)
from evolinstruct.optimize.dev import DevMetrics
from evolinstruct.optimize.loop import read_all_seeds
from evolinstruct.records import request_seed
from scripted import Prompt, write_seeds

PROMPTS = load_prompts()
SPEC = ModelSpec(backend="scripted", model="s")
TOPICS = ["tea", "poems", "rivers", "stars", "bread", "clocks", "maps", "songs", "chess", "boats", "glass", "wind"]


def seeds_file(tmp_path: Path) -> str:
    return write_seeds(tmp_path / "seeds.jsonl", [f"Write about {t} in one line." for t in TOPICS])


def config(seeds: str, **kw) -> OptimizeConfig:
    base = dict(seeds=seeds, steps=1, candidates=2, batch_size=3, dev_size=4, holdout=0, seed=3,
                evol=SPEC, optimizer=SPEC, transport=Transport(concurrency=8))
    return OptimizeConfig(**{**base, **kw})


def dev_texts(cfg: OptimizeConfig) -> list[str]:
    return [item.text for item in split_seeds(read_all_seeds(cfg), cfg).dev]


def instruction_of(text: str) -> str:
    return text.rsplit("#Instruction#:\n", 1)[-1]


class World:
    """The scripted LLM: methods named by a word in their text, answers that fail where the test says."""

    def __init__(self, cfg: OptimizeConfig, proposals: dict[tuple[int, int], str | None],
                 init_fails: tuple[str, ...] = (), bad_fails: tuple[str, ...] = ()) -> None:
        self.proposals = {request_seed(cfg.seed, f"step{s}:candidate{k}", "optimization"): reply
                          for (s, k), reply in proposals.items()}
        self.init_fails, self.bad_fails = init_fails, bad_fails

    def rules(self) -> list[tuple]:
        return [(r"rate the difficulty and complexity", lambda p: "8" if "Explain in depth." in p.text else "4"),
                (self.is_optimization, self.optimize), (self.is_analysis, "Case 0 failed: it copied the words."),
                (self.is_evolving, self.evolve), (self.is_answer, self.answer)]

    @staticmethod
    def is_optimization(p: Prompt) -> bool:
        return "```Method\n" in p.text

    @staticmethod
    def is_analysis(p: Prompt) -> bool:
        return p.text.startswith(PROMPTS.trajectory_analysis)

    @staticmethod
    def is_evolving(p: Prompt) -> bool:
        return "#Instruction#:\n" in p.text

    @staticmethod
    def is_answer(p: Prompt) -> bool:
        return p.request is not None and p.request.messages[0].get("content") == PROMPTS.answer_system

    def optimize(self, p: Prompt) -> str:
        method = self.proposals.get(p.request.sampling.seed)
        return "I would change nothing." if method is None else f"Here it is.\n```Optimized Method\n{method}\n#Instruction#:\n```\n"

    @staticmethod
    def evolve(p: Prompt) -> str:
        given = instruction_of(p.text)
        if p.text.startswith("METHOD GOOD") or p.text.startswith("METHOD TWIN"):
            return f"Step 1\n#Methods List#: more\n#Finally Rewritten Instruction#: {given} Explain in depth."
        if p.text.startswith("METHOD BAD"):
            return f"#Finally Rewritten Instruction#: {given} Write at great length."
        return f"Step 4\n#Finally Rewritten Instruction#: {given} Be brief."  # the initial method, and SAME

    def answer(self, p: Prompt) -> str:
        q = p.text
        if q.endswith("Write at great length."):
            failing = any(q.startswith(t) for t in self.bad_fails)
            return ("word " * 600) + ("please provide more details" if failing else "done")
        if q.endswith("Be brief.") and any(q.startswith(t) for t in self.init_fails):
            return "Sure, what exactly do you want?"
        return ("answer " * (60 if q.endswith("Explain in depth.") else 30)).strip()


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_lower_success_is_rejected_and_better_in_both_is_accepted(tmp_path, scripted):
    cfg = config(seeds_file(tmp_path))
    dev = dev_texts(cfg)
    world = World(cfg, {(1, 0): "METHOD BAD", (1, 1): "METHOD GOOD"}, init_fails=(dev[0],), bad_fails=tuple(dev[:2]))
    scripted(*world.rules())
    stats = run_optimize(cfg, tmp_path / "opt")
    (row,) = history(tmp_path / "opt")
    bad, good = row["candidates"]
    assert row["dev"]["success"] == 0.75 and row["dev"]["success_paper"] == 0.75 and row["dev"]["success_rules"] == 1.0
    assert bad["dev"]["success"] == 0.5 and bad["dev"]["score"] > good["dev"]["score"] > row["dev"]["score"]
    assert good["dev"]["success"] == 1.0
    assert row["accepted"] == 1 and row["changed"]  # the best score lowered success: the next one wins
    method = json.loads((tmp_path / "opt" / "method.json").read_text())
    assert method["operations"][METHOD_OP]["method"] == "METHOD GOOD\n#Instruction#:\n"
    assert stats["accepted_steps"] == [1] and stats["final"]["success"] == 1.0 and stats["initial"]["success"] == 0.75
    assert row["trajectory"][0]["stage1"].endswith("Be brief.")  # the text after the final marker
    assert row["candidates"][0]["analysis"].startswith("Case 0 failed")


def test_no_optimized_method_block_keeps_the_current_method(tmp_path, scripted):
    cfg = config(seeds_file(tmp_path))
    world = World(cfg, {})  # the optimizer never answers with a block
    script = scripted(*world.rules())
    stats = run_optimize(cfg, tmp_path / "opt")
    (row,) = history(tmp_path / "opt")
    assert all(not c["optimized"] and c["method"] is None for c in row["candidates"])
    assert not row["changed"] and row["method_after"] == PROMPTS.init_method
    assert stats["accepted_steps"] == [] and not stats["final_method_changed"]
    # the candidates' dev metrics are the current method's: computed once, not asked again
    assert script.count() == stats["llm_calls"]


def test_ties_follow_the_official_rule(tmp_path, scripted):
    cfg = config(seeds_file(tmp_path), candidates=3)
    # SAME behaves as the initial method: equal success and score is enough (>=), and among equal scores
    # the first candidate in order wins.
    world = World(cfg, {(1, 0): "METHOD SAME", (1, 1): "METHOD SAME TOO", (1, 2): None})
    scripted(*world.rules())
    run_optimize(cfg, tmp_path / "opt")
    (row,) = history(tmp_path / "opt")
    assert len({json.dumps(c["dev"]) for c in row["candidates"]}) == 1
    assert row["candidates"][0]["dev"] == row["dev"]
    assert row["accepted"] == 0 and row["method_after"] == "METHOD SAME\n#Instruction#:\n"


def test_choose_is_the_official_rule():
    def m(success: float, score: float) -> DevMetrics:
        return DevMetrics(n=4, success=success, success_paper=success, success_rules=1.0, score=score)

    current = m(0.75, 2.0)
    assert choose(current, [m(0.5, 9.0), m(1.0, 3.0)]) == 1
    assert choose(current, [m(0.5, 9.0), m(0.75, 1.9)]) is None
    assert choose(current, [m(0.75, 2.0), m(0.75, 2.0)]) == 0
    assert choose(current, [m(0.8, 2.5), m(0.9, 2.5)]) == 0  # equal scores: candidate order, not success


def test_budget_stop_then_rerun_sends_no_stored_call_and_ends_at_the_same_method(tmp_path, scripted):
    cfg = config(seeds_file(tmp_path), steps=2, candidates=3)
    dev = dev_texts(cfg)
    proposals = {(1, 0): "METHOD BAD", (1, 1): "METHOD GOOD", (1, 2): None, (2, 0): "METHOD TWIN", (2, 1): None,
                 (2, 2): "METHOD BAD"}
    script = scripted(*World(cfg, proposals, init_fails=(dev[0],), bad_fails=tuple(dev[:2])).rules())
    clean = run_optimize(cfg, tmp_path / "clean")
    sent_clean = script.count()

    script.calls.clear()
    stopped = run_optimize(config(cfg.seeds, steps=2, candidates=3, max_calls=sent_clean // 2), tmp_path / "cut")
    assert stopped["stopped_by"] == "max_calls" and stopped["steps_done"] < 2
    resumed = run_optimize(cfg, tmp_path / "cut")
    assert resumed["resumed"] and resumed["cache_hits"] >= stopped["llm_calls"]
    # every request was sent once over both runs, and the loop ended where the uninterrupted one did
    assert script.count() == sent_clean
    assert len({(c.model, c.text, c.reply) for c in script.calls}) <= sent_clean
    for name in ("history.jsonl", "method.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    with sqlite3.connect(tmp_path / "cut" / "run.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == sent_clean
    assert clean["final"] == resumed["final"]


def test_method_json_is_a_template_set_that_evolve_uses(tmp_path, scripted):
    cfg = config(seeds_file(tmp_path))
    dev = dev_texts(cfg)
    scripted(*World(cfg, {(1, 1): "METHOD GOOD"}, init_fails=(dev[0],)).rules())
    run_optimize(cfg, tmp_path / "opt")
    templates = load_templates(str(tmp_path / "opt" / "method.json"))
    assert templates.ops == (METHOD_OP,)
    assert templates.render(METHOD_OP, "Do X.") == "METHOD GOOD\n#Instruction#:\nDo X."
    run = tmp_path / "run"
    stats = run_evolve(EvolveConfig(source=Source(seeds=cfg.seeds, limit=3),
                                    algorithm=Algorithm(epochs=1, templates=str(tmp_path / "opt" / "method.json")),
                                    sampling=SamplingConfig(max_tokens=64),
                                    roles=Roles(evolver=SPEC)),
                       run)
    assert stats["by_op"] == {METHOD_OP: {"attempted": 3, "kept": 3}}
    rows = [json.loads(x) for x in (run / "dataset.jsonl").read_text().splitlines()]
    evolved = [r["instruction"] for r in rows if r["epoch"] == 1]
    assert evolved and all(i.endswith("Explain in depth.") and "#" not in i for i in evolved)  # after the marker
    from evolinstruct.report import build_report

    build_report(run, tmp_path / "report.html", diversity_map=False)
    html = (tmp_path / "report.html").read_text()
    operations = html[html.index('<section id="operations">'):]
    assert METHOD_OP in operations[: operations.index("</section>")]  # the learned method is its own op


def test_split_is_disjoint_and_drawn_from_the_seed(tmp_path):
    cfg = config(seeds_file(tmp_path), holdout=3)
    seeds = read_all_seeds(cfg)
    a, b = split_seeds(seeds, cfg), split_seeds(seeds, cfg)
    ids = lambda items: {i.id for i in items}  # noqa: E731
    assert a == b
    assert not ids(a.train) & ids(a.dev) and len(a.holdout) == 3 and len(a.dev) == 4 and len(a.train) == 5
    holdout_texts = {s.instruction for s in a.holdout}
    assert not holdout_texts & {i.text for i in a.train + a.dev}
    other = split_seeds(seeds, config(cfg.seeds, holdout=3, seed=4))
    assert ids(other.dev) != ids(a.dev)
    with pytest.raises(ValueError, match="--dev-size 10 \\+ --holdout 3"):
        split_seeds(seeds, config(cfg.seeds, holdout=3, dev_size=10))


def test_prompt_pieces():
    assert extract_method("x\n```Optimized Method\n  New steps.\n```\n") == "New steps.\n"
    assert extract_method("```Method\nold\n```") is None
    assert extract_method("```Optimized Method\nnever closed") is None
    assert extract_final("Step 3\n#Rewritten Instruction#: a\nStep 4\n#Finally Rewritten Instruction#: b ",
                         PROMPTS.final_markers) == "b"
    assert extract_final("Final Rewritten Instruction: c", PROMPTS.final_markers) == "c"
    assert extract_final("just text ", PROMPTS.final_markers) == "just text"
    assert paper_failure("Sure! What is the topic?") == "question:Sure"
    assert paper_failure("Sure. Here it is.") is None
    assert paper_failure("That is NOT POSSIBLE here.") == "contains:not possible"


def test_prompts_are_the_published_ones():
    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "auto_evol_instruct_prompts.json"
    if not src.exists():
        pytest.skip("shared data not present")
    data = json.loads(src.read_text(encoding="utf-8"))
    assert PROMPTS.init_method == data["init_method"]
    assert PROMPTS.trajectory_analysis == data["trajectory_analysis"]
    assert PROMPTS.method_optimization == data["method_optimization"]
    assert PROMPTS.answer_system == data["answer_system"]
    assert list(PROMPTS.final_markers) == data["final_markers"]
    assert list(PROMPTS.question_openers) == data["failure_detector"]["starts_with_and_ends_with_question"]


def test_cli_compares_the_holdout_with_the_initial_and_the_final_method(tmp_path, scripted):
    from typer.testing import CliRunner

    from evolinstruct.cli import app

    seeds = seeds_file(tmp_path)
    cfg = config(seeds, holdout=3)
    dev = dev_texts(cfg)
    scripted(*World(cfg, {(1, 1): "METHOD GOOD"}, init_fails=(dev[0],)).rules())
    out = tmp_path / "opt"
    result = CliRunner().invoke(app, ["optimize", seeds, "-o", str(out), "--steps", "1", "--candidates", "2",
                                      "--batch-size", "3", "--dev-size", "4", "--holdout", "3", "--seed", "3",
                                      "--evol-backend", "scripted", "--evol-model", "s", "--difficulty"])
    assert result.exit_code == 0, result.output
    stats = json.loads((out / "stats.json").read_text())
    hold = stats["holdout"]
    assert hold["seeds"] == 3 and hold["initial"]["evolutions"] == 3 and hold["final"]["evolutions"] == 3
    # the final method asks for more: its kept instructions are longer
    assert hold["final"]["mean_instruction_chars"] > hold["initial"]["mean_instruction_chars"]
    assert hold["initial"]["mean_difficulty"] == 4 and hold["final"]["mean_difficulty"] == 8
    for side in ("initial", "final"):
        assert (out / "holdout" / side / "dataset.jsonl").exists()
    assert "holdout: 3 seeds" in result.output and "calls per kept evolution" in result.output
    assert "step 1:" in result.output and "mean difficulty (kept)" in result.output


def test_report_draws_the_optimization(tmp_path, scripted):
    from typer.testing import CliRunner

    from evolinstruct.cli import app

    cfg = config(seeds_file(tmp_path), steps=2)
    dev = dev_texts(cfg)
    scripted(*World(cfg, {(1, 0): "METHOD BAD", (1, 1): "METHOD GOOD"}, init_fails=(dev[0],),
                    bad_fails=tuple(dev[:2])).rules())
    run_optimize(cfg, tmp_path / "opt")
    page = tmp_path / "r" / "report.html"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "opt"), "-o", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html  # self-contained
    assert "Step 1: candidate 1 accepted" in html and "accepted at step 1" in html
    assert "+ METHOD GOOD" in html and "- You are an Instruction Rewriter" in html  # the diff
    assert "accepted, same method" in html  # step 2: no block, the method stays
    bad = CliRunner().invoke(app, ["report", str(tmp_path / "nothing"), "-o", str(page)])
    assert bad.exit_code == 2


def test_same_history_at_any_concurrency(tmp_path, scripted):
    cfg = config(seeds_file(tmp_path), steps=2, candidates=3)
    dev = dev_texts(cfg)
    scripted(*World(cfg, {(1, 0): "METHOD BAD", (1, 1): "METHOD GOOD", (2, 2): "METHOD TWIN"}, init_fails=(dev[0],),
                    bad_fails=tuple(dev[:2])).rules())
    run_optimize(cfg, tmp_path / "wide")
    run_optimize(config(cfg.seeds, steps=2, candidates=3, transport=Transport(concurrency=1)), tmp_path / "narrow")
    for name in ("history.jsonl", "method.json"):
        assert (tmp_path / "wide" / name).read_bytes() == (tmp_path / "narrow" / name).read_bytes(), name


def test_max_cost_stops_cleanly(tmp_path, scripted):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"*": {"input": 1000.0, "output": 1000.0}}))  # USD per 1M tokens: a call ~ 0.1-1 USD
    cfg = config(seeds_file(tmp_path), max_cost=2.0, prices=str(prices))
    script = scripted(*World(cfg, {}).rules())
    stats = run_optimize(cfg, tmp_path / "opt")
    assert stats["stopped_by"] == "max_cost" and stats["steps_done"] == 0 and "holdout" not in stats
    assert 0 < script.count() == stats["llm_calls"] < 20
    assert (tmp_path / "opt" / "method.json").exists()  # still the initial method, usable


def test_max_cost_holds_for_the_holdout_runs_too(tmp_path, scripted):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"*": {"input": 1000.0, "output": 1000.0}}))
    many = write_seeds(tmp_path / "many.jsonl", [f"Write about {t} in {n} lines." for t in TOPICS for n in (1, 2)])
    free = config(many, holdout=6, max_cost=1e9, prices=str(prices))
    scripted(*World(free, {}).rules())
    full = run_optimize(free, tmp_path / "full")
    assert full["holdout"]["final"]["calls"] > 0 and full["cost_usd"] > 0
    # Enough for the loop and a little more: the holdout must stop at the budget, not run on past it.
    cut = run_optimize(config(many, holdout=6, max_cost=full["cost_usd"] + 0.05, prices=str(prices)), tmp_path / "cut")
    assert cut["steps_done"] == 1 and cut["holdout"]["stopped_by"] == "max_cost"
    assert cut["stopped_by"] == "max_cost"  # not a finished optimization: the CLI says so and exits 3


def test_report_of_an_optimization_stopped_before_its_first_step_says_so(tmp_path, scripted):
    from typer.testing import CliRunner

    from evolinstruct.cli import app

    cfg = config(seeds_file(tmp_path), max_calls=3)
    scripted(*World(cfg, {}).rules())
    assert run_optimize(cfg, tmp_path / "opt")["steps_done"] == 0
    result = CliRunner().invoke(app, ["report", str(tmp_path / "opt"), "-o", str(tmp_path / "r.html")])
    # not an empty run report of "0 records": the OPT_DIR is known as one, and no step has finished
    assert result.exit_code != 0 and "history.jsonl" in result.output, result.output
    assert not (tmp_path / "r.html").exists()


def test_an_unchanged_method_is_not_evolved_twice_on_the_holdout(tmp_path, scripted):
    cfg = config(seeds_file(tmp_path), holdout=3)
    script = scripted(*World(cfg, {}).rules())  # no candidate carries a block: the final method is the initial
    stats = run_optimize(cfg, tmp_path / "opt")
    hold = stats["holdout"]
    assert not stats["final_method_changed"] and hold["final"] == hold["initial"] and hold["initial"]["evolutions"] == 3
    assert hold["final_is_initial"] is True
    # the same prompts, seeds and sampling would be the same run: sent once (loop + one side), not twice
    assert script.count() == stats["llm_calls"] + hold["initial"]["calls"]
