"""Regenerate src/evolinstruct/evolve/template_sets/code.json, the `--task code` prompt set.

- The five in-depth operations are WizardCoder's Code Evol-Instruct prompt (arXiv 2306.08568) with each of
  its five methods, from ../shared/data/prompts/code_evol_prompts.json (the strings of nickrosh/evol-teacher
  generate_evol.py @32c20d4): `template.format(method=..., question=...)` there, the same bytes here with
  the question slot named `{instruction}`.
- `mutation` (in-breadth) is not WizardCoder's (its method list has none): it is written by this project,
  WizardLM's in-breadth "Prompt Creator" idea in WizardCoder's shape (#Given Test# / #Created Test#).
- The equality and difficulty prompts are the WizardLM paper's (the appendix, as in paper.json): WizardCoder
  reports no elimination step of its own.

Usage: python scripts/build_code_templates.py [CODE_PROMPTS_JSON [WIZARDLM_PROMPTS_JSON]]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "evolinstruct" / "evolve" / "template_sets" / "code.json"
PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"
DEFAULT_CODE = PROMPTS / "code_evol_prompts.json"
DEFAULT_WIZARDLM = PROMPTS / "wizardlm_evol_and_paper_prompts.json"

# Ours (documented in docs/TASKS.md): WizardLM's in-breadth mutation, adapted to programming test questions.
MUTATION = (
    "Please create a brand new programming test question inspired by the given one.\n\n"
    "The new question should belong to the same domain as the given test question (the same kind of "
    "programming task) but be even more rare: a different problem, not a rewording of the given one.\n"
    "The length and difficulty level of the new question should be similar to that of the given one.\n"
    "The new question must be reasonable, self-contained, and solvable by writing code.\n\n"
    "#Given Test#\n{instruction}\n\n#Created Test#\n"
)


def build(code_src: Path, wizardlm_src: Path) -> dict:
    code = json.loads(code_src.read_text(encoding="utf-8"))
    paper = json.loads(wizardlm_src.read_text(encoding="utf-8"))["paper_only_prompts"]
    template = code["template"]
    if "{method}" not in template or "{question}" not in template:
        raise SystemExit(f"{code_src}: the template has no {{method}} or {{question}} slot")
    operations = {
        op: {"kind": "in-depth", "method": method,
             "template": template.replace("{method}", method).replace("{question}", "{instruction}")}
        for op, method in code["methods"].items()
    }
    operations["mutation"] = {"kind": "in-breadth", "origin": "evolinstruct (not WizardCoder's)", "template": MUTATION}
    return {
        "name": "code",
        "source": "WizardCoder (arXiv 2306.08568) Code Evol-Instruct prompt and methods, as in nickrosh/evol-teacher "
                  "generate_evol.py @32c20d4; mutation: evolinstruct; equality and difficulty: WizardLM paper appendix",
        "system": None,
        "operations": operations,
        "equality": paper["elimination_equal"].replace("<Here is first instruction.>", "{first}").replace(
            "<Here is second instruction.>", "{second}"),
        "difficulty": paper["difficulty_rating"].replace("< Here is instruction. >", "{instruction}"),
    }


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:3]]
    doc = build(args[0] if args else DEFAULT_CODE, args[1] if len(args) > 1 else DEFAULT_WIZARDLM)
    OUT.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", OUT)
