"""The paper's task: general instructions, the four elimination rules (plus truncation)."""

from __future__ import annotations

from ..rules import CHAT
from . import Task

TASK = Task(name="chat", templates="paper", rules=lambda _config: CHAT)
