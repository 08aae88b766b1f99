"""`evolinstruct score`: robust parsing, heuristics, prompts, and scoring a real run with the embedded model."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import jinja2
import pytest
from typer.testing import CliRunner

from evolinstruct.cli import app
from evolinstruct.evolve.templates import load_templates
from evolinstruct.models.base import ModelSpec, Request, Result
from evolinstruct.models.guide import TokenGuide, fits, head_complete
from evolinstruct.quality.score.heuristics import (
    HEURISTIC_SCORERS,
    TokenCounter,
    code_kinds,
    count_constraints,
    count_steps,
    data_kinds,
    heuristic_scores,
    mtld,
)
from evolinstruct.quality.score.parsing import (
    DIFFICULTY_HEAD,
    parse_difficulty,
    parse_difficulty_head,
    parse_ranking,
    parse_ranking_head,
    ranking_head,
)
from evolinstruct.quality.score.run import (
    ScoreOptions,
    ScoreProgress,
    Scorers,
    model_spec,
    plan_llm_jobs,
    render_complexity,
    render_quality,
    resolve_guide,
)
from evolinstruct.records import Record
from evolinstruct.store import RunStore, call_key
from runhelpers import EXAMPLES

runner = CliRunner()


# ------------------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("7", 7.0),
        ("Score: 7/10", 7.0),
        ("I'd rate this 8 out of 10", 8.0),
        ("**6**", 6.0),
        ("## Score: 9", 9.0),
        ("Score: 7.5", 7.5),
        ("On a scale of 1 to 10, I would give it a 4.", 4.0),
        ("Difficulty (1-10): 5", 5.0),
        ("seven", 7.0),
        ("The score is 10.", 10.0),
        ("Question 2 is tricky. Score: 8", 8.0),
        ("8.\n\n## Question: 2", 8.0),
        ("Rating: 6 out of 10", 6.0),
        # failures: junk, out of range, a list instead of a rating
        ("", None),
        ("I cannot rate this question.", None),
        ("11", None),
        ("0", None),
        ("Score: 15/10", None),
        ("1. **Avoid screens**\n2. **Keep a schedule**", None),
        ("### 1. Solar Energy\nSolar energy is clean", None),
    ],
)
def test_parse_difficulty(answer: str, expected: float | None) -> None:
    value, error = parse_difficulty(answer)
    assert value == expected
    assert (error is None) == (expected is not None)


@pytest.mark.parametrize(
    ("answer", "n", "scores", "failed"),
    [
        ("[1] Score: 2\n[2] Score: 3\n[3] Score: 1", 3, {1: 2.0, 2: 3.0, 3: 1.0}, set()),
        ("**[1] Score: 2**\n[2] score 1", 2, {1: 2.0, 2: 1.0}, set()),
        ("1. 2\n2. 3", 2, {1: 2.0, 2: 3.0}, set()),
        ("Score: 2\nScore: 1", 2, {1: 2.0, 2: 1.0}, set()),
        ("[1] Score: 2\n[2] Score: 9", 2, {1: 2.0}, {2}),  # 9 is beyond n+1
        ("[2] Score: 1", 3, {2: 1.0}, {1, 3}),
        ("[1] Score: 1\n[1] Score: 3\n[2] Score: 2", 2, {1: 1.0, 2: 2.0}, set()),  # the first one wins
        ("The first question is harder.", 2, {}, {1, 2}),
        ("", 2, {}, {1, 2}),
    ],
)
def test_parse_ranking(answer: str, n: int, scores: dict[int, float], failed: set[int]) -> None:
    found, bad = parse_ranking(answer, n)
    assert found == scores
    assert set(bad) == failed


# ------------------------------------------------------------------------------------------ guided heads
def test_difficulty_head_needs_its_newline() -> None:
    # The embedded tokenizer writes 10 as "1" + "0": the head must not be complete after "1".
    assert fits(DIFFICULTY_HEAD, "") and fits(DIFFICULTY_HEAD, "1") and fits(DIFFICULTY_HEAD, "10")
    assert not head_complete(DIFFICULTY_HEAD, "1") and not head_complete(DIFFICULTY_HEAD, "10")
    assert head_complete(DIFFICULTY_HEAD, "10\n") and head_complete(DIFFICULTY_HEAD, "7\nbecause 3")
    for bad in ("0", "11", "15", "7.", " 7", "Score", "100"):
        assert not fits(DIFFICULTY_HEAD, bad), bad


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("7\n", 7.0),
        ("10\nIt has 3 parts, 2 of them hard.", 10.0),  # read from the head only
        ("1\n", 1.0),
        ("1", None),  # cut off before the head ended: 1 or 10?
        ("", None),
        ("Score: 7", None),  # not a guided answer
    ],
)
def test_parse_difficulty_head(answer: str, expected: float | None) -> None:
    value, error = parse_difficulty_head(answer)
    assert value == expected
    assert (error is None) == (expected is not None)


def test_ranking_head_and_its_parse() -> None:
    head = ranking_head(3)
    assert head_complete(head, "[1] Score: 2\n[2] Score: 4\n[3] Score: 1\nThe second one is hardest.")
    assert fits(head, "[1] Score: 2\n[2] Sc") and not head_complete(head, "[1] Score: 2\n[2] Score: 1\n")
    for bad in ("[2]", "[1] Score: 5", "[1] Score: 0", "[1] Score: 2\n[3]", "[1] score: 2", "1. 2"):
        assert not fits(head, bad), bad
    assert fits(ranking_head(9), "[1] Score: 10\n") and not fits(ranking_head(9), "[1] Score: 11")

    found, bad = parse_ranking_head("[1] Score: 2\n[2] Score: 4\n[3] Score: 1\n[4] Score: 9", 3)
    assert found == {1: 2.0, 2: 4.0, 3: 1.0} and bad == {}
    found, bad = parse_ranking_head("[1] Score: 2\n[2] Score: 3", 3)  # cut off inside the second line
    assert found == {1: 2.0} and set(bad) == {2, 3}
    found, bad = parse_ranking_head("", 2)
    assert found == {} and bad == {1: "empty answer", 2: "empty answer"}


@pytest.mark.parametrize("head", [DIFFICULTY_HEAD, ranking_head(3), ranking_head(10)])
def test_heads_are_reachable_token_by_token(head: str) -> None:
    """The guide (models/guide.py) can always extend a partial head, with tokens the way the embedded
    tokenizer cuts them (single digits, words with their leading space), even when the model's favourite
    tokens never fit: greedy decoding of a guided answer always completes its head."""
    pieces = ["", "<eos>", "I", " think", " Score", "Score", ":", " ", "[", "]", "\n", "\n\n", ".", *"0123456789"]
    guide = TokenGuide(pieces, stop_ids=[1])
    ranked = [2, 3, 12, 1, 11]  # the model would rather write prose, a full stop or stop
    text = ""
    for _ in range(200):
        if head_complete(head, text):
            break
        allowed = guide.allowed(head, text, ranked)
        assert allowed and 1 not in allowed  # never stops inside the head
        text += pieces[allowed[-1]]  # any allowed token keeps the head reachable: take the last one
    assert head_complete(head, text)


def test_resolve_guide_by_capability() -> None:
    local, served = ModelSpec(backend="local"), ModelSpec(backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    assert resolve_guide("auto", local) is True and resolve_guide("on", local) is True
    assert resolve_guide("off", local) is False
    assert resolve_guide("auto", served) is False and resolve_guide("off", served) is False
    with pytest.raises(ValueError, match="--guide on needs an in-process"):
        resolve_guide("on", served)
    with pytest.raises(ValueError, match="--guide must be one of"):
        resolve_guide("yes", local)


class _FakeLLM:
    """CachedLLM's call, answering every request with one text and keeping the requests."""

    model = "fake"

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[Request] = []

    async def __call__(self, purpose: str, request: Request) -> Result:
        self.requests.append(request)
        return Result(text=self.text)


