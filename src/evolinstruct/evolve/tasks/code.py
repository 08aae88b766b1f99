"""Programming tasks, as WizardCoder evolves them (Code Evol-Instruct, arXiv 2306.08568).

- Operations (template set `code`): WizardCoder's prompt with each of its five methods (add_constraints,
  rarer_requirement, more_reasoning_steps, erroneous_code_reference, complexity_requirements) and an
  in-breadth `mutation` of our own. The paper asks for the complexity method sparingly, so by default it is
  drawn half as often as each other operation (`OP_WEIGHTS`; `--ops` overrides).
- Rules: the chat rules (empty_evolution, copied_prompt_words, also for WizardCoder's "#Given Test#"
  markers, the equality judge, sorry_short_response, punctuation_stopwords_only, truncated) plus:
  `no_code` (the answer holds no code, in any language) on the response, then in the chain variant
  (`CodeChain.check_answer`, which sees the question too, so code quoted from it is not the answer's own):
  `code_syntax` (a Python block does not parse) and, with `exec_check`, `code_crashes` and `code_timeout`
  (the answer's Python, its asserts and doctests included, run in the sandbox of evolve/sandbox.py).
- Evidence: every evolution whose answer was checked carries `"code"` (blocks, languages, asserts, doctests)
  and, with `exec_check`, `"sandbox"` (outcome, return code, stdout head, stderr tail, isolation) on its row.
- Tally (stats.json `task`): rule counts, success per operation, sandbox outcomes.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from ...records import Record
from ..chain import Chain
from ..rules import (
    RuleSet,
    Verdict,
    copied_phrase,
    copied_prompt_words,
    empty_evolution,
    punctuation_stopwords_only,
    sorry_short_response,
)
from ..sandbox import run_python
from . import OpTally, Task

NO_CODE = "no_code"
CODE_SYNTAX = "code_syntax"
CODE_CRASHES = "code_crashes"
CODE_TIMEOUT = "code_timeout"
REASONS = (NO_CODE, CODE_SYNTAX, CODE_CRASHES, CODE_TIMEOUT)

# WizardCoder: "Propose higher time or space complexity requirements, but please refrain from doing so frequently."
OP_WEIGHTS = ("add_constraints=1,rarer_requirement=1,more_reasoning_steps=1,erroneous_code_reference=1,"
              "complexity_requirements=0.5,mutation=1")
# The code prompts' words about themselves (rule 4, as COPIED_PHRASES for the chat prompts).
COPIED_TEST_PHRASES = ("#given test#", "#rewritten test#", "#created test#", "given programming test question")
PYTHON_LANGS = frozenset({"python", "py", "python3", "py3", "pycon", "ipython"})

# ------------------------------------------------------------------------------------------ finding code
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([^\s`]*)")
_PY_START = re.compile(r"^(?:async\s+def|def|class)\s+\w|^(?:import\s+\w|from\s+[\w.]+\s+import\s)|^@\w|^if __name__")
_PY_LINE = re.compile(
    r"^(?:#|[A-Za-z_][\w.]*(?:\[[^\]]*\])?\s*(?:[-+*/%|&^]|//|\*\*)?=[^=]|[A-Za-z_][\w.]*\(.*\)\s*$|"
    r"(?:print|return|assert|for|while|if|elif|else|try|except|finally|with|raise|del|pass|break|continue|"
    r"global|nonlocal|yield|lambda)\b)"
)
_PY_MARKERS = re.compile(
    r"^\s*(?:async\s+)?def\s+\w+\s*\(|^\s*class\s+\w+.*:\s*$|^\s*(?:import\s+\w|from\s+[\w.]+\s+import\s)|"
    r"\bprint\(|^\s*elif\b|\bself\.|^\s*if __name__", re.M)
_OTHER_MARKERS = re.compile(
    r";\s*$|\{\s*$|^\s*\}|^\s*(?:function|var|let|const|public|private|protected|static|package|using|fn|func|"
    r"echo|SELECT|INSERT|UPDATE|DELETE|CREATE)\b|#include|console\.log|System\.out|^\s*<[A-Za-z!/]|^\s*\$ ", re.M)
# A line of code in some language, for no_code: statements, blocks, tags, queries, shell prompts.
_CODE_LINE = re.compile(
    r"""(?x)
    ^\s*(?:def|class|import|from\s+\S+\s+import|return|print\(|for\s.*:|while\s.*:|if\s.*:|elif\s|else:|try:|except
        |function\s|var\s|let\s|const\s|public\s|private\s|static\s|\#include|using\s|package\s|fn\s|func\s
        |SELECT\s|INSERT\s|UPDATE\s|DELETE\s|CREATE\s|ALTER\s|DROP\s|>>>\s|\$\s)
    | [;{}]\s*$
    | ^\s*</?[A-Za-z][\w-]*(?:\s[^>]*)?>
    | ^\s*[A-Za-z_][\w.\[\]'"]*\s*(?:[-+*/%]?=)\s*[^=\s]
    | ^\s*[A-Za-z_][\w.]*\([^()]*\)\s*;?\s*$
    """)


@dataclass(frozen=True, slots=True)
class Block:
    """A piece of code in an answer: a fenced block, or an unfenced run of Python lines."""

    text: str
    lang: str | None  # the fence's label, lower-cased; None: unlabelled or unfenced
    fenced: bool
    python: bool
    session: bool = False  # an interactive session (>>> lines): run as a doctest

    @property
    def label(self) -> str:
        return self.lang or ("unlabelled" if self.fenced else "unfenced")


def _is_session(text: str) -> bool:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    return first.lstrip().startswith(">>>")


def _real_python(text: str) -> bool:
    """It parses, and is more than a bare name or constant (prose such as "Sorting" parses too)."""
    try:
        tree = ast.parse(_without_magics(text))
    except (SyntaxError, ValueError):
        return False
    return any(not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant | ast.Name)) for s in tree.body)


def _looks_python(text: str) -> bool:
    """An unlabelled block: Python when it parses as such, or has Python's marks and no other language's."""
    return _real_python(text) or (bool(_PY_MARKERS.search(text)) and not _OTHER_MARKERS.search(text))


def _without_magics(text: str) -> str:
    """Notebook lines (`%matplotlib inline`, `!pip install x`) become comments, keeping line numbers."""
    return re.sub(r"^([ \t]*)([%!])", r"\1# \2", text, flags=re.M)


def _fenced(text: str) -> tuple[list[Block], list[str]]:
    """Fenced blocks (an unclosed fence runs to the end), and the lines outside them."""
    blocks: list[Block] = []
    outside: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            outside.append(lines[i])
            i += 1
            continue
        fence, lang = m.group(1), (m.group(2).lower() or None)
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence[0] * len(fence)):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        code = "\n".join(body).strip("\n")
        if not code.strip():
            continue
        session = _is_session(code)
        python = lang in PYTHON_LANGS if lang else (session or _looks_python(code))
        blocks.append(Block(code, lang, True, python, session and python))
    return blocks, outside


def _unfenced(lines: list[str]) -> list[Block]:
    """Python in text without fences: runs that open with def/class/import/a decorator (or >>>) and go on
    over indented, blank and statement-like lines, until a line of prose."""
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        session = line.startswith(">>>")
        if not (session or _PY_START.match(line)):
            i += 1
            continue
        run = [line]
        i += 1
        while i < len(lines):
            nxt = lines[i]
            if session and nxt.strip() or (not session and (not nxt.strip() or nxt[:1] in " \t"
                                                                or _PY_START.match(nxt) or _PY_LINE.match(nxt))):
                run.append(nxt)
                i += 1
            else:
                break
        code = "\n".join(run).strip("\n")
        blocks.append(Block(code, None, False, True, session))
    return blocks


def code_blocks(answer: str) -> list[Block]:
    """The code in an answer: its fenced blocks, or without fences the whole answer when it is Python, else
    its unfenced runs of Python lines."""
    blocks, outside = _fenced(answer)
    if blocks:
        return blocks
    whole = textwrap.dedent(answer).strip("\n")  # a Markdown code block indented by four spaces, say
    if _real_python(whole):
        return [Block(whole, None, False, True, _is_session(whole))]
    return _unfenced(outside)


def has_code(answer: str) -> bool:
    """Code in any language: a fenced block, Python, or lines of code (two, or most of a short answer)."""
    if code_blocks(answer):
        return True
    lines = [ln for ln in answer.splitlines() if ln.strip()]
    coded = sum(1 for ln in lines if _CODE_LINE.search(ln))
    return coded >= 2 or (coded >= 1 and 2 * coded >= len(lines))


def _normal(text: str) -> str:
    return "\n".join(ln.strip() for ln in text.splitlines() if ln.strip())


def own_python(answer: str, question: str = "") -> list[Block]:
    """The answer's own Python blocks: those quoted from the question (its erroneous reference code,
    say) are not checked or run."""
    quoted = _normal(question)
    return [b for b in code_blocks(answer) if b.python and not (quoted and _normal(b.text) in quoted)]


# ------------------------------------------------------------------------------------------ the rules
def copied_test_words(evolved: str) -> Verdict | None:
    """Rule 4 for the code prompts: the evolved question copies their words ("#Rewritten Test#")."""
    return copied_phrase(evolved, COPIED_TEST_PHRASES)


def no_code(response: str) -> Verdict | None:
    """The answer to a programming question holds no code."""
    if has_code(response):
        return None
    return Verdict(NO_CODE, {"excerpt": response[:160], "lines": len(response.splitlines())})


def syntax_error(block: Block) -> dict[str, Any] | None:
    """Where a Python block fails to parse (each example of a session is its own statement)."""
    if block.session:
        import doctest

        try:
            examples = doctest.DocTestParser().get_examples(block.text)
        except ValueError as exc:
            return {"error": f"doctest: {exc}"[:200]}
        sources = [(ex.source, ex.lineno + 1, "single") for ex in examples]
    else:
        sources = [(_without_magics(block.text), 0, "exec")]
    for source, offset, mode in sources:
        try:
            compile(source, "answer.py", mode, dont_inherit=True)
        except SyntaxError as exc:
            lineno = (exc.lineno or 1) + offset
            lines = block.text.splitlines()
            return {"error": f"{type(exc).__name__}: {exc.msg}", "line": lineno,
                    "text": lines[lineno - 1].strip()[:120] if 0 < lineno <= len(lines) else ""}
        except (ValueError, OverflowError) as exc:  # a null byte, a literal too large
            return {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return None


def code_syntax(response: str, question: str = "") -> Verdict | None:
    """A Python block of the answer (not one quoted from the question) does not parse."""
    for n, block in enumerate(own_python(response, question), start=1):
        if where := syntax_error(block):
            return Verdict(CODE_SYNTAX, {"block": n, "lang": block.label, **where})
    return None


def program(blocks: list[Block]) -> str:
    """One module from the answer's Python: its code blocks in order, its interactive sessions as doctests."""
    code = "\n\n".join(_without_magics(b.text) for b in blocks if not b.session)
    sessions = {f"session_{n}": b.text for n, b in enumerate((b for b in blocks if b.session), start=1)}
    if sessions:
        code += f"\n\n__test__ = {sessions!r}\n"
    return code


def tests_in(blocks: list[Block]) -> dict[str, int]:
    """The tests an answer writes itself: assert statements and doctest examples (in docstrings or sessions)."""
    asserts = doctests = 0
    for b in blocks:
        doctests += sum(1 for ln in b.text.splitlines() if ln.lstrip().startswith(">>>"))
        if not b.session:
            try:
                asserts += sum(isinstance(node, ast.Assert) for node in ast.walk(ast.parse(_without_magics(b.text))))
            except (SyntaxError, ValueError):
                pass
    return {"asserts": asserts, "doctests": doctests}


def code_rules(_config: Any) -> RuleSet:
    return RuleSet(
        "code",
        (empty_evolution, copied_prompt_words, copied_test_words),
        (sorry_short_response, punctuation_stopwords_only, no_code),
    )


# ------------------------------------------------------------------------------------------ the chain
_POOL: ThreadPoolExecutor | None = None


def sandbox_pool() -> ThreadPoolExecutor:
    """Threads that wait on sandboxed processes (so: sandboxes at once), shared by every run in the process:
    4 x the CPUs, at least 16 (code that sleeps until its time limit holds a thread, not a CPU), at most 64."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(64, max(16, 4 * (os.cpu_count() or 2))), thread_name_prefix="sandbox")
    return _POOL


class CodeChain(Chain):
    """The chain with the code checks on each evolution's answer: code_syntax, then (exec_check) the sandbox."""

    limits: ClassVar[dict[str, Any]] = {}  # run_python's keyword arguments (default: the sandbox's limits)

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.exec_check = bool(config.algorithm.task_options.get("exec_check"))

    async def check_answer(self, record: Record, epoch: int) -> Verdict | None:
        question = f"{record.instruction}\n{record.input}"
        blocks = code_blocks(record.output)
        own = own_python(record.output, question)
        record.meta["code"] = {"blocks": len(blocks), "languages": sorted({b.label for b in blocks}),
                               "python_blocks": len(own), **tests_in(own)}
        truncated = bool(record.meta.get("truncated"))
        if truncated and blocks and own and blocks[-1] == own[-1]:
            # An answer cut off at max_tokens is kept and marked, as in chat (--drop-truncated drops it): its
            # last block is cut off with it, so it is neither parsed nor run; its complete blocks are.
            own = own[:-1]
        for n, block in enumerate(own, start=1):
            if where := syntax_error(block):
                return Verdict(CODE_SYNTAX, {"block": n, "lang": block.label, **where})
        if not self.exec_check:
            return None
        if not own:
            why = "the answer's only Python was cut off" if truncated and record.meta["code"]["python_blocks"] else (
                "no Python code")
            record.meta["sandbox"] = {"outcome": "skipped", "why": why}
            return None
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(sandbox_pool(), partial(run_python, program(own), **self.limits))
        evidence = result.evidence()
        record.meta["sandbox"] = evidence
        if result.outcome in ("crash", "timeout"):
            reason = CODE_CRASHES if result.outcome == "crash" else CODE_TIMEOUT
            return Verdict(reason, {k: evidence[k] for k in ("outcome", "returncode", "error", "stderr") if k in evidence})
        return None


# ------------------------------------------------------------------------------------------ the tally
class CodeTally:
    """stats.json `task` for code: rule counts, success per operation, sandbox outcomes."""

    def __init__(self) -> None:
        self.ops = OpTally()
        self.sandbox: Counter = Counter()
        self.blocked: Counter = Counter()
        self.isolation: Counter = Counter()
        self.tests: Counter = Counter()

    def add(self, record: Record) -> None:
        if not self.ops.add(record):
            return
        sandbox = record.meta.get("sandbox")
        if isinstance(sandbox, dict):
            self.sandbox[sandbox.get("outcome", "?")] += 1
            if sandbox.get("blocked"):
                self.blocked[str(sandbox["blocked"]).split(":")[0]] += 1
            if sandbox.get("isolation"):
                self.isolation[f"{sandbox['isolation']}/{sandbox.get('filesystem', 'none')}"] += 1
        code = record.meta.get("code")
        if isinstance(code, dict) and (code.get("asserts") or code.get("doctests")):
            self.tests["answers_with_tests"] += 1

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": "code",
            **self.ops.stats(),
            "sandbox": dict(sorted(self.sandbox.items())),
        }
        if self.blocked:
            out["sandbox_blocked"] = dict(sorted(self.blocked.items()))
        if self.isolation:
            out["sandbox_isolation"] = dict(sorted(self.isolation.items()))
        if self.tests:
            out["answers_with_tests"] = self.tests["answers_with_tests"]
        return out


TASK = Task(
    name="code",
    templates="code",
    rules=code_rules,
    chain="evolinstruct.evolve.tasks.code:CodeChain",
    tally=CodeTally,
    options=("exec_check",),
    op_weights=OP_WEIGHTS,
)
