"""The one record type that flows through a run, and the ids and seeds that make a run deterministic.

Every id, random choice and sampling seed is a pure function of stable inputs, never of global random
state, the concurrency or the machine. The formulas below are frozen: stored runs are keyed by them.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_INPUT_SEPARATOR = "\r\n"  # the WizardLM repo joins instruction and input with "\r\n"


# ---------------------------------------------------------------------------------------- ids and seeds
def stable_hash(*parts: Any, length: int = 16) -> str:
    """A short hex digest of JSON-encoded parts; the same inputs give the same id on every machine."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def rng_for(*key: object) -> random.Random:
    """A private generator seeded from a stable digest of `key` (evolve's operation and sampling draws)."""
    digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def request_seed(run_seed: int, record_id: str, purpose: str) -> int:
    """A per-request sampling seed, so a local model samples the same tokens at any batch size."""
    return rng_for("sample", run_seed, record_id, purpose).randrange(2**31)


def derive_seed(*parts: object) -> int:
    """A sampling seed from parts such as (run seed, role, question, turn) (eval's draws)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:8], 16)


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of a file's sha256: what binds a run to its input file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def join_input(instruction: str, input_text: str, separator: str = REPO_INPUT_SEPARATOR) -> str:
    """The prompt text of an instruction with its input, as the WizardLM repo joins them."""
    return f"{instruction}{separator}{input_text}" if input_text.strip() else instruction


def seed_record_id(index: int, instruction: str, input_text: str) -> str:
    return "s-" + stable_hash("seed", index, instruction, input_text, length=14)


def child_record_id(parent_id: str, epoch: int, op: str) -> str:
    return "e-" + stable_hash("evol", parent_id, epoch, op, length=14)


@dataclass(slots=True)
class Seed:
    """One seed as read from a file: `source` is 'path:line' so errors and lineage can point at it."""

    index: int
    instruction: str
    input: str = ""
    output: str = ""
    source: str = ""
    history: list[dict[str, str]] = field(default_factory=list)  # a conversation's earlier turns (messages)


@dataclass(slots=True)
class Record:
    """An instruction with its response and lineage: the last turn of a conversation.

    `history` holds the conversation's earlier turns as chat messages (empty for single-turn data, the
    paper's case); `instruction` + `input` are the last user turn and `output` its answer. `messages()`
    is the whole conversation. Seeds have epoch 0 and op "seed". An eliminated record keeps its `reason`
    and `evidence`; a failed call leaves `status="error"` with the error text in `evidence`.
    """

    id: str
    root_id: str
    parent_id: str | None
    epoch: int
    op: str
    instruction: str
    input: str = ""
    output: str = ""
    model: str = ""
    status: str = "kept"  # kept | eliminated | error
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)

    def prompt(self, separator: str = REPO_INPUT_SEPARATOR) -> str:
        """The last user turn's text: the instruction joined with its input."""
        return join_input(self.instruction, self.input, separator)

    def messages(self, separator: str = REPO_INPUT_SEPARATOR, with_output: bool = True) -> list[dict[str, str]]:
        """The conversation as chat messages: earlier turns, this user turn, and its answer."""
        msgs = [*self.history, {"role": "user", "content": self.prompt(separator)}]
        if with_output:
            msgs.append({"role": "assistant", "content": self.output})
        return msgs

    def to_dict(self) -> dict[str, Any]:
        # Spelled out: dataclasses.asdict deep-copies recursively and costs ~4% of a run's CPU at 1,000 req/s.
        data = {
            "id": self.id, "root_id": self.root_id, "parent_id": self.parent_id, "epoch": self.epoch, "op": self.op,
            "instruction": self.instruction, "input": self.input, "output": self.output, "model": self.model,
            "status": self.status, "reason": self.reason, "evidence": dict(self.evidence), "meta": dict(self.meta),
        }
        if self.history:  # single-turn records keep the stored shape they always had
            data["history"] = list(self.history)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**data)

    def dataset_row(self) -> dict[str, Any]:
        """The line written to dataset.jsonl / eliminated.jsonl."""
        row: dict[str, Any] = {
            "id": self.id,
            "instruction": self.instruction,
            "input": self.input,
            "output": self.output,
            "root_id": self.root_id,
            "parent_id": self.parent_id,
            "epoch": self.epoch,
            "op": self.op,
            "model": self.model,
        }
        if self.history:
            row["history"] = self.history
        if self.status != "kept":
            row["status"] = self.status
            row["reason"] = self.reason
            row["evidence"] = self.evidence
        row.update(self.meta)
        return row