@pytest.mark.parametrize("guided", [True, False])
def test_scorers_guide_their_requests(guided: bool) -> None:
    import asyncio

    record = _record("s-a", "s-a", 0)
    group = [record, _record("e-a1", "s-a", 1)]
    answers = {"difficulty": "10\nIt has 3 steps.", "complexity": "[1] Score: 1\n[2] Score: 3\nsee [1] Score: 2"}
    rows = {}
    for scorer, text in answers.items():
        llm = _FakeLLM(text)
        scorers = Scorers(llm=llm, templates=load_templates("paper"), stored={}, options=ScoreOptions(),  # type: ignore[arg-type]
                          progress=ScoreProgress(), guided=guided)
        rows[scorer] = asyncio.run(scorers.difficulty(record) if scorer == "difficulty" else scorers.complexity(group))
        (request,) = llm.requests
        assert request.guide == ((DIFFICULTY_HEAD if scorer == "difficulty" else ranking_head(2)) if guided else None)
        unguided = Request(request.messages, request.sampling)
        assert (call_key("fake", request) != call_key("fake", unguided)) == guided  # its own stored call
    ((_, _, difficulty, detail),) = rows["difficulty"]
    assert detail["guided"] is guided
    # guided: the head only; unguided: the lenient parser, which also reads the head's 10 here
    assert difficulty == 10.0
    assert [row[2] for row in rows["complexity"]] == [1.0, 3.0]


