"""Template sets: the repo's strings byte for byte, the paper's six operations, user files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evolinstruct.evolve.operations import choose_data_format, choose_operation, parse_weights
from evolinstruct.evolve.templates import ALL_OPS, TemplateError, load_templates

PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "wizardlm_evol_and_paper_prompts.json"


def test_repo_set_is_byte_exact():
    source = json.loads(PROMPTS.read_text(encoding="utf-8"))
    repo = load_templates("repo")
    instruction = "Give three tips for staying healthy."
    # Exactly what WizardLM's depth.py createConstraintsPrompt() builds.
    expected = source["depth_base_instruction"].format(source["depth_methods"]["createConstraintsPrompt"])
    expected += f"#The Given Prompt#: \r\n {instruction} \r\n#Rewritten Prompt#:\r\n"
    assert repo.render("add_constraints", instruction) == expected
    breadth = source["breadth_base_instruction"] + f"#Given Prompt#: \r\n {instruction} \r\n#Created Prompt#:\r\n"
    assert repo.render("mutation", instruction) == breadth
    assert repo.system == "You are a helpful assistant."
    assert "complicate_input" not in repo.ops  # the repo never implemented it


def test_paper_set_has_all_six_operations_and_formats():
    paper = load_templates("paper")
    assert paper.ops == ALL_OPS
    formats = paper.data_formats("complicate_input")
    assert set(formats) == {"XML data", "SQL database", "python code", "HTML page", "Shell cmd", "JSON data"}
    prompt = paper.render("complicate_input", "Sort a list {of numbers}", "SQL database")
    assert "You must add [SQL database] format text as input data" in prompt
    assert prompt.endswith("The Given Prompt:\nSort a list {of numbers}\nRewritten Prompt(MUST contain a specific SQL database as input):\n")
    deepen = paper.render("deepening", "X")
    assert "#Given Prompt#:\nX\n#Rewritten Prompt#:\n" in deepen
    source = json.loads(PROMPTS.read_text(encoding="utf-8"))["paper_only_prompts"]["elimination_equal"]
    assert paper.render_equality("A", "B") == source.replace("<Here is first instruction.>", "A").replace(
        "<Here is second instruction.>", "B"
    )


def test_user_template_file(tmp_path):
    custom = {"name": "mine", "operations": {"shorter": {"kind": "in-depth", "template": "Shorten: {instruction}"}},
              "equality": "Same? {first} / {second}"}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(custom))
    t = load_templates(str(path))
    assert t.ops == ("shorter",)
    assert t.render("shorter", "abc") == "Shorten: abc"
    assert "{instruction}" in t.difficulty  # falls back to the paper's difficulty prompt

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"operations": {"x": {"template": "no slot"}}, "equality": "{first}{second}"}))
    with pytest.raises(TemplateError, match="instruction"):
        load_templates(str(bad))
    with pytest.raises(TemplateError, match="no such template file"):
        load_templates(str(tmp_path / "missing.json"))


def test_operation_choice_is_deterministic_and_weighted():
    paper = load_templates("paper")
    uniform = parse_weights(None, paper)
    picks = [choose_operation(uniform, 7, f"s-{i}", 1) for i in range(600)]
    assert picks == [choose_operation(uniform, 7, f"s-{i}", 1) for i in range(600)]
    counts = {op: picks.count(op) for op in ALL_OPS}
    assert all(60 <= n <= 140 for n in counts.values()), counts  # ~100 each
    assert picks != [choose_operation(uniform, 8, f"s-{i}", 1) for i in range(600)]
    only = parse_weights("mutation=1", paper)
    assert {choose_operation(only, 0, f"s-{i}", 2) for i in range(50)} == {"mutation"}
    fmt = choose_data_format(paper.data_formats("complicate_input"), 0, "s-1", 1)
    assert fmt == choose_data_format(paper.data_formats("complicate_input"), 0, "s-1", 1)
    with pytest.raises(ValueError, match="unknown operation"):
        parse_weights("complicate_input=1", load_templates("repo"))
