"""The conversation task (--task conversation): seeds, the last-turn operations and the follow-up, per-turn
elimination, --max-turns, export and train. Chain logic on the scripted backend; the loss mask with the
embedded model's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolinstruct.evolve.config import Algorithm, EvolveConfig, Roles, SamplingConfig, Source
from evolinstruct.evolve.export import convert
from evolinstruct.evolve.rules import NO_INFORMATION_GAIN
from evolinstruct.evolve.run import run_evolve
from evolinstruct.evolve.tasks.conversation import CONTEXT, FOLLOW_UP, NOT_A_FOLLOW_UP, not_a_follow_up
from evolinstruct.evolve.templates import load_templates
from evolinstruct.models.base import ModelSpec, Transport
from evolinstruct.seeds import SeedColumns, SeedError, read_seeds
from evolinstruct.train.data import read_examples
from runhelpers import simserver
from scripted import on

SCRIPTED = ModelSpec(backend="scripted", model="s")
SHAREGPT = {"id": "tea", "conversations": [
    {"from": "system", "value": "You are a patient cooking teacher."},
    {"from": "human", "value": "How do I brew green tea?"},
    {"from": "gpt", "value": "Heat water to about 80 degrees, steep the leaves for two minutes, then pour."},
    {"from": "human", "value": "Why not boiling water?"},
    {"from": "gpt", "value": "Boiling water scalds the leaves and makes the tea bitter."},
    {"from": "human", "value": "How long can I keep brewed tea in the fridge?"},
    {"from": "gpt", "value": "About two days, covered."},
]}


def write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def config(seeds: str, ops: str | None = None, epochs: int = 1, max_turns: int | None = None,
           concurrency: int = 4) -> EvolveConfig:
    options = {"max_turns": max_turns} if max_turns else {}
    return EvolveConfig(source=Source(seeds=seeds),
                        algorithm=Algorithm(epochs=epochs, task="conversation", op_weights=ops, task_options=options),
                        sampling=SamplingConfig(max_tokens=64), roles=Roles(evolver=SCRIPTED),
                        transport=Transport(concurrency=concurrency))


def read(run_dir: Path, name: str = "dataset.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text(encoding="utf-8").splitlines()]


def recorder(sent: list) -> tuple:
    """A rule that never matches and keeps every request (to look at the messages sent)."""
    return (lambda p: sent.append(p) and False, "")


def test_seed_formats_sharegpt_openai_mtbench_and_plain_rows(tmp_path):
    openai = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                           {"role": "user", "content": "Tell me a joke."}]}
    mtbench = {"question_id": 81, "turns": ["Write a travel blog post.", "Rewrite it with every sentence starting with A."]}
    path = write_rows(tmp_path / "mixed.jsonl", [SHAREGPT, openai, mtbench, {"instruction": "Describe snow."}])
    seeds = list(read_seeds(path, SeedColumns(conversations=True)))
    tea, joke, blog, snow = seeds
    assert tea.instruction == "How long can I keep brewed tea in the fridge?" and tea.output == "About two days, covered."
    assert [m["role"] for m in tea.history] == ["system", "user", "assistant", "user", "assistant"]
    assert joke.instruction == "Tell me a joke." and joke.output == "" and len(joke.history) == 2
    assert blog.history == [{"role": "user", "content": "Write a travel blog post."}, {"role": "assistant", "content": ""}]
    assert snow.history == [] and snow.instruction == "Describe snow."
    with pytest.raises(SeedError, match="--task conversation"):  # the chat task still refuses them
        list(read_seeds(path))


@pytest.mark.parametrize(("row", "message"), [
    ({"conversations": [{"from": "robot", "value": "x"}]}, "turn 1 of 'conversations' has an unknown speaker"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "turns 1 and 2"),
    ({"messages": [{"role": "user", "content": 3}]}, "turn 1 of 'messages' needs"),
    ({"turns": []}, "'turns' must be a non-empty list"),
    ({"messages": [{"role": "system", "content": "s"}]}, "no user turn"),
])
def test_a_bad_conversation_row_is_one_line_naming_file_and_line(tmp_path, row, message):
    path = write_rows(tmp_path / "bad.jsonl", [{"instruction": "ok"}, row])
    with pytest.raises(SeedError) as err:
        list(read_seeds(path, SeedColumns(conversations=True)))
    assert str(err.value).startswith(f"{path}:2: ") and message in str(err.value) and "\n" not in str(err.value)


def test_a_last_turn_operation_rewrites_the_last_user_turn_in_context(tmp_path, scripted):
    sent: list = []
    script = scripted(recorder(sent))
    stats = run_evolve(config(write_rows(tmp_path / "s.jsonl", [SHAREGPT]), ops="add_constraints=1"), tmp_path / "run")
    seed, child = read(tmp_path / "run")
    assert seed["history"] == child["history"] and len(child["history"]) == 5  # the earlier turns, unchanged
    assert child["op"] == "add_constraints" and child["instruction"].startswith("How long can I keep brewed tea")
    assert child["instruction"] != seed["instruction"]
    (evolving,) = [p for p in sent if p.purpose == "evolve"]
    prompt = evolving.request.messages[-1]["content"]
    paper = load_templates("paper").render("add_constraints", seed["instruction"])
    assert prompt.endswith(paper)  # the published prompt, byte-exact, after the context
    assert prompt.startswith(CONTEXT.split("{conversation}")[0]) and "Assistant: Boiling water scalds" in prompt
    # The new turn is answered with the whole history; the judge compared it with the turn it replaced.
    answer = next(p for p in sent if p.purpose == "answer" and p.text == child["instruction"])
    assert answer.request.messages[:-1] == child["history"]
    (judged,) = [p for p in sent if p.purpose == "equality"]
    assert judged.given == seed["instruction"] and judged.second == child["instruction"]
    assert stats["task"]["name"] == "conversation" and script.count("equality") == 1


def test_a_follow_up_adds_a_turn_then_the_cap_allows_only_rewrites(tmp_path, scripted):
    sent: list = []
    scripted(recorder(sent))
    seeds = write_rows(tmp_path / "s.jsonl", [SHAREGPT])
    stats = run_evolve(config(seeds, ops="follow_up=1", epochs=2, max_turns=4), tmp_path / "run")
    seed, first, second = read(tmp_path / "run")
    assert first["op"] == FOLLOW_UP and first["parent_id"] == seed["id"]
    assert first["history"] == [*seed["history"], {"role": "user", "content": seed["instruction"]},
                                {"role": "assistant", "content": seed["output"]}]
    assert first["follow_up"]["shared_words"] > 0
    # Four user turns now: at --max-turns 4 the next epoch rewrites the last turn instead.
    assert second["op"] != FOLLOW_UP and second["history"] == first["history"]
    assert stats["task"]["user_turns_kept"] == {"3": 1, "4": 2}
    assert not any(p.purpose == "equality" and p.second == first["instruction"] for p in sent)  # no judge for it
    # Export keeps every turn; train reads the whole conversation back.
    rows = read(tmp_path / "run")
    sharegpt = list(convert(rows, "sharegpt"))
    assert [t["from"] for t in sharegpt[1]["conversations"]] == ["system"] + ["human", "gpt"] * 4
    openai = list(convert(rows, "openai"))
    assert openai[1]["messages"][-2:] == [{"role": "user", "content": first["instruction"]},
                                         {"role": "assistant", "content": first["output"]}]
    path = tmp_path / "export.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in sharegpt))
    from_export, from_run = list(read_examples(path)), list(read_examples(tmp_path / "run" / "dataset.jsonl"))
    assert [e.history for e in from_export] == [e.history for e in from_run]
    assert from_run[1].prompt == first["instruction"] and len(from_run[1].history) == 7


def test_a_follow_up_that_ignores_the_conversation_is_eliminated(tmp_path, scripted):
    scripted((on("evolve"), "Name a famous painter from the Renaissance period."))
    stats = run_evolve(config(write_rows(tmp_path / "s.jsonl", [SHAREGPT]), ops="follow_up=1"), tmp_path / "run")
    (gone,) = read(tmp_path / "run", "eliminated.jsonl")
    assert gone["reason"] == NOT_A_FOLLOW_UP and gone["evidence"]["shared_words"] == 0
    assert stats["calls_by_purpose"]["sent"].get("equality", 0) == 0
    verdict, _ = not_a_follow_up("Could you shorten your answer to one line?", [{"role": "user", "content": "Hi"}])
    assert verdict is None  # a reference to the conversation is enough
    verdict, _ = not_a_follow_up("how long can I keep brewed tea", [{"role": "user", "content": "How long can I keep brewed tea"}])
    assert verdict is not None and verdict.evidence["repeats_last_turn"]


def test_a_rewritten_turn_judged_equal_is_eliminated(tmp_path, scripted):
    scripted((on("equality"), "Equal"))
    run_evolve(config(write_rows(tmp_path / "s.jsonl", [SHAREGPT]), ops="deepening=1"), tmp_path / "run")
    (gone,) = read(tmp_path / "run", "eliminated.jsonl")
    assert gone["reason"] == NO_INFORMATION_GAIN and len(gone["history"]) == 5


def test_mtbench_turns_are_answered_in_order_then_evolved_the_same_at_any_concurrency(tmp_path, scripted):
    sent: list = []
    scripted(recorder(sent))
    rows = [{"turns": [f"Write a short poem about {t}.", "Now make it rhyme.", "Give it a title."]}
            for t in ("rain", "owls", "maps", "salt", "bells", "kites")]
    seeds = write_rows(tmp_path / "mt.jsonl", rows)
    one = run_evolve(config(seeds, epochs=2, concurrency=1), tmp_path / "c1")
    seed = read(tmp_path / "c1")[0]
    assert [m["role"] for m in seed["history"]] == ["user", "assistant"] * 2
    assert all(m["content"].startswith("Answer:") for m in seed["history"] if m["role"] == "assistant")
    second_turn = next(p for p in sent if p.purpose == "answer" and p.text == "Now make it rhyme.")
    assert second_turn.request.messages[1]["content"] == seed["history"][1]["content"]  # answered with turn 1's answer
    many = run_evolve(config(seeds, epochs=2, concurrency=32), tmp_path / "c32")
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert (tmp_path / "c1" / name).read_bytes() == (tmp_path / "c32" / name).read_bytes()
    assert one["task"] == many["task"] and many["llm_calls"] == one["llm_calls"]


@pytest.mark.slow
@pytest.mark.parametrize("prompt_format", ["paper", "chat"])
def test_the_loss_mask_covers_exactly_the_assistant_turns(tmp_path, prompt_format):
    from evolinstruct.models.embedded import resolve_model_path
    from evolinstruct.train.formats import conversation, tokenized_row
    from evolinstruct.train.trainer import load_tokenizer

    tokenizer = load_tokenizer(resolve_model_path("embedded")[0], prompt_format)
    path = write_rows(tmp_path / "sg.jsonl", [SHAREGPT])
    (example,) = read_examples(Path(path))
    assert len(example.history) == 5 and example.response == "About two days, covered."
    row = tokenized_row(example, tokenizer)
    ids, mask = row["input_ids"], row["completion_mask"]
    # The masked-in spans, decoded, are exactly the three assistant turns (each with its end of turn).
    spans, start = [], None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            spans.append(tokenizer.decode(ids[start:i]))
            start = None
    answers = [m["content"] for m in conversation(example) if m["role"] == "assistant"]
    assert len(spans) == len(answers) == 3
    for span, answer in zip(spans, answers, strict=True):
        assert span.startswith(answer) and len(span) - len(answer) <= 20  # the turn plus its end-of-turn token(s)
    # Everything else, decoded, is the rendered conversation without those spans.
    full = tokenizer.apply_chat_template(conversation(example), tokenize=False)
    assert tokenizer.decode(ids) == full


def test_the_report_shows_conversations_turn_by_turn_and_the_adaptive_weights(tmp_path, scripted):
    import re

    from evolinstruct.report import build_report

    scripted()
    seeds = write_rows(tmp_path / "s.jsonl", [SHAREGPT, {"instruction": "Describe snow."}])
    cfg = config(seeds, epochs=2)
    cfg.algorithm.pilot = 1
    run_evolve(cfg, tmp_path / "run")
    build_report(tmp_path / "run", tmp_path / "r.html", diversity_map=False)
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="op-weights"' in html and "after the pilot" in html and "follow_up" in html
    data = json.loads(re.search(r'id="tree-data">(.*?)</script>', html, re.S).group(1))
    tea = [n for n in data["nodes"].values() if n.get("h")]
    assert tea and all(n["h"][0] == ["system", "You are a patient cooking teacher."] for n in tea)
    assert "Earlier turns" in html  # the browser's turn-by-turn view (report.js)


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory):
    """bench/simserver.py on a free loopback port (deterministic answers, 20 ms latency)."""
    with simserver(tmp_path_factory.mktemp("sim"), "--latency-mean", "0.02") as url:
        yield url


def test_the_cli_evolves_exports_and_resumes_conversations(tmp_path, sim_url):
    import subprocess

    from runhelpers import CLI

    mtbench = {"turns": ["Write a short poem about the sea.", "Now give your poem a title and explain it."]}
    seeds = write_rows(tmp_path / "conv.jsonl", [SHAREGPT, mtbench, {"instruction": "Describe how snow forms."}])
    cmd = [*CLI, "evolve", seeds, "-o", str(tmp_path / "run"), "--task", "conversation", "--base-url", sim_url,
           "--model", "sim", "--epochs", "3", "--max-turns", "4", "--concurrency", "8"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["seeds"] == 3 and stats["evolutions"]["not_attempted"] == 0 and stats["task"]["name"] == "conversation"
    rows = read(tmp_path / "run")
    assert max(1 + sum(m["role"] == "user" for m in r.get("history", [])) for r in rows) <= 4
    out = tmp_path / "conv.openai.jsonl"
    exported = subprocess.run([*CLI, "export", str(tmp_path / "run"), "-f", "openai", "-o", str(out)],
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr[-2000:]
    for row, line in zip(rows, out.read_text().splitlines(), strict=True):
        messages = json.loads(line)["messages"]
        assert messages[:-2] == row.get("history", []) and messages[-1]["content"] == row["output"]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # a rerun replays every call
    assert again.returncode == 0
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["llm_calls"] == 0
    assert read(tmp_path / "run") == rows


def test_an_alpaca_export_of_conversations_says_it_drops_the_earlier_turns(tmp_path, caplog):
    from evolinstruct.evolve.export import export

    run = tmp_path / "run"
    run.mkdir()
    history = [{"role": "user", "content": "How do I brew green tea?"}, {"role": "assistant", "content": "At 80 C."}]
    rows = [{"instruction": "Why not boiling water?", "input": "", "output": "It burns the leaves.", "history": history},
            {"instruction": "Name a tea.", "input": "", "output": "Sencha.", "history": []}]
    (run / "dataset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert export(run, "alpaca", tmp_path / "a.jsonl") == 2
    assert "1 of 2 rows" in caplog.text and "sharegpt" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        export(run, "sharegpt", tmp_path / "s.jsonl")
    assert caplog.text == ""


@pytest.mark.parametrize("turn", [
    "Take a moment to evaluate and critique your own response.",
    "Now, do the same task again but only use four-word sentences.",
    "Write a concrete plan for your second example. Include budget estimates.",
    "Provide a detailed plan for an election campaign using the first example.",
    "How about finding the top-2 most frequent items?",
    "What about |x + 10| < 5",
])
def test_a_human_follow_up_that_refers_back_without_sharing_a_word_is_a_follow_up(turn):
    # MT-Bench's second turns are follow-ups by definition; these refer back by "your own response",
    # "the same task", "the first example", "how about"... with no content word of the first turn.
    conversation = [{"role": "user", "content": "Name three rivers of Europe."},
                    {"role": "assistant", "content": "The Danube, the Rhine and the Loire."}]
    verdict, _evidence = not_a_follow_up(turn, conversation)
    assert verdict is None, turn


def test_a_new_unrelated_request_is_still_not_a_follow_up():
    conversation = [{"role": "user", "content": "Name three rivers of Europe."},
                    {"role": "assistant", "content": "The Danube, the Rhine and the Loire."}]
    for turn in ("Write a poem about autumn leaves.", "Explain how a compiler parses code."):
        assert not_a_follow_up(turn, conversation)[0] is not None, turn
