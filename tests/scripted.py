"""A scripted backend: deterministic replies by rule, with every call recorded. No model, no server.

A new backend is this one file plus one registry line; the tests add the line themselves:

    from evolinstruct.models.registry import register
    register("scripted", ScriptedBackend)                  # the default script
    register("scripted", ScriptedBackend.using(script))    # a test's own rules

and then name it like any other: `ModelSpec(backend="scripted", model="s")`.

A `Script` holds the rules and the log of calls. A rule is a `(when, reply)` pair, tried in order, first
match wins; without a match the default reply for the prompt's purpose is used:
- `when`: a regex string or compiled pattern searched in the last user message, or a callable that
  takes a `Prompt` and returns a bool (`on("equality")` and `on("answer", r"tea")` build such callables);
- `reply`: a string, a `Result` (an injected failure, say), or a callable taking the `Prompt` and
  returning either.

Default replies: an evolving prompt gets a new instruction derived from the given one and the
operation; the equality prompt gets "Not Equal"; anything else (an answer) gets a 60-word answer. A
reply depends on the prompt only, never on timing or call order, so a run's dataset is the same at any
concurrency, as with a real model sampling with per-request seeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evolinstruct.models.base import Capabilities, ModelSpec, Request, Result, Transport

# What the paper's and the repo's evolving prompts say about their operation (their method lines).
OP_MARKERS = (
    ("mutation", "Prompt Creator"),
    ("complicate_input", "dataformat"),
    ("add_constraints", "add one more constraints"),
    ("deepening", "depth and breadth of the inquiry can be increased"),
    ("concretizing", "more specific concepts"),
    ("increased_reasoning", "multiple-step reasoning"),
)
# What the default evolution appends for each operation: never a word the copied-prompt rule looks for.
OP_SUFFIX = {
    "add_constraints": "Use at most one hundred words.",
    "deepening": "Explain why it matters in depth.",
    "concretizing": "Use a concrete example.",
    "increased_reasoning": "Reason step by step.",
    "complicate_input": "Use the table below as input.",
    "mutation": "Now consider a rarer case.",
}
# The instruction inside an evolving prompt: the last one (complicate_input shows an example first).
_GIVEN = re.compile(
    r"(?:#(?:The )?Given Prompt#|The Given Prompt):\s*(.*?)\s*(?:#Rewritten Prompt#|#Created Prompt#|Rewritten Prompt\()",
    re.DOTALL,
)
_EQUALITY = re.compile(r"The First Prompt:\s*(.*?)\s*The Second Prompt:\s*(.*?)\s*Your Judgement", re.DOTALL)
ANSWER_WORDS = 60


@dataclass(frozen=True, slots=True)
class Prompt:
    """One request as the script sees it."""

    model: str
    purpose: str  # evolve | equality | answer, recognised from the prompt's text
    text: str  # the last user message
    op: str | None = None  # evolve: the operation the prompt asks for
    given: str = ""  # evolve: the instruction to rewrite; equality: the first instruction; answer: the text
    second: str = ""  # equality: the second (evolved) instruction
    request: Request | None = None


def parse(model: str, request: Request) -> Prompt:
    text = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
    if "Prompt Rewriter" in text or "Prompt Creator" in text:
        op = next((name for name, marker in OP_MARKERS if marker in text), None)
        found = _GIVEN.findall(text)
        return Prompt(model, "evolve", text, op, found[-1] if found else "", request=request)
    if m := _EQUALITY.search(text):
        return Prompt(model, "equality", text, given=m.group(1), second=m.group(2), request=request)
    return Prompt(model, "answer", text, given=text, request=request)


def evolved(given: str, op: str | None) -> str:
    """The default evolution: the given instruction with a sentence that makes it harder."""
    return f"{given.rstrip()} {OP_SUFFIX.get(op or '', 'Add one more requirement.')}"


def answer(text: str) -> str:
    """The default answer: exactly ANSWER_WORDS words, opening with the instruction's first words."""
    head = ["Answer:", *text.split()[:8]]
    filler = [f"point{i}" for i in range(ANSWER_WORDS - len(head))]
    return " ".join([*head, *filler])


