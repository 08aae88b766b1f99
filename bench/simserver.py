#!/usr/bin/env python3
"""A latency-simulating OpenAI-compatible chat-completions server, for throughput benchmarks.

No model: every answer is derived from a hash of the request body, so the same request always gets
the same latency draw and the same text, whatever the client, concurrency or order.

  - `--slots C`: at most C requests are "in service" at once; the rest wait in a FIFO queue, as on an
    inference server with C batch slots. The ideal throughput is C / L requests per second.
  - `--latency-mean L --sigma S`: service time is lognormal with mean L, i.e. exp(mu + S*z) with
    mu = ln(L) - S^2/2 and z a standard normal drawn from the body hash.
  - Answers that the Evol-Instruct elimination rules keep: an evolving prompt ('Rewritten Prompt' /
    'Created Prompt') gets a new instruction made from the given prompt's words plus a harder suffix;
    an equality prompt ('Equal or Not Equal') gets "Not Equal" (or "Equal" for a `--rate-equal` share);
    Auto Evol-Instruct's prompts (`evolinstruct optimize`): an evolving method gets a '#Finally Rewritten
    Instruction#:' line, a method optimization gets the method with one more rule in an Optimized Method block;
    anything else gets a 40-80 word answer, truncated to `max_tokens` words.
    `usage` counts whitespace words.
  - `--op-elim "add_constraints=0.9,concretizing=0.9"`: per-operation elimination. An evolving prompt of a
    named operation (recognised by its method line, `OP_MARKERS`) is answered, for that share of requests
    (decided by the body's hash), with the given prompt copied unchanged; the equality judge answers "Equal"
    whenever its two prompts are the same, so rule 1 eliminates the copy (two calls spent, nothing kept).
  - Faults, decided per attempt (hash of the body and of how many times this server has seen that
    body), so a retry of the same request can succeed: `--rate-429` (with Retry-After), `--rate-500`,
    `--rate-drop` (the connection is closed without a response, after the service time),
    `--rate-slow` (adds `--slow-seconds` to the service time, holding the slot).
  - `GET /v1/models`, `GET /stats` (counters, max in service, max in flight), `POST /stats/reset`.
  - `--trace FILE`: one line per attempt (time, body hash, attempt number, fault), to study retries.

Run: `python bench/simserver.py --port 0 --slots 256 --latency-mean 0.5 --sigma 0.5`; the first line
on stdout is `listening on http://127.0.0.1:PORT` (flushed), the base URL for clients is
`http://127.0.0.1:PORT/v1`. Only ever binds 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import re
import socket
import sys
import time
from collections import Counter

from aiohttp import web

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from simbatch import add_batch_args, add_batch_routes  # noqa: E402 - beside this file

try:  # optional speed-ups; the server works without them
    import orjson

    def _loads(b: bytes):
        return orjson.loads(b)

    def _dumps(o) -> bytes:
        return orjson.dumps(o)
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

    def _dumps(o) -> bytes:
        return json.dumps(o, separators=(",", ":")).encode()


MASK64 = (1 << 64) - 1

SUFFIXES = (
    ", and explain each step with an example",
    ", and justify every assumption you make",
    ", using no more than three paragraphs and one table",
    ", then compare two alternative approaches and their trade-offs",
    ", and include a short worked example with concrete numbers",
    ", while considering at least one edge case and how to handle it",
    ", and state the time and space complexity of your approach",
    ", written for a reader with no background in the subject",
    ", and list the sources of uncertainty in your reasoning",
    ", and finish with a one-sentence summary of the key idea",
    ", and provide a counterexample that shows a common mistake",
    ", considering both historical and modern perspectives",
)

OPENERS = (
    "Design a detailed plan to",
    "Explain, step by step, how to",
    "Describe a realistic scenario in which someone needs to",
    "Write a short guide that shows how to",
    "Propose an unusual way to",
    "Compare three different ways to",
)

VOCAB = (
    "first consider the main goal and the constraints that shape it then break the problem into smaller "
    "parts each part can be handled on its own and checked before moving on a careful approach starts "
    "with clear definitions collects the relevant facts and tests every assumption against an example "
    "the result should be simple to verify easy to explain and robust when conditions change in practice "
    "this means writing down the inputs describing the expected output and comparing alternatives by cost "
    "accuracy and clarity a good summary names the key idea the main trade off and the next step"
).split()

_GIVEN = re.compile(r"#(?:The )?Given Prompt#:?\s*\n(.*?)\n\s*#(?:Rewritten|Created) Prompt#", re.S)
_WORDS_OK = re.compile(r"[^\s#]+")
_JUDGED = re.compile(r"The First Prompt:\s*(.*?)\s*The Second Prompt:\s*(.*?)\s*Your Judgement", re.S)
# The operation of an evolving prompt, by its method line (the paper's and the repo's prompts), for --op-elim.
OP_MARKERS = (
    ("mutation", "Prompt Creator"),
    ("complicate_input", "dataformat"),
    ("add_constraints", "add one more constraints"),
    ("deepening", "depth and breadth of the inquiry can be increased"),
    ("concretizing", "more specific concepts"),
    ("increased_reasoning", "multiple-step reasoning"),
)


def op_of(prompt: str) -> str | None:
    return next((op for op, marker in OP_MARKERS if marker in prompt), None)


def copied_given(prompt: str) -> str | None:
    """The instruction an evolving prompt gives (the last one: complicate_input shows an example first)."""
    found = _GIVEN.findall(prompt)
    return found[-1].strip() if found else None


def _hash(body: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "little")


def _uniform(h: int, salt: int) -> float:
    """A deterministic uniform in (0, 1) from a 64-bit hash and a salt (splitmix64 finaliser)."""
    z = (h + 0x9E3779B97F4A7C15 * (salt + 1)) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return (z + 0.5) / 18446744073709551616.0


def _text_of(messages) -> str:
    parts = []
    for m in messages or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):  # content parts
            parts.extend(p.get("text", "") for p in c if isinstance(p, dict))
    return "\n".join(parts)


def _kind(prompt: str) -> str:
    if "Equal or Not Equal" in prompt:
        return "equality"
    if "```Optimized Method" in prompt and "```Method\n" in prompt:
        return "optimize"  # Auto Evol-Instruct's method optimization (evolinstruct optimize)
    if "#Finally Rewritten Instruction#" in prompt:
        return "auto_evolve"  # an evolving method of Auto Evol-Instruct
    if "Rewritten Prompt" in prompt or "Created Prompt" in prompt:
        return "evolve"
    return "answer"


def make_evolution(prompt: str, rng: random.Random) -> str:
    m = _GIVEN.search(prompt)
    given = m.group(1) if m else prompt[-400:]
    words = _WORDS_OK.findall(given)
    # Never echo the evolving prompt's own words (elimination rule 4).
    words = [w for w in words if w.lower().strip("'\"‘’:") not in ("prompt", "prompt#", "given", "rewritten", "created")]
    if not words:
        words = rng.sample(VOCAB, 8)
    words = words[:90]  # keep chains from growing without bound over many epochs
    if "Created Prompt" in prompt:  # in-breadth: a new prompt in the same domain
        k = min(len(words), rng.randint(4, 10))
        start = rng.randint(0, max(0, len(words) - k))
        core = " ".join(words[start : start + k]).rstrip(".?!,;:")
        return f"{rng.choice(OPENERS)} {core}{rng.choice(SUFFIXES)}."
    core = " ".join(words).rstrip(".?!,;:")
    return f"{core}{rng.choice(SUFFIXES)}."


def make_method(prompt: str, rng: random.Random) -> str:
    """Auto Evol-Instruct's optimizer: the given method with one more rule, in an Optimized Method block."""
    method = prompt.rsplit("```Method\n", 1)[-1].rsplit("```", 1)[0]
    rule = f"Rule {rng.randint(1, 999)}: the rewritten instruction must stay self-contained{rng.choice(SUFFIXES)}.\n"
    return f"Here is the optimized method.\n```Optimized Method\n{rule}{method}```\n"


