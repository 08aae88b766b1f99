"""DEITA's ranking prompts (complexity and quality), rendered for a lineage of records."""

from __future__ import annotations

MAX_ITEM_CHARS = 4000  # one item of a ranking prompt; keeps a lineage's prompt inside small models' context

# DEITA's complexity ranking prompt (Liu et al. 2023, "What Makes Good Data for Alignment?",
# arXiv 2312.15685, appendix). hkust-nlp/deita ships only its trained scorers' prompts
# (src/deita/selection/scorer/*.py); the ranking prompt's text is as in argilla-io/distilabel
# src/distilabel/steps/tasks/templates/complexity-scorer.jinja2, rendered here without Jinja.
COMPLEXITY_HEAD = (
    "Ranking the following questions according to the difficulty and complexity. Score 1-{n}.\n"
    "You can give a score of {n_plus_1} if the question is too complex for you to answer it. You should\n"
    "respond with the format:\n[1] Score: 1\n[2] Score: 2\n...\n"
)
# DEITA's quality ranking prompt (same paper; distilabel quality-scorer.jinja2). DEITA lists several
# responses to one #Question#; here each item is an instruction with its response.
QUALITY_HEAD = (
    "Rank the following pair of instructions and responses according to their quality. Your evaluation should "
    "consider factors such as helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. Score 1-{n}.\n"
    "Score each response from 1 to {n}, with {n_plus_1} reserved for responses that are already very well "
    "written and cannot be improved further. You should respond with the format:\n[1] Score: 1\n[2] Score: 2\n...\n"
)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ITEM_CHARS else text[:MAX_ITEM_CHARS] + " ..."


def render_complexity(questions: list[str]) -> str:
    n = len(questions)
    head = COMPLEXITY_HEAD.replace("{n}", str(n)).replace("{n_plus_1}", str(n + 1))
    return head + "".join(f"\n[{i}] {_clip(q)}" for i, q in enumerate(questions, 1)) + "\n"


def render_quality(pairs: list[tuple[str, str]]) -> str:
    n = len(pairs)
    head = QUALITY_HEAD.replace("{n}", str(n)).replace("{n_plus_1}", str(n + 1))
    items = "".join(
        f"\n[{i}] #Question#: {_clip(q)}\n#Response#: {_clip(r)}" for i, (q, r) in enumerate(pairs, 1)
    )
    return head + items + "\n"