def test_guide_on_with_a_served_model_fails_before_anything_runs(tmp_path: Path) -> None:
    store = _store_with(tmp_path, config={"evolver": {"backend": "local", "model": None}})
    store.close()
    run_dir = tmp_path / "run"
    before = sorted(p.name for p in run_dir.iterdir())
    # No server listens at port 9: the check comes before any call, and before the heuristics are written.
    result = runner.invoke(app, ["score", str(run_dir), "--backend", "openai", "--model", "m",
                                 "--base-url", "http://127.0.0.1:9/v1", "--guide", "on"])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("error:") and "--guide on" in message and "openai" in message and "\n" not in message
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no stats.json, no dataset.jsonl
    store = RunStore(run_dir)
    try:
        assert store.scores() == {}
    finally:
        store.close()
    result = runner.invoke(app, ["score", str(run_dir), "--guide", "maybe"])
    assert result.exit_code == 2 and "--guide must be one of auto, on, off" in result.output


# ------------------------------------------------------------------------------------------ heuristics
def test_constraints_and_steps() -> None:
    assert count_constraints("Write a poem in 50 words. It must rhyme and should not mention the sea.") == 3
    assert count_constraints("Write a poem about the sea.") == 0
    assert count_steps("First, boil water. Then add pasta. Finally, drain it.") == 3
    assert count_steps("Make tea:\n1. Boil water\n2. Steep\n- Serve") == 3
    assert count_steps("Explain recursion step by step.") == 1
    assert count_steps("Explain recursion.") == 0


def test_code_and_data_detection() -> None:
    assert "fenced" in code_kinds("Fix this:\n```python\nprint(1)\n```")
    assert code_kinds("def area(r):\n    return 3.14 * r * r") == ["python"]
    assert "html" in code_kinds("Style <div class='box'>hi</div> in red")
    assert "shell" in code_kinds("$ ls -la /tmp\nexplain the output")
    assert code_kinds("Explain recursion to a child, then print a summary.") == []

    assert data_kinds('Given {"name": "Ann", "age": 3}, greet her.') == ["json"]
    assert data_kinds("| name | age |\n|---|---|\n| Ann | 3 |") == ["table"]
    assert data_kinds("name,age\nAnn,3\nBob,4\nCyd,5") == ["csv"]
    assert data_kinds("<book><title>Dune</title></book>") == ["xml"]
    assert data_kinds("CREATE TABLE users (id INT, name TEXT); count them") == ["sql"]
    # prose that merely looks a bit like data
    assert data_kinds("Select the best answer from the list [a].") == []
    assert data_kinds("I have 3 apples, 2 pears, and a plum.\nShe has one.") == []
    assert data_kinds("Make the <b>word</b> bold.") == []


