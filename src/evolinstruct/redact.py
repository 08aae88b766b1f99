"""Keys never leave the process: `redact` masks them in any text bound for the store, a file, a log or the console.

Servers echo credentials back more often than one would like (a proxy quoting the Authorization header, a
gateway repeating `api_key=...` from the URL, "Incorrect API key provided: sk-..."). Every error text a
backend returns goes through `redact` first, with the key in use as a secret, so run.sqlite, errors.jsonl,
logs and the console only ever hold `[redacted]`.

Masked: the secrets given (exactly), and common key shapes whoever they belong to: `sk-...` (OpenAI,
`sk-proj-...`, Anthropic's `sk-ant-...`), `Bearer <token>`, `api_key=...` / `"api_key": "..."` (also
`api-key`, `apikey`, `x-api-key`, `access_token`), Hugging Face `hf_...`, Groq `gsk_...` and Google `AIza...`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "[redacted]"

# A secret shorter than this is not masked on its own (it would mask ordinary words); key shapes still are.
MIN_SECRET = 6

_SHAPES = re.compile(
    r"""
    \b(?:sk-ant-|sk-)[A-Za-z0-9_\-]{8,}            # OpenAI / Anthropic style keys
    | \b(?i:bearer)\s+[A-Za-z0-9._~+/=\-]{4,}      # an Authorization header's token (any case)
    | \bhf_[A-Za-z0-9]{16,}                         # Hugging Face tokens
    | \bgsk_[A-Za-z0-9]{16,}                        # Groq keys
    | \bAIza[A-Za-z0-9_\-]{20,}                     # Google API keys
    """,
    re.VERBOSE,
)
# name=value or "name": "value": the name stays, the value goes.
_NAMED = re.compile(
    r"""(?P<name>\b(?:x-)?api[_-]?key|\baccess[_-]?token|\bauth[_-]?token)
        (?P<sep>["']?\s*[:=]\s*["']?)
        (?P<value>(?!\[redacted\])[^\s"'&,;}\]]+)""",
    re.IGNORECASE | re.VERBOSE,
)


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every given secret and every key-shaped string replaced by `[redacted]`."""
    if not text:
        return text
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET and secret in text:
            text = text.replace(secret, MASK)
    text = _NAMED.sub(lambda m: m.group("name") + m.group("sep") + MASK, text)
    return _SHAPES.sub(MASK, text)
