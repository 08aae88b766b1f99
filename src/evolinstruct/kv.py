"""KEY=VALUE option lists ('mutation=2,deepening=1', 'difficulty=5'): the one parser every command uses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def parse_pairs(text: str | Iterable[str] | None, option: str, key_type: type = str,
                allow_negative: bool = False) -> dict[Any, float]:
    """'0=1,1=2' (or a list of such strings, from a repeatable option) -> {0: 1.0, 1: 2.0}.

    Weights are numbers >= 0; thresholds (`allow_negative`) may be any number. A bad pair raises a
    ValueError whose one line names the option and the pair.
    """
    parts = (text or "").split(",") if isinstance(text, str) or text is None else [p for t in text for p in t.split(",")]
    out: dict[Any, float] = {}
    for part in parts:
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            parsed = float(value)
            if parsed < 0 and not allow_negative:
                raise ValueError
            out[key_type(key.strip())] = parsed
        except ValueError:
            kind = "EPOCH" if key_type is int else "NAME"
            number = "a number" if allow_negative else "a number >= 0"
            raise ValueError(f"{option}: '{part.strip()}' is not {kind}=NUMBER ({number})") from None
    return out
