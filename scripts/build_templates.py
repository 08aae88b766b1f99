"""Regenerate src/evolinstruct/evolve/template_sets/{repo,paper}.json.

`repo.json` is built from the byte-exact strings of the WizardLM repo (Evol_Instruct/depth.py and
breadth.py @cd4b4cc0) as extracted in ../shared/data/prompts/wizardlm_evol_and_paper_prompts.json,
assembled exactly as the repo's functions assemble them. `paper.json` holds the appendix text of the
paper (arXiv 2304.12244); see docs/TEMPLATES.md for how the two differ.

Usage: python scripts/build_templates.py [PATH_TO_PROMPTS_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "evolinstruct" / "evolve" / "template_sets"
DEFAULT_SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "wizardlm_evol_and_paper_prompts.json"

# The paper's six data formats for "complicate input" (appendix: XML data, SQL database,
# python code, HTML page, Shell cmd, JSON data).
DATA_FORMATS = ["XML data", "SQL database", "python code", "HTML page", "Shell cmd", "JSON data"]

# The paper's appendix shows one demonstration verbatim: the python code one. The others follow
# its exact shape and are written by this project (documented in docs/TEMPLATES.md).
DEMONSTRATIONS = {
    "python code": (
        "Transformat python code",
        "I have the following Python code:\n"
        'cursor . execute (" INSERT INTO table VALUES var1 , var2 , var3 ,")\n'
        "where var1 is an integer, var2 and var3 are strings.\n"
        "How can I write the variable names without Python including them as part of the query text?",
    ),
    "XML data": (
        "List the books in the library catalogue",
        "Given the following XML data of a library catalogue:\n"
        "<catalogue>\n  <book id=\"b1\"><title>Dune</title><year>1965</year><loaned>true</loaned></book>\n"
        "  <book id=\"b2\"><title>Emma</title><year>1815</year><loaned>false</loaned></book>\n</catalogue>\n"
        "List the titles of the books that are not on loan, sorted by year.",
    ),
    "SQL database": (
        "Find the best customers",
        "A shop keeps its orders in a SQL database with the table\n"
        "orders(id INTEGER, customer TEXT, total REAL, placed_at DATE).\n"
        "Write a query that returns the three customers with the highest total spending in 2022, "
        "with their totals.",
    ),
    "HTML page": (
        "Make the button look better",
        "I have the following HTML page:\n"
        "<html><body><button onclick=\"send()\">Send</button></body></html>\n"
        "How can I style the button with CSS so that it is blue with white text and turns darker on hover?",
    ),
    "Shell cmd": (
        "Find large files",
        "I ran the Shell cmd `du -ah /var/log | sort -rh | head -n 5` on my server.\n"
        "How do I change it to list only files larger than 100 MB that were modified in the last 7 days?",
    ),
    "JSON data": (
        "Summarize the weather",
        "Given the following JSON data of a weekly forecast:\n"
        '{"city": "Oslo", "days": [{"day": "Mon", "high": 4, "rain_mm": 2.5}, '
        '{"day": "Tue", "high": 6, "rain_mm": 0}]}\n'
        "Which day is warmer, and how much rain falls over both days in total?",
    ),
}

PAPER_DEPTH_HEAD = (
    "I want you act as a Prompt Rewriter.\n"
    "Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems "
    "(e.g., ChatGPT and GPT4) a bit harder to handle.\n"
    "But the rewritten prompt must be reasonable and must be understood and responded by humans.\n"
    "Your rewriting cannot omit the non-text parts such as the table and code in #Given Prompt#:. Also, please "
    "do not omit the input in #Given Prompt#.\n"
    "You SHOULD complicate the given prompt using the following method:\n"
)
PAPER_DEPTH_TAIL = (
    "You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only "
    "add 10 to 20 words into #Given Prompt#.\n"
    "\u2018#Given Prompt#\u2019, \u2018#Rewritten Prompt#\u2019, \u2018given prompt\u2019 and "
    "\u2018rewritten prompt\u2019 are not allowed to appear in #Rewritten Prompt#\n"
    "#Given Prompt#:\n{instruction}\n#Rewritten Prompt#:\n"
)
# The method lines as printed in the appendix; deepening and concretizing end in a stray " or" there.
PAPER_METHODS = {
    "add_constraints": "Please add one more constraints/requirements into #Given Prompt#",
    "deepening": "If #Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry can be increased. or",
    "concretizing": "Please replace general concepts with more specific concepts. or",
    "increased_reasoning": "If #Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it to explicitly request multiple-step reasoning.",
}
PAPER_COMPLICATE_HEAD = (
    "I want you act as a Prompt Rewriter.\n"
    "Your objective is to rewrite a given prompt into a more complex version using dataformat to make those "
    "famous AI systems (e.g., chatgpt and GPT4) more difficult to handle.\n"
    "But the rewritten prompt must be reasonable and must be understood and responded by humans.\n"
    "You must add [{data_format}] format text as input data in [Rewritten Prompt]\n"
)
PAPER_BREADTH = (
    "I want you act as a Prompt Creator.\n"
    "Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.\n"
    "This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.\n"
    "The LENGTH and difficulty level of the #Created Prompt# should be similar to that of the #Given Prompt#.\n"
    "The #Created Prompt# must be reasonable and must be understood and responded by humans.\n"
    "\u2018#Given Prompt#\u2019, \u2018#Created Prompt#\u2019, \u2018given prompt\u2019 and "
    "\u2018created prompt\u2019 are not allowed to appear in #Created Prompt#.\n"
    "#Given Prompt#:\n{instruction}\n#Created Prompt#:\n"
)


def complicate_input_template(head: str) -> dict:
    """One template per data format: header, one demonstration, then the prompt to rewrite."""
    by_format = {}
    for fmt in DATA_FORMATS:
        given, rewritten = DEMONSTRATIONS[fmt]
        by_format[fmt] = (
            head.replace("{data_format}", fmt)
            + f"The Given Prompt:\n{given}\n"
            + f"Rewritten Prompt(MUST contain a specific {fmt} as input):\n{rewritten}\n####\n"
            + "The Given Prompt:\n{instruction}\n"
            + f"Rewritten Prompt(MUST contain a specific {fmt} as input):\n"
        )
    return by_format


def build(src: Path) -> None:
    data = json.loads(src.read_text(encoding="utf-8"))
    paper = data["paper_only_prompts"]
    equality = paper["elimination_equal"].replace("<Here is first instruction.>", "{first}").replace(
        "<Here is second instruction.>", "{second}"
    )
    difficulty = paper["difficulty_rating"].replace("< Here is instruction. >", "{instruction}")

    base, methods = data["depth_base_instruction"], data["depth_methods"]
    repo_depth_tail = "#The Given Prompt#: \r\n {instruction} \r\n" + "#Rewritten Prompt#:\r\n"
    repo_ops = {
        "add_constraints": methods["createConstraintsPrompt"],
        "deepening": methods["createDeepenPrompt"],
        "concretizing": methods["createConcretizingPrompt"],
        "increased_reasoning": methods["createReasoningPrompt"],
    }
    repo = {
        "name": "repo",
        "source": "nlpxucan/WizardLM Evol_Instruct/depth.py, breadth.py @cd4b4cc0 (byte-exact)",
        "system": "You are a helpful assistant.",
        "operations": {
            **{op: {"kind": "in-depth", "template": base.format(m) + repo_depth_tail} for op, m in repo_ops.items()},
            "mutation": {
                "kind": "in-breadth",
                "template": data["breadth_base_instruction"] + "#Given Prompt#: \r\n {instruction} \r\n" + "#Created Prompt#:\r\n",
            },
        },
        "equality": equality,
        "difficulty": difficulty,
    }
    paper_set = {
        "name": "paper",
        "source": "WizardLM paper appendix (arXiv 2304.12244)",
        "system": None,
        "operations": {
            **{op: {"kind": "in-depth", "template": PAPER_DEPTH_HEAD + m + "\n" + PAPER_DEPTH_TAIL} for op, m in PAPER_METHODS.items()},
            "complicate_input": {"kind": "in-depth", "by_format": complicate_input_template(PAPER_COMPLICATE_HEAD)},
            "mutation": {"kind": "in-breadth", "template": PAPER_BREADTH},
        },
        "equality": equality,
        "difficulty": difficulty,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    for doc in (paper_set, repo):
        (OUT / f"{doc['name']}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", OUT / f"{doc['name']}.json")


if __name__ == "__main__":
    build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SRC)