def make_answer(prompt: str, rng: random.Random) -> str:
    pwords = [w for w in _WORDS_OK.findall(prompt[:600]) if w.isalpha() and len(w) > 3][:30]
    n = rng.randint(40, 80)
    pool = VOCAB + pwords * 2
    out = [rng.choice(pool) for _ in range(n)]
    out[0] = out[0].capitalize()
    # a few sentence breaks
    for i in range(rng.randint(8, 14), n - 1, rng.randint(10, 16)):
        out[i] += "."
        out[i + 1] = out[i + 1].capitalize()
    return " ".join(out) + "."


class Sim:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mu = math.log(args.latency_mean) - args.sigma**2 / 2 if args.latency_mean > 0 else None
        self.slots = asyncio.Semaphore(args.slots) if args.slots > 0 else None
        self.attempts: dict[int, int] = {}
        self.trace = open(args.trace, "a", buffering=1 << 16) if args.trace else None
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.completed = 0
        self.faults: Counter = Counter()
        self.by_kind: Counter = Counter()
        self.in_service = 0
        self.max_in_service = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.service_seconds = 0.0
        self.bad_requests = 0
        self.first_request_at: float | None = None  # wall clock, for the active window of a run
        self.last_done_at: float | None = None

    def latency(self, h: int) -> float:
        if self.mu is None:
            return 0.0
        u1, u2 = _uniform(h, 1), _uniform(h, 2)
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        return math.exp(self.mu + self.args.sigma * z)

    def fault(self, h: int, attempt: int) -> str | None:
        a = self.args
        u = _uniform(h ^ ((attempt + a.fault_seed * 1_000_003) * 0x2545F4914F6CDD1D & MASK64), 7)
        for kind, p in (("429", a.rate_429), ("500", a.rate_500), ("drop", a.rate_drop), ("slow", a.rate_slow)):
            if u < p:
                return kind
            u -= p
        return None

    # ------------------------------------------------------------------ handlers
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests += 1
        if self.first_request_at is None:
            self.first_request_at = time.time()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat(request, body)
        finally:
            self.in_flight -= 1
            self.last_done_at = time.time()

    async def _chat(self, request: web.Request, body: bytes) -> web.StreamResponse:
        try:
            payload = _loads(body)
            messages = payload["messages"]
        except Exception:
            self.bad_requests += 1
            return web.json_response({"error": {"message": "bad request: need JSON with messages"}}, status=400)
        h = _hash(body)
        attempt = self.attempts.get(h, 0)
        self.attempts[h] = attempt + 1
        fault = self.fault(h, attempt) if self.args.faults else None
        if self.trace is not None:  # one line per attempt: time, body hash, attempt number, fault
            self.trace.write(f"{time.time():.4f} {h:016x} {attempt} {fault or '-'}\n")
        if fault == "429":
            self.faults["429"] += 1
            return web.json_response(
                {"error": {"message": "simulated rate limit", "type": "rate_limit"}},
                status=429, headers={"Retry-After": str(self.args.retry_after)},
            )
        if fault == "500":
            self.faults["500"] += 1
            return web.json_response({"error": {"message": "simulated server error"}}, status=500)

        prompt = _text_of(messages)
        kind = _kind(prompt)
        self.by_kind[kind] += 1
        delay = self.latency(h)
        if fault == "slow":
            self.faults["slow"] += 1
            delay += self.args.slow_seconds

        if self.slots is not None:
            await self.slots.acquire()
        self.in_service += 1
        self.max_in_service = max(self.max_in_service, self.in_service)
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            self.service_seconds += delay
        finally:
            self.in_service -= 1
            if self.slots is not None:
                self.slots.release()

        if fault == "drop":
            self.faults["drop"] += 1
            transport = request.transport
            if transport is not None:
                transport.abort()  # RST/close without any response bytes
            raise asyncio.CancelledError  # aiohttp treats this as a lost connection: nothing is written

        out = self.completion(payload, h, attempt)
        return web.Response(body=_dumps(out), content_type="application/json")

    def completion(self, payload: dict, h: int, attempt: int = 0) -> dict:
        """A chat.completion for a request body whose bytes hash to `h` (online and batch lines alike)."""
        prompt = _text_of(payload.get("messages"))
        kind = _kind(prompt)
        n = max(1, int(payload.get("n") or 1))
        max_tokens = payload.get("max_tokens") or payload.get("max_completion_tokens") or 1 << 30
        prompt_tokens = len(prompt.split())
        choices = []
        completion_tokens = 0
        for i in range(n):
            text, finish, words = self.text(kind, prompt, h + i, max_tokens)
            completion_tokens += words
            choices.append({
                "index": i, "message": {"role": "assistant", "content": text},
                "logprobs": None, "finish_reason": finish,
            })
        self.completed += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        return {
            "id": f"chatcmpl-{h:016x}{attempt}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model") or "sim",
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def text(self, kind: str, prompt: str, h: int, max_tokens: int) -> tuple[str, str, int]:
        """(text, finish_reason, words) of one answer: a function of the request's hash alone."""
        rng = random.Random(h)
        if kind == "equality":
            judged = _JUDGED.search(prompt)
            same = judged is not None and judged.group(1).strip() == judged.group(2).strip()
            text = "Equal" if same or _uniform(h, 11) < self.args.rate_equal else "Not Equal"
        elif kind == "evolve":
            op = op_of(prompt) if self.args.op_elim else None
            copy = copied_given(prompt) if op in self.args.op_elim and _uniform(h, 13) < self.args.op_elim[op] else None
            if copy:
                self.by_kind[f"copied:{op}"] += 1
            text = copy or make_evolution(prompt, rng)
        elif kind == "optimize":
            text = make_method(prompt, rng)
        elif kind == "auto_evolve":
            given = prompt.rsplit("#Instruction#:", 1)[-1]
            evolved = make_evolution(given, rng).rstrip(".")  # a variant per request: no two methods agree
            text = f"Step 1\n#Methods List#: ...\nStep 4\n#Finally Rewritten Instruction#: {evolved} (variant {rng.randrange(10**6)})."
        else:
            text = make_answer(prompt, rng)
        words = text.split()
        finish = "stop"
        if len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
            words = words[:max_tokens]
        return text, finish, len(words)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.args.model, "object": "model", "created": 0, "owned_by": "simserver"}]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.Response(body=_dumps(self.stats_dict()), content_type="application/json")

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    def stats_dict(self) -> dict:
        a = self.args
        return {
            "requests": self.requests,
            "completed": self.completed,
            "faults": {k: self.faults.get(k, 0) for k in ("429", "500", "drop", "slow")},
            "bad_requests": self.bad_requests,
            "by_kind": dict(self.by_kind),
            "in_service": self.in_service,
            "max_in_service": self.max_in_service,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "service_seconds": round(self.service_seconds, 3),
            "uptime_s": round(time.time() - self.started, 3),
            "first_request_at": self.first_request_at,
            "last_done_at": self.last_done_at,
            "config": {
                "slots": a.slots, "latency_mean": a.latency_mean, "sigma": a.sigma,
                "ideal_req_per_s": (a.slots / a.latency_mean) if a.latency_mean > 0 and a.slots > 0 else None,
                "rate_equal": a.rate_equal, "rate_429": a.rate_429, "rate_500": a.rate_500, "rate_drop": a.rate_drop,
                "rate_slow": a.rate_slow, "slow_seconds": a.slow_seconds,
            },
        }