def test_mtld() -> None:
    assert mtld("") == 0.0
    assert mtld("a a a a a a a a") == 2.0  # TTR falls to 0.5 every 2 words: 4 factors over 8 words
    assert mtld("one two three four five") == 5.0  # never falls to 0.72: the text is one factor
    repetitive = "the cat sat on the mat and the cat sat on the mat " * 4
    varied = ("Rayleigh scattering bends shorter blue wavelengths more strongly than red ones, so daylight "
              "arriving from every direction of the sky looks blue while sunsets glow orange and crimson.")
    assert mtld(varied) > mtld(repetitive)


@pytest.mark.slow  # the embedded model's tokenizer
def test_heuristic_scores_of_a_record() -> None:
    tokens = TokenCounter()
    assert tokens.name == "SmolLM2-135M-Instruct"  # the embedded tokenizer, not the word-count fallback
    assert tokens.count("") == 0
    assert 50 <= tokens.count("apple " * 50) <= 101
    record = Record(
        id="s-1", root_id="s-1", parent_id=None, epoch=0, op="seed",
        instruction="Rewrite the function so that it must run in O(n).",
        input="def f(xs):\n    return sorted(xs)[0]", output="Use min(xs).",
    )
    scores = {s.scorer: s for s in heuristic_scores(record, tokens)}
    assert tuple(scores) == HEURISTIC_SCORERS
    assert scores["has_code"].value == 1.0 and scores["has_data"].value == 0.0
    assert scores["n_constraints"].value == 1.0
    assert scores["length_tokens"].value > scores["length_tokens"].detail["response_tokens"] > 0
    assert scores["lexical_diversity"].value > 0


# ------------------------------------------------------------------------------------------ prompts
def test_difficulty_prompt_is_the_papers(shared_data: Path) -> None:
    source = json.loads((shared_data / "prompts" / "wizardlm_evol_and_paper_prompts.json").read_text("utf-8"))
    paper = source["paper_only_prompts"]["difficulty_rating"]
    for name in ("paper", "repo"):
        rendered = load_templates(name).render_difficulty("Explain {why} the sky is blue.")
        assert rendered == paper.replace("< Here is instruction. >", "Explain {why} the sky is blue.")


# DEITA's ranking prompts as distilabel's Jinja templates write them (the reference for our plain rendering).
DISTILABEL_COMPLEXITY = (
    "Ranking the following questions according to the difficulty and complexity. Score 1-{{ instructions|length }}.\n"
    "You can give a score of {{ (instructions|length) + 1 }} if the question is too complex for you to answer it. "
    "You should\nrespond with the format:\n[1] Score: 1\n[2] Score: 2\n...\n{% for instruction in instructions %}\n"
    "[{{ loop.index }}] {{ instruction }}\n{%- endfor %}\n"
)
DISTILABEL_QUALITY_HEAD = (
    "Rank the following pair of instructions and responses according to their quality. Your evaluation should "
    "consider factors such as helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. Score 1-{{ responses|length }}.\nScore each response from 1 to {{ responses|length }}, with "
    "{{ (responses|length) + 1}} reserved for responses that are already very well written and cannot be improved "
    "further. You should respond with the format:\n[1] Score: 1\n[2] Score: 2\n...\n"
)