def default_reply(prompt: Prompt) -> str:
    if prompt.purpose == "evolve":
        return evolved(prompt.given, prompt.op)
    if prompt.purpose == "equality":
        return "Not Equal"
    return answer(prompt.text)


Reply = str | Result | Callable[[Prompt], "str | Result"]
When = str | re.Pattern | Callable[[Prompt], bool]


def on(purpose: str, pattern: str | None = None, where: str = "given") -> Callable[[Prompt], bool]:
    """A rule's `when`: prompts of `purpose` whose `where` field (given, second, text) matches `pattern`."""

    def when(prompt: Prompt) -> bool:
        return prompt.purpose == purpose and (pattern is None or re.search(pattern, getattr(prompt, where)) is not None)

    return when


@dataclass(slots=True)
class Call:
    model: str
    purpose: str
    op: str | None
    text: str
    given: str  # see Prompt
    reply: str
    error: str | None = None


@dataclass
class Script:
    rules: list[tuple[When, Reply]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    def reply(self, model: str, request: Request) -> Result:
        prompt = parse(model, request)
        out: str | Result = default_reply(prompt)
        for when, reply in self.rules:
            if self._matches(when, prompt):
                out = reply(prompt) if callable(reply) else reply
                break
        result = out if isinstance(out, Result) else Result(
            text=out, prompt_tokens=len(prompt.text.split()), completion_tokens=len(out.split()), finish_reason="stop"
        )
        self.calls.append(Call(model, prompt.purpose, prompt.op, prompt.text, prompt.given, result.text, result.error))
        return result

    @staticmethod
    def _matches(when: When, prompt: Prompt) -> bool:
        if isinstance(when, str | re.Pattern):
            return re.search(when, prompt.text) is not None
        return bool(when(prompt))

    def count(self, purpose: str | None = None, model: str | None = None) -> int:
        return sum(1 for c in self.calls if (purpose is None or c.purpose == purpose) and (model is None or c.model == model))

    def by_model(self) -> dict[str, Counter]:
        """model -> Counter of the purposes it was sent."""
        out: dict[str, Counter] = {}
        for c in self.calls:
            out.setdefault(c.model, Counter())[c.purpose] += 1
        return out


class ScriptedBackend:
    name = "scripted"
    capabilities = Capabilities()
    script: ClassVar[Script] = Script()

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> ScriptedBackend:
        return cls(model=spec.model or "scripted")

    @classmethod
    def using(cls, script: Script) -> type[ScriptedBackend]:
        """This backend with `script`'s rules and call log (register the class this returns)."""
        return type(cls.__name__, (cls,), {"script": script})

    def __init__(self, model: str = "scripted", script: Script | None = None) -> None:
        self.model = model
        if script is not None:
            self.script = script
        self.closed = False

    async def generate(self, requests: list[Request]) -> list[Result]:
        # Yield to the loop a prompt-dependent number of times, so that at high concurrency calls finish
        # in an order other than the order they were sent (what a server does), with no wall-clock wait.
        for _ in range(int(hashlib.sha256(repr(requests[0].messages).encode()).hexdigest()[:2], 16) % 8):
            await asyncio.sleep(0)
        return [self.script.reply(self.model, r) for r in requests]

    async def aclose(self) -> None:
        self.closed = True


def write_seeds(path: Any, instructions: Iterable[str], outputs: Iterable[str] | None = None) -> str:
    """A JSONL seed file (instruction, input, output) for the tests; returns its path as a string."""
    outs = list(outputs) if outputs is not None else None
    lines = []
    for i, instruction in enumerate(instructions):
        row = {"instruction": instruction, "input": "", "output": outs[i] if outs else ""}
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)