def build_app(args: argparse.Namespace) -> web.Application:
    sim = Sim(args)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app["sim"] = sim
    app.router.add_post("/v1/chat/completions", sim.chat)
    app.router.add_post("/chat/completions", sim.chat)
    app.router.add_get("/v1/models", sim.models)
    app.router.add_get("/models", sim.models)
    app.router.add_get("/stats", sim.stats)
    app.router.add_post("/stats/reset", sim.reset_stats)
    add_batch_routes(app, sim, args, _hash)  # provider batch APIs (bench/simbatch.py)
    return app


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: pick a free port (printed on stdout)")
    p.add_argument("--slots", type=int, default=256, help="requests in service at once (0: unlimited)")
    p.add_argument("--latency-mean", type=float, default=0.5, help="mean service time L in seconds")
    p.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma S (0: constant latency)")
    p.add_argument("--model", default="sim")
    p.add_argument("--rate-equal", type=float, default=0.0,
                   help="share of equality judgements answered 'Equal' (eliminated by rule 1); deterministic")
    p.add_argument("--rate-429", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=1, help="Retry-After seconds on a 429")
    p.add_argument("--rate-500", type=float, default=0.0)
    p.add_argument("--rate-drop", type=float, default=0.0)
    p.add_argument("--rate-slow", type=float, default=0.0)
    p.add_argument("--slow-seconds", type=float, default=5.0)
    p.add_argument("--fault-seed", type=int, default=0, help="another deterministic fault pattern")
    p.add_argument("--op-elim", default="", help="per-operation elimination shares, e.g. add_constraints=0.9,concretizing=0.9: "
                   "that share of the operation's evolutions copy the given prompt and are judged Equal")
    p.add_argument("--backlog", type=int, default=4096)
    p.add_argument("--trace", default=None, help="append one line per attempt (time, body hash, attempt, fault) here")
    add_batch_args(p)
    args = p.parse_args(argv)
    try:
        args.op_elim = {op: float(rate) for op, _, rate in (pair.partition("=") for pair in args.op_elim.split(",") if pair)}
    except ValueError:
        p.error("--op-elim: OP=RATE pairs separated by commas")
    if any(not 0 <= r <= 1 for r in args.op_elim.values()):
        p.error("--op-elim rates must be in [0, 1]")
    if args.retry_after == int(args.retry_after):
        args.retry_after = int(args.retry_after)
    args.faults = any(r > 0 for r in (args.rate_429, args.rate_500, args.rate_drop, args.rate_slow))
    if sum((args.rate_429, args.rate_500, args.rate_drop, args.rate_slow)) > 1:
        p.error("fault rates must sum to at most 1")
    return args


async def serve(args: argparse.Namespace) -> None:
    app = build_app(args)
    # access_log=None: per-request logging would cost more than the handler itself.
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(args.backlog)
    sock.setblocking(False)
    site = web.SockSite(runner, sock, backlog=args.backlog)
    await site.start()
    port = sock.getsockname()[1]
    print(f"listening on http://{args.host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        if app["sim"].trace is not None:
            app["sim"].trace.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        import uvloop  # type: ignore

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
