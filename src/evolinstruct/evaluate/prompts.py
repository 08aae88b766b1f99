"""Judge prompts: FastChat's pairwise reviewer prompts (Vicuna/WizardLM) and MT-Bench's single grading.

The prompt files are read from the shared data directory (prompts/), as FastChat ships them.
Which pairwise prompt a question gets (general, coding or math) follows its skill or category:
`JUDGE_CATEGORY` below is the mapping for the 29 WizardLM skills and the Vicuna categories; anything
not listed is judged with the general prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .testsets import EvalItem, TestsetError, data_file, read_records

VICUNA_PROMPTS = "prompts/judge_vicuna_prompt.jsonl"
VICUNA_REVIEWERS = "prompts/judge_vicuna_reviewer.jsonl"
MTBENCH_PROMPTS = "prompts/judge_mtbench_prompts.jsonl"

# Skill or category -> judge prompt. Lower-cased keys. Vicuna's own categories are FastChat's mapping
# (coding -> coding, math -> math, the rest general). For the WizardLM skills: Math and Reasoning are
# puzzles with one right answer (the math prompt solves them first); Code Generation, Code Debug and
# Complex Format (SQL, sorting, scraping, C++: submissions of code) get the coding prompt. Computer
# Science stays general: most of its questions are conceptual (compiler vs interpreter, OOP).
JUDGE_CATEGORY: dict[str, str] = {
    # WizardLM test set (29 skills; "Writting" is the test set's spelling)
    "math": "math",
    "reasoning": "math",
    "code generation": "coding",
    "code debug": "coding",
    "complex format": "coding",
    "computer science": "general",
    "writting": "general",
    "writing": "general",
    "common-sense": "general",
    "counterfactual": "general",
    "multilingual": "general",
    "roleplay": "general",
    "biology": "general",
    "technology": "general",
    "ethics": "general",
    "truthfulqa": "general",
    "sport": "general",
    "law": "general",
    "medicine": "general",
    "literature": "general",
    "entertainment": "general",
    "art": "general",
    "music": "general",
    "economy": "general",
    "physics": "general",
    "toxicity": "general",
    "history": "general",
    "academic writing": "general",
    "chemistry": "general",
    "philosophy": "general",
    # Vicuna 80 categories
    "coding": "coding",
    "generic": "general",
    "knowledge": "general",
    "fermi": "general",
}

# MT-Bench: these categories are graded against a reference answer (FastChat's NEED_REF_CATS).
NEED_REF_CATS = ("math", "reasoning", "coding")


def judge_category(skill: str) -> str:
    return JUDGE_CATEGORY.get(skill.strip().lower(), "general")


@dataclass(frozen=True, slots=True)
class PairPrompt:
    category: str
    system: str
    template: str
    instruction: str
    temperature: float
    max_tokens: int

    def messages(self, question: str, answer_1: str, answer_2: str) -> list[dict[str, str]]:
        content = self.template.format(question=question, answer_1=answer_1, answer_2=answer_2, prompt=self.instruction)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]


@dataclass(frozen=True, slots=True)
class SinglePrompt:
    name: str
    system: str
    template: str

    def messages(self, **fields: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.template.format(**fields)}]


def _field(path: Path, lineno: int, obj: dict, key: str) -> object:
    if key not in obj:
        raise TestsetError(f"{path}:{lineno}: missing '{key}'")
    return obj[key]


def load_pair_prompts(data_dir: str | Path | None) -> dict[str, PairPrompt]:
    """category (general, coding, math) -> prompt, with the reviewer's sampling settings (FastChat: 0.2, 1024)."""
    prompt_path = data_file(VICUNA_PROMPTS, data_dir)
    reviewer_path = data_file(VICUNA_REVIEWERS, data_dir)
    reviewers = {}
    for lineno, obj in read_records(reviewer_path):
        meta = _field(reviewer_path, lineno, obj, "metadata")
        reviewers[_field(reviewer_path, lineno, obj, "prompt_id")] = meta if isinstance(meta, dict) else {}
    prompts = {}
    for lineno, obj in read_records(prompt_path):
        meta = reviewers.get(_field(prompt_path, lineno, obj, "prompt_id"), {})
        defaults = _field(prompt_path, lineno, obj, "defaults")
        category = str(_field(prompt_path, lineno, obj, "category"))
        prompts[category] = PairPrompt(
            category=category,
            system=str(_field(prompt_path, lineno, obj, "system_prompt")),
            template=str(_field(prompt_path, lineno, obj, "prompt_template")),
            instruction=str(defaults.get("prompt", "")) if isinstance(defaults, dict) else "",
            temperature=float(meta.get("temperature", 0.2)),
            max_tokens=int(meta.get("max_tokens", 1024)),
        )
    for needed in ("general", "coding", "math"):
        if needed not in prompts:
            raise TestsetError(f"{prompt_path}: no '{needed}' prompt")
    return prompts


def load_single_prompts(data_dir: str | Path | None) -> dict[str, SinglePrompt]:
    """MT-Bench's judge prompts by name (single-v1, single-math-v1 and their -multi-turn variants)."""
    path = data_file(MTBENCH_PROMPTS, data_dir)
    prompts = {}
    for lineno, obj in read_records(path):
        name = str(_field(path, lineno, obj, "name"))
        prompts[name] = SinglePrompt(name, str(_field(path, lineno, obj, "system_prompt")),
                                     str(_field(path, lineno, obj, "prompt_template")))
    for needed in ("single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"):
        if needed not in prompts:
            raise TestsetError(f"{path}: no '{needed}' prompt")
    return prompts


def mtbench_judge_messages(
    prompts: dict[str, SinglePrompt], item: EvalItem, answers: list[str], turn: int
) -> tuple[str, list[dict[str, str]]]:
    """(prompt name, messages) to grade `answers` at `turn` (0 or 1), with a reference where FastChat uses one."""
    use_ref = item.skill.lower() in NEED_REF_CATS and len(item.reference_answers) > turn
    refs = item.reference_answers
    if turn == 0:
        if use_ref:
            prompt = prompts["single-math-v1"]
            return prompt.name, prompt.messages(question=item.turns[0], answer=answers[0], ref_answer_1=refs[0])
        prompt = prompts["single-v1"]
        return prompt.name, prompt.messages(question=item.turns[0], answer=answers[0])
    fields = {"question_1": item.turns[0], "question_2": item.turns[1], "answer_1": answers[0], "answer_2": answers[1]}
    if use_ref:
        prompt = prompts["single-math-v1-multi-turn"]
        return prompt.name, prompt.messages(ref_answer_1=refs[0], ref_answer_2=refs[1], **fields)
    prompt = prompts["single-v1-multi-turn"]
    return prompt.name, prompt.messages(**fields)
