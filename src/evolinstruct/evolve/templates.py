"""Evolution prompt sets, kept as JSON data files: `paper`, `repo`, or a user's own file.

A template set maps each operation to a prompt with an `{instruction}` slot (complicate_input has one
prompt per data format). It also carries the equality-check and difficulty prompts. Rendering uses
plain replacement of the slot names, so braces in an instruction are never interpreted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

IN_DEPTH_OPS = ("add_constraints", "deepening", "concretizing", "increased_reasoning", "complicate_input")
IN_BREADTH_OPS = ("mutation",)
ALL_OPS = IN_DEPTH_OPS + IN_BREADTH_OPS
BUILTIN_SETS = ("paper", "repo", "math", "code", "conversation")


class TemplateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TemplateSet:
    name: str
    operations: dict[str, dict[str, Any]]
    equality: str
    difficulty: str
    system: str | None = None
    source: str = ""

    @property
    def ops(self) -> tuple[str, ...]:
        """Operations this set supports, in canonical order (the repo set has no complicate_input)."""
        return tuple(op for op in ALL_OPS if op in self.operations) + tuple(
            op for op in self.operations if op not in ALL_OPS
        )

    def data_formats(self, op: str) -> list[str]:
        return sorted(self.operations[op].get("by_format", {}))

    def render(self, op: str, instruction: str, data_format: str | None = None) -> str:
        spec = self.operations[op]
        if "by_format" in spec:
            if data_format is None:
                raise TemplateError(f"operation '{op}' needs a data format")
            template = spec["by_format"][data_format]
        else:
            template = spec["template"]
        return template.replace("{instruction}", instruction)

    def extract(self, op: str, text: str) -> str:
        """The evolved instruction in an evolving call's answer. An operation with `final_markers` (Auto
        Evol-Instruct's methods answer in steps, the instruction last) takes the text after the last
        occurrence of its first marker found; without any of them, the whole answer, as the official
        optimizer's `split(marker)[-1]` does. Other operations: the whole answer."""
        return extract_final(text, self.operations[op].get("final_markers", ()))

    def render_equality(self, first: str, second: str) -> str:
        return self.equality.replace("{first}", first).replace("{second}", second)

    def render_difficulty(self, instruction: str) -> str:
        return self.difficulty.replace("{instruction}", instruction)

    def messages(self, prompt: str) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": prompt}]

    def digest(self) -> str:
        """What a run is bound to: the operations, equality and system prompts (frozen formula)."""
        return hashlib.sha256(
            repr(sorted((k, repr(v)) for k, v in self.operations.items())).encode()
            + self.equality.encode()
            + (self.system or "").encode()
        ).hexdigest()[:16]

    def to_data(self) -> dict[str, Any]:
        """The set as its JSON file has it: a run stores this, so later commands use the very same prompts."""
        data: dict[str, Any] = {"name": self.name, "operations": self.operations, "equality": self.equality,
                                "difficulty": self.difficulty, "source": self.source}
        if self.system:
            data["system"] = self.system
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any], origin: str = "stored template set") -> TemplateSet:
        return _validate(data, origin)


def extract_final(text: str, markers: tuple[str, ...] | list[str] = ()) -> str:
    """The text after the last occurrence of the first of `markers` found in `text`; else all of it."""
    for marker in markers:
        if marker in text:
            return text.rsplit(marker, 1)[1].strip()
    return text.strip()


def _validate(data: dict[str, Any], origin: str) -> TemplateSet:
    for key in ("operations", "equality"):
        if key not in data:
            raise TemplateError(f"{origin}: template set has no '{key}'")
    ops = data["operations"]
    if not isinstance(ops, dict) or not ops:
        raise TemplateError(f"{origin}: 'operations' must be a non-empty object")
    for op, spec in ops.items():
        templates = list(spec.get("by_format", {}).values()) or [spec.get("template")]
        for template in templates:
            if not isinstance(template, str) or "{instruction}" not in template:
                raise TemplateError(f"{origin}: operation '{op}' needs a 'template' string with an {{instruction}} slot")
        markers = spec.get("final_markers", [])
        if not isinstance(markers, list) or not all(isinstance(m, str) and m for m in markers):
            raise TemplateError(f"{origin}: operation '{op}': 'final_markers' must be a list of non-empty strings")
    for key, slots in (("equality", ("{first}", "{second}")), ("difficulty", ("{instruction}",))):
        text = data.get(key)
        if text is not None and not all(s in text for s in slots):
            raise TemplateError(f"{origin}: '{key}' prompt must contain {' and '.join(slots)}")
    difficulty = data.get("difficulty") or load_templates("paper").difficulty
    return TemplateSet(
        name=data.get("name", origin),
        operations=ops,
        equality=data["equality"],
        difficulty=difficulty,
        system=data.get("system"),
        source=data.get("source", origin),
    )


def load_templates(name_or_path: str) -> TemplateSet:
    """`paper`, `repo`, or the path of a JSON file of the same shape (see docs/TEMPLATES.md)."""
    if name_or_path in BUILTIN_SETS:
        text = resources.files("evolinstruct.evolve.template_sets").joinpath(f"{name_or_path}.json").read_text("utf-8")
        return _validate(json.loads(text), name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise TemplateError(f"{path}:0: no such template file (built-in sets: {', '.join(BUILTIN_SETS)})")
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    return _validate(data, str(path))
