"""Regenerate src/evolinstruct/evolve/template_sets/conversation.json, the `--task conversation` prompt set.

- The five in-depth operations are the paper set's (template_sets/paper.json) byte for byte: the conversation
  task rewrites the last user turn with exactly those prompts. The earlier turns reach the evolver through a
  context wrapper that the chain puts before the prompt (tasks/conversation.py, CONTEXT), not through an
  edit of the published text.
- `follow_up` (in-breadth for conversations) is ours: WizardLM's "Prompt Creator" shape, asking for the
  user's next, harder message that builds on the conversation.
- The equality and difficulty prompts are the paper set's.

Usage: python scripts/build_conversation_templates.py
"""

from __future__ import annotations

import json
from pathlib import Path

SETS = Path(__file__).resolve().parents[1] / "src" / "evolinstruct" / "evolve" / "template_sets"
IN_DEPTH = ("add_constraints", "deepening", "concretizing", "increased_reasoning", "complicate_input")

# Ours (documented in docs/TASKS.md and docs/TEMPLATES.md).
FOLLOW_UP = (
    "I want you act as a Prompt Creator.\n"
    "Your goal is to write the user's next message in the #Conversation# above: a new prompt that builds on "
    "what was said so far and is harder to answer than the #Given Prompt#, the user's last message.\n"
    "The new prompt must refer to the conversation (to the assistant's last answer or to what the user asked "
    "before), so that it could not be understood on its own.\n"
    "The #Created Prompt# must be reasonable and must be understood and responded by humans.\n"
    "'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear in "
    "#Created Prompt#\n"
    "#Given Prompt#:\n{instruction}\n"
    "#Created Prompt#:\n"
)


def build() -> dict:
    paper = json.loads((SETS / "paper.json").read_text(encoding="utf-8"))
    operations = {op: paper["operations"][op] for op in IN_DEPTH}
    operations["follow_up"] = {"kind": "in-breadth", "template": FOLLOW_UP}
    return {
        "name": "conversation",
        "source": "The paper set's in-depth prompts, byte-exact, for the last user turn (the earlier turns go "
                  "before them in a context wrapper, tasks/conversation.py); follow_up is ours "
                  "(scripts/build_conversation_templates.py).",
        "system": paper.get("system"),
        "operations": operations,
        "equality": paper["equality"],
        "difficulty": paper["difficulty"],
    }


if __name__ == "__main__":
    (SETS / "conversation.json").write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
