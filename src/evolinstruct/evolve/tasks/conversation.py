"""Conversations (`--task conversation`): Evol-Instruct on multi-turn chats, one new turn at a time.

A record is the last turn of a conversation (`Record.history` holds the earlier turns), so the chain is the
paper's, with the conversation as context:
- Seeds: ShareGPT (`conversations`, `from`/`value`), OpenAI (`messages`) and MT-Bench (`turns`) rows, split at
  their last user turn (seeds.py); a one-turn row is a one-turn conversation. MT-Bench rows carry no answers:
  the earlier user turns are answered first, one after the other, each with the conversation so far.
- Operations (template set `conversation`): the paper's five in-depth prompts, byte-exact, rewrite the **last
  user turn**; the earlier turns come before the prompt in a context wrapper (`CONTEXT`). `follow_up` (ours,
  in-breadth for conversations) writes a new, harder user turn that builds on the conversation; the parent's
  own turn and answer join the history. A conversation that has `max_turns` user turns (default 8) draws no
  follow-up: its last turn is rewritten by the other operations (uniformly when only follow_up is weighted);
  the cap never cuts a seed's own turns.
- The assistant turn is then (re)generated with the whole history.
- Elimination per new turn: the paper's rules on the new turn and its answer (empty, copied prompt words,
  truncated, sorry, punctuation only, language guard); the equality judge compares the rewritten turn with
  the turn it replaced; a follow-up replaces nothing, so instead of the judge it must pass
  `not_a_follow_up`: it must share a content word with the conversation or refer to it ("your answer",
  "above", "the previous ..."), and must not repeat the last turn.
- Tally (stats.json `task`): rule counts, success per operation, turns per kept conversation.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

from ...models.base import Request
from ...records import Record, Seed, seed_record_id
from ..chain import Chain
from ..rules import CHAT, STOP_WORDS, Verdict
from . import OpTally, Task

FOLLOW_UP = "follow_up"
NOT_A_FOLLOW_UP = "not_a_follow_up"
DEFAULT_MAX_TURNS = 8
SPEAKERS = {"user": "User", "assistant": "Assistant", "system": "System"}

# Before every evolving prompt of a conversation with earlier turns (ours; the prompt after it is published).
CONTEXT = ("The following is a conversation between a user and an AI assistant. It is the context of the "
           "user's last message, the #Given Prompt# below.\n"
           "#Conversation#:\n{conversation}\n\n")

_CONTENT = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
# A reference back; a noun may have one word before it ("your own response", "the second example").
_REFERS = re.compile(
    r"\b(?:above|previous(?:ly)?|earlier|before|again|as you (?:said|mentioned|wrote|suggested|described)|"
    r"you (?:said|mentioned|wrote|suggested|described|listed|gave|used)|(?:what|how) about|"
    r"your (?:\w+ )?(?:answer|response|reply|explanation|example|examples|list|code|solution|suggestion|plan|"
    r"story|poem)|"
    r"(?:that|this|these|those|the same|the first|the second|the third|the last) (?:\w+ )?(?:answer|response|"
    r"example|examples|list|code|solution|approach|idea|plan|story|poem|method|task|one|ones)|follow[- ]up|"
    r"instead)\b",
    re.IGNORECASE,
)


def max_turns_of(config: Any) -> int:
    n = (config.algorithm.task_options or {}).get("max_turns", DEFAULT_MAX_TURNS)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--max-turns must be a whole number of 1 or more (got {n!r})")
    return n


def rules(config: Any):
    max_turns_of(config)  # a bad option is refused before the chain is built
    return CHAT


def render_turns(messages: list[dict[str, str]]) -> str:
    return "\n".join(f"{SPEAKERS.get(m['role'], m['role'])}: {m['content'].strip()}" for m in messages)


def user_turns(record: Record) -> int:
    """User turns in the conversation `record` ends."""
    return 1 + sum(1 for m in record.history if m["role"] == "user")


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _CONTENT.findall(text)) if w not in STOP_WORDS}


def not_a_follow_up(new_turn: str, conversation: list[dict[str, str]]) -> tuple[Verdict | None, dict[str, Any]]:
    """A follow-up must build on the conversation: share a content word with it, or refer to it; and it must
    not repeat the user's last turn. Returns (verdict, evidence): the evidence is kept on a kept row too."""
    last_user = next((m["content"] for m in reversed(conversation) if m["role"] == "user"), "")
    shared = sorted(content_words(new_turn) & content_words(" ".join(m["content"] for m in conversation)))
    refs = sorted({m.group(0).lower() for m in _REFERS.finditer(new_turn)})
    evidence: dict[str, Any] = {"shared_words": len(shared), "examples": shared[:5], "references": refs[:5]}
    if " ".join(new_turn.lower().split()) == " ".join(last_user.lower().split()):
        return Verdict(NOT_A_FOLLOW_UP, {**evidence, "repeats_last_turn": True}), evidence
    if not shared and not refs:
        return Verdict(NOT_A_FOLLOW_UP, {**evidence, "excerpt": new_turn[:160]}), evidence
    return None, evidence