def test_ranking_prompts_follow_deita() -> None:
    questions = ["Give three tips.", "Give three tips, each under {10} words."]
    expected = jinja2.Template(DISTILABEL_COMPLEXITY, keep_trailing_newline=True).render(instructions=questions)
    assert render_complexity(questions) == expected
    head = jinja2.Template(DISTILABEL_QUALITY_HEAD, keep_trailing_newline=True).render(responses=[1, 2, 3])
    prompt = render_quality([("q1", "r1"), ("q2", "r2"), ("q3", "r3")])
    assert prompt.startswith(head)
    assert prompt.endswith("[3] #Question#: q3\n#Response#: r3\n")


def _record(rid: str, root: str, epoch: int, output: str = "an answer") -> Record:
    return Record(id=rid, root_id=root, parent_id=None if epoch == 0 else root, epoch=epoch,
                  op="seed" if epoch == 0 else "deepening", instruction=f"task {rid}", output=output)


def test_rankings_group_lineages_and_skip_single_items() -> None:
    records = [_record("s-a", "s-a", 0), _record("e-a1", "s-a", 1), _record("e-a2", "s-a", 2, output=""),
               _record("s-b", "s-b", 0)]
    progress = ScoreProgress()
    scorers = Scorers(llm=None, templates=load_templates("paper"), stored={}, options=ScoreOptions(),  # type: ignore[arg-type]
                      progress=progress)
    jobs = plan_llm_jobs(scorers, ["difficulty", "complexity", "quality"], records, progress)
    assert len(jobs) == 4 + 1 + 1  # a call per record, a ranking per lineage with 2+ items
    # s-b is alone; for quality, e-a2 has no response, so lineage s-a ranks 2 pairs
    assert progress.skipped == {"complexity": 1, "quality": 1}


def _store_with(tmp_path: Path, **meta: dict) -> RunStore:
    store = RunStore(tmp_path / "run")
    for key, value in meta.items():
        store.set_meta(key, value)
    return store


def test_scoring_model_defaults_to_the_runs_evolver(tmp_path: Path) -> None:
    # A run made before runs kept their roles: only the bound config's backend and model.
    store = _store_with(tmp_path, config={"evolver": {"backend": "openai", "model": "llama-8b"}})
    try:
        spec = model_spec(store, ScoreOptions())
        assert (spec.backend, spec.model, spec.base_url) == ("openai", "llama-8b", None)
        spec = model_spec(store, ScoreOptions(base_url="http://127.0.0.1:9/v1"))
        assert (spec.backend, spec.model, spec.base_url) == ("openai", "llama-8b", "http://127.0.0.1:9/v1")
        spec = model_spec(store, ScoreOptions(backend="local"))
        assert (spec.backend, spec.model) == ("local", None)  # the embedded model, not the server's name
        # A run that keeps its roles: its evolver's endpoint too, unless --base-url says otherwise.
        store.set_meta("roles", {"evolver": {"backend": "openai", "model": "llama-8b", "base_url": "http://127.0.0.1:8/v1"},
                                 "responder": None, "judge": None})
        spec = model_spec(store, ScoreOptions())
        assert (spec.backend, spec.model, spec.base_url) == ("openai", "llama-8b", "http://127.0.0.1:8/v1")
        spec = model_spec(store, ScoreOptions(base_url="http://127.0.0.1:9/v1"))
        assert (spec.backend, spec.model, spec.base_url) == ("openai", "llama-8b", "http://127.0.0.1:9/v1")
    finally:
        store.close()
    local_run = _store_with(tmp_path / "local", config={"evolver": {"backend": "local", "model": None}})
    try:
        spec = model_spec(local_run, ScoreOptions())
        assert (spec.backend, spec.model) == ("local", None)
    finally:
        local_run.close()


