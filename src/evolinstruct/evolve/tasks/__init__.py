"""Tasks: what kind of data a run evolves. A task is a default template set, a rule list (a `RuleSet`,
configured from the run's settings), optionally a chain variant, and optionally a tally that adds the
task's own numbers to stats.json. `--task NAME` picks one; a new task is one module here plus one line in
`TASKS`.

- chat: the paper's Evol-Instruct on general instructions (the default).
- code: WizardCoder's Code Evol-Instruct; answers must hold code that parses, and with `--exec-check` their
  Python runs in a sandbox (evolve/sandbox.py) and must neither crash nor time out (docs/TASKS.md).
- math: WizardMath's upward and downward evolution of math problems; K answers each, kept on a majority
  final answer (`math_samples`), eliminated as `no_question` or `inconsistent_answer` (docs/TASKS.md).
- conversation: multi-turn chats; the last user turn evolves in context, or a `follow_up` turn is added,
  each new turn answered with the whole history (`max_turns`; docs/TASKS.md).
"""

from __future__ import annotations

import importlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..rules import RuleSet

if TYPE_CHECKING:
    from ...records import Record


class TaskTally(Protocol):
    """Counts a task's own numbers as finalize streams the records past (stats.json `task`)."""

    def add(self, record: Record) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class OpTally:
    """What the code and conversation tallies both count: the rules that eliminated evolutions, and each
    operation's attempts and kept share (seeds and failed calls are not counted)."""

    def __init__(self) -> None:
        self.rules: Counter = Counter()
        self.by_op: dict[str, Counter] = defaultdict(Counter)

    def add(self, record: Record) -> bool:
        """Counts an evolution; False for a record that is not one (a seed or a failed call)."""
        if record.epoch == 0 or record.status == "error":
            return False
        counter = self.by_op[record.op]
        counter["attempted"] += 1
        counter[record.status] += 1
        if record.status == "eliminated":
            self.rules[record.reason] += 1
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "rules": dict(sorted(self.rules.items())),
            "by_op": {op: {"attempted": c["attempted"], "kept": c["kept"],
                           "success_rate": round(c["kept"] / c["attempted"], 4) if c["attempted"] else None}
                      for op, c in sorted(self.by_op.items())},
        }


@dataclass(frozen=True)
class Task:
    name: str
    templates: str  # the template set used when --templates is not given
    rules: Callable[[Any], RuleSet]  # the run's EvolveConfig -> the rule list (config.py imports this module)
    chain: str | None = None  # 'module:Class' of a chain variant (a subclass of chain.Chain); None: Chain
    tally: Callable[[], TaskTally] | None = None
    options: tuple[str, ...] = ()  # the task_options keys it reads (others are refused)
    op_weights: str | None = None  # default --ops for the task's own template set (None: uniform)
    conversations: bool = False  # its seeds are conversations (seeds.py reads ShareGPT/OpenAI/MT-Bench rows)


TASKS: dict[str, str] = {
    "chat": "evolinstruct.evolve.tasks.chat:TASK",
    "code": "evolinstruct.evolve.tasks.code:TASK",
    "math": "evolinstruct.evolve.tasks.math:TASK",
    "conversation": "evolinstruct.evolve.tasks.conversation:TASK",
}


def task_names() -> tuple[str, ...]:
    return tuple(TASKS)


def get_task(name: str) -> Task:
    target = TASKS.get(name)
    if target is None:
        raise ValueError(f"unknown task '{name}' (choose {', '.join(TASKS)})")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def chain_class(task: Task) -> type:
    """The task's chain variant, or None for the plain `chain.Chain` (resolved by run.py, which owns both)."""
    if task.chain is None:
        return None  # type: ignore[return-value]
    module, _, attr = task.chain.partition(":")
    return getattr(importlib.import_module(module), attr)