class ConversationChain(Chain):
    """The chain on conversations: the last user turn evolves in context, or a follow-up turn is added."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.max_turns = max_turns_of(config)

    # ------------------------------------------------------------ the seed: answer turns a file lacks
    async def run(self, seed: Seed) -> None:
        if any(m["role"] == "assistant" and not m["content"].strip() for m in seed.history):
            history = await self._answer_history(seed)
            if history is None:
                return
            seed = replace(seed, history=history)
        await super().run(seed)

    async def _answer_history(self, seed: Seed) -> list[dict[str, str]] | None:
        """MT-Bench rows: each empty assistant turn answered with the turns before it, in order."""
        root_id = seed_record_id(seed.index, seed.instruction, seed.input)
        history: list[dict[str, str]] = []
        for n, message in enumerate(seed.history):
            if message["role"] != "assistant" or message["content"].strip():
                history.append(message)
                continue
            request = Request(list(history), self._sampling(root_id, f"answer_turn_{n}"))
            result = await self.roles.responder("answer", request, self._remaining(0, 1))
            if not result.ok:
                root = Record(id=root_id, root_id=root_id, parent_id=None, epoch=0, op="seed",
                              instruction=seed.instruction, input=seed.input, meta={"source": seed.source},
                              history=seed.history, status="error", reason="call_failed",
                              evidence={"purpose": "answer", "turn": n, "error": result.error})
                self.commit([root], seed.index, 0, root_id, "error")
                self._tick(root)
                return None
            history.append({"role": "assistant", "content": result.text})
        return history

    # ------------------------------------------------------------ the chain's hooks
    async def _evolve_once(self, parent: Record, epoch: int, weights: dict[str, float] | None = None) -> Record:
        weights = weights or self.weights
        if user_turns(parent) >= self.max_turns and weights.get(FOLLOW_UP, 0) > 0:
            # At the cap the last turn can only be rewritten: the other operations keep their weights, or
            # (when follow_up was the only one weighted) are drawn uniformly.
            rest = {op: w for op, w in weights.items() if op != FOLLOW_UP}
            weights = rest if any(w > 0 for w in rest.values()) else dict.fromkeys(rest, 1.0)
        return await super()._evolve_once(parent, epoch, weights)

    def child_history(self, parent: Record, op: str) -> list[dict[str, str]]:
        if op != FOLLOW_UP:
            return parent.history
        return [*parent.history, {"role": "user", "content": parent.prompt(self.separator)},
                {"role": "assistant", "content": parent.output}]

    def evolving_prompt(self, parent: Record, op: str, rendered: str) -> str:
        context = self.child_history(parent, op)
        if not context:
            return rendered  # a one-turn conversation's in-depth prompt is the paper's, unwrapped
        return CONTEXT.replace("{conversation}", render_turns(context)) + rendered

    def judges(self, op: str) -> bool:
        return op != FOLLOW_UP

    def check_new_turn(self, child: Record, parent: Record) -> Verdict | None:
        if child.op != FOLLOW_UP:
            return None
        verdict, evidence = not_a_follow_up(child.instruction, child.history)
        child.meta["follow_up"] = evidence
        return verdict


class ConversationTally:
    """stats.json `task` for conversations: rule counts, success per operation, turns per kept record."""

    def __init__(self) -> None:
        self.ops = OpTally()
        self.turns: Counter = Counter()

    def add(self, record: Record) -> None:
        if record.status == "kept":
            self.turns[str(user_turns(record))] += 1
        self.ops.add(record)

    def stats(self) -> dict[str, Any]:
        return {
            "name": "conversation",
            **self.ops.stats(),
            "user_turns_kept": {k: self.turns[k] for k in sorted(self.turns, key=int)},
        }


TASK = Task(
    name="conversation",
    templates="conversation",
    rules=rules,
    chain="evolinstruct.evolve.tasks.conversation:ConversationChain",
    tally=ConversationTally,
    options=("max_turns",),
    conversations=True,
)