# ------------------------------------------------------------------------------------------ the command
def test_score_outside_a_run_dir_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["score", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith("error:") and "run.sqlite" in message and "\n" not in message
    assert not (tmp_path / "nothing").exists()  # nothing was created


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-seed, 1-epoch run made with the embedded model."""
    run_dir = tmp_path_factory.mktemp("score") / "run"
    result = runner.invoke(app, EVOLVE_ARGS + ["-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir


EVOLVE_ARGS = ["evolve", str(EXAMPLES), "--limit", "2", "--epochs", "1", "--max-tokens", "16", "--no-equality-check"]


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run_dir, target)
    return target


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "dataset.jsonl").read_text("utf-8").splitlines()]


def _stats(run_dir: Path) -> dict:
    return json.loads((run_dir / "stats.json").read_text("utf-8"))


@pytest.mark.slow
def test_difficulty_end_to_end(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(tiny_run, tmp_path)
    result = runner.invoke(app, ["score", str(run_dir), "--max-tokens", "8"])  # default: heuristics + difficulty
    assert result.exit_code == 0, result.output
    rows, stats = _rows(run_dir), _stats(run_dir)
    n = len(rows)
    assert n >= 2
    for row in rows:
        assert set(row["scores"]) == {"difficulty", *HEURISTIC_SCORERS}
    values = [row["scores"]["difficulty"] for row in rows]
    summary = stats["scores"]["difficulty"]
    assert summary["scored"] == sum(v is not None for v in values)
    assert summary["parse_failures"] == sum(v is None for v in values)
    assert all(1 <= v <= 10 for v in values if v is not None)
    # scoring's calls sit next to evolve's, in the per-purpose tables and the store's token totals
    assert stats["calls_by_purpose"]["sent"]["score_difficulty"] == n
    assert stats["calls_by_purpose"]["sent"]["evolve"] >= 2
    assert stats["tokens"]["by_purpose"]["score_difficulty"]["calls"] == n
    assert stats["seeds"] == 2  # evolve's own stats are still there

    # Inject one unparseable answer into the stored calls: the rerun replays it (0 calls sent), keeps
    # the raw answer, stores NULL and counts the failure.
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        db.execute("UPDATE calls SET response = 'I would rather not say.' WHERE key = "
                   "(SELECT key FROM calls WHERE purpose = 'score_difficulty' ORDER BY key LIMIT 1)")
    result = runner.invoke(app, ["score", str(run_dir), "--difficulty", "--max-tokens", "8"])
    assert result.exit_code == 0, result.output
    stats = _stats(run_dir)
    assert stats["score_run"]["llm_calls"] == 0 and stats["score_run"]["cache_hits"] == n
    assert stats["calls_by_purpose"]["sent"]["score_difficulty"] == 0
    store = RunStore(run_dir)
    try:
        details = [json.loads(d) for (d,) in store.db.execute(
            "SELECT detail FROM scores WHERE scorer = 'difficulty' AND value IS NULL")]
        scored = store.scores()
    finally:
        store.close()
    assert any(d["raw"] == "I would rather not say." and d["error"] for d in details)
    assert stats["scores"]["difficulty"]["parse_failures"] == len(details) >= 1
    assert stats["score_run"]["parse_failures"]["difficulty"] == len(details)
    rows = _rows(run_dir)
    assert {row["id"]: row["scores"] for row in rows} == scored

    # export and a resumed evolve carry the scores too
    out = tmp_path / "mix.jsonl"
    assert runner.invoke(app, ["export", str(run_dir), "-f", "alpaca", "-o", str(out)]).exit_code == 0
    exported = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert [e["scores"] for e in exported] == [row["scores"] for row in rows]
    result = runner.invoke(app, EVOLVE_ARGS + ["-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert [row["scores"] for row in _rows(run_dir)] == [row["scores"] for row in rows]
    assert _stats(run_dir)["scores"]["difficulty"]["parse_failures"] == len(details)


def _plant_child(run_dir: Path) -> tuple[Record, list[Record]]:
    """Plant a second-epoch evolution so that at least one lineage has something to rank: (its seed, the kept records)."""
    store = RunStore(run_dir)
    try:
        seed = next(r for r in store.iter_records() if r.epoch == 0)
        child = Record(
            id="e-planted", root_id=seed.root_id, parent_id=seed.id, epoch=2, op="add_constraints",
            instruction=seed.instruction + " Use exactly three bullet points of at most ten words each.",
            output="- Keep a fixed bedtime\n- Avoid screens late\n- Keep the room cool", model="hand-written",
        )
        store.save_step([child], 0, 2, child.id, "done")
        return seed, list(store.iter_records("kept"))
    finally:
        store.close()


@pytest.mark.slow
def test_rankings_score_a_lineage_together(tiny_run: Path, tmp_path: Path) -> None:
    run_dir = _copy(tiny_run, tmp_path)
    seed, kept = _plant_child(run_dir)
    lineage = [r for r in kept if r.root_id == seed.root_id]
    n = len(lineage)
    assert n >= 2 and kept[:n] == lineage  # the store lists a seed's lineage first, seed first
    # --limit keeps the test to one lineage (one call per ranking); the other seed is left unscored.
    args = ["score", str(run_dir), "--complexity", "--quality", "--limit", str(n)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = _stats(run_dir)
    rows = {row["id"]: row["scores"] for row in _rows(run_dir) if "scores" in row}
    assert set(rows) == {r.id for r in lineage}
    for scorer in ("complexity", "quality"):
        assert stats["calls_by_purpose"]["sent"][f"score_{scorer}"] == 1
        values = [rows[r.id][scorer] for r in lineage]
        assert all(v is None or 1 <= v <= n + 1 for v in values)
        summary = stats["scores"][scorer]
        assert summary["parse_failures"] == sum(v is None for v in values)
        assert summary["scored"] == n - summary["parse_failures"]
        assert stats["score_run"]["parse_failures"].get(scorer, 0) == summary["parse_failures"]
    store = RunStore(run_dir)
    try:
        details = [json.loads(d) for (d,) in store.db.execute("SELECT detail FROM scores WHERE scorer = 'complexity'")]
    finally:
        store.close()
    assert sorted(d["position"] for d in details) == list(range(1, n + 1))
    assert len({d["raw"] for d in details}) == 1  # one answer ranked the whole lineage

    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _stats(run_dir)["score_run"]["llm_calls"] == 0


@pytest.mark.slow
def test_guided_scores_of_the_embedded_model_all_parse(tiny_run: Path, tmp_path: Path) -> None:
    """The embedded model is in-process, so `--guide auto` guides it: every difficulty and ranking parses."""
    run_dir = _copy(tiny_run, tmp_path)
    _plant_child(run_dir)  # a lineage of 2+ records, for the ranking
    args = ["score", str(run_dir), "--difficulty", "--complexity"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(guided)" in result.output
    rows, stats = _rows(run_dir), _stats(run_dir)
    assert len(rows) >= 2
    values = [row["scores"]["difficulty"] for row in rows]
    assert all(v is not None and 1 <= v <= 10 for v in values), values
    assert stats["score_run"]["guide"] == "on"
    assert stats["score_run"]["parse_failures"] == {}
    assert stats["scores"]["difficulty"] == {**stats["scores"]["difficulty"], "scored": len(rows), "parse_failures": 0}
    ranked = [row["scores"]["complexity"] for row in rows if "complexity" in row["scores"]]
    assert ranked and all(v is not None for v in ranked)
    store = RunStore(run_dir)
    try:
        details = [json.loads(d) for (d,) in store.db.execute("SELECT detail FROM scores WHERE scorer = 'difficulty'")]
    finally:
        store.close()
    assert all(d["guided"] and parse_difficulty_head(d["raw"])[0] is not None for d in details)

    # The same setting again: every call is replayed. Unguided calls are other calls (the key has the guide).
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _stats(run_dir)["score_run"]["llm_calls"] == 0
    result = runner.invoke(app, ["score", str(run_dir), "--difficulty", "--guide", "off", "--max-tokens", "4"])
    assert result.exit_code == 0, result.output
    run = _stats(run_dir)["score_run"]
    assert run["guide"] == "off" and run["llm_calls"] == len(rows) and run["cache_hits"] == 0
