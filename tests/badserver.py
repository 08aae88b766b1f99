"""A misbehaving OpenAI-compatible server for the transport tests: real HTTP over loopback, no model.

    python tests/badserver.py [--port 0]     # prints "listening on http://127.0.0.1:PORT", serves /v1

The model name picks the behaviour (`MODE` or `MODE:N`, N a count where the mode takes one):
- `good`: deterministic answers (an evolution derived from the prompt, "Not Equal" for the equality
  judge, a 60-word answer), as a sane server would;
- `null-content:N` / `empty-content:N`: the first N completions of this model have `content: null` /
  `""`, then it behaves as `good`;
- `truncate-evolve`: evolutions stop at max_tokens (`finish_reason: "length"`, the text cut short);
- `truncate-answer`: every other answer (by a hash of its prompt) is cut short with `finish_reason: "length"`;
- `missing-model`: 404 with OpenAI's model-not-found body;
- `echo-key`: 400 whose body quotes the Authorization header and the key (a badly behaved proxy);
- `retry-after-huge`: the first attempt of each request body gets 429 with `Retry-After: 100000`.

The key (the Authorization bearer) picks authentication: one containing `revoked-after-N` answers N
completions and then 401 with a body that echoes the key, as OpenAI's "Incorrect API key provided" does;
`revoked` alone is 401 at once; `forbidden` is 403. Any other key is accepted.

`GET /stats` returns the requests seen by model and by status, so a test can count what a run sent.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import sys
from collections import Counter

from aiohttp import web

ANSWER_WORDS = 60


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _kind(prompt: str) -> str:
    if "Equal or Not Equal" in prompt:
        return "equality"
    if "Prompt Rewriter" in prompt or "Prompt Creator" in prompt:
        return "evolve"
    return "answer"


def _reply(kind: str, prompt: str) -> str:
    h = _h(prompt)
    if kind == "equality":
        return "Not Equal"
    if kind == "evolve":
        return f"Describe item {h % 100000} in careful detail and give {h % 7 + 2} worked examples with numbers."
    words = ["Answer", "for", f"item{h % 1000}:"] + [f"point{i}" for i in range(ANSWER_WORDS - 3)]
    return " ".join(words)


class Bad:
    def __init__(self) -> None:
        self.requests: Counter = Counter()  # by model
        self.status: Counter = Counter()  # by "model:status"
        self.served: Counter = Counter()  # completions served, by model and by key
        self.attempts: Counter = Counter()  # by request body

    def _respond(self, model: str, status: int, body: dict, headers: dict | None = None) -> web.Response:
        self.status[f"{model}:{status}"] += 1
        return web.json_response(body, status=status, headers=headers)

    async def chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        payload = json.loads(raw)
        model = str(payload.get("model"))
        mode, _, arg = model.partition(":")
        self.requests[model] += 1
        self.attempts[raw] += 1
        auth = request.headers.get("Authorization", "")
        key = auth.removeprefix("Bearer ").strip()

        # Authentication first, as real servers do.
        revoked = re.search(r"revoked-after-(\d+)", key)
        if ("revoked" in key and not revoked) or (revoked and self.served[key] >= int(revoked.group(1))):
            return self._respond(model, 401, {"error": {
                "message": f"Incorrect API key provided: {key}. You can find your API key at "
                           "https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        if "forbidden" in key:
            return self._respond(model, 403, {"error": {"message": "You are not allowed to sample from this model",
                                                        "type": "invalid_request_error", "code": None}})

        if mode == "missing-model":
            return self._respond(model, 404, {"error": {
                "message": f"The model `{model}` does not exist or you do not have access to it.",
                "type": "invalid_request_error", "param": None, "code": "model_not_found"}})
        if mode == "echo-key":
            return self._respond(model, 400, {"error": {
                "message": f"bad request; you sent Authorization: {auth} (api_key={key})", "type": "invalid_request"}})
        if mode == "retry-after-huge" and self.attempts[raw] == 1:
            return self._respond(model, 429, {"error": {"message": "slow down"}}, {"Retry-After": "100000"})

        messages = payload.get("messages") or []
        prompt = next((m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), "")
        kind = _kind(prompt)
        text: str | None = _reply(kind, prompt)
        finish = "stop"
        max_tokens = int(payload.get("max_tokens") or 1 << 30)
        cut = (mode == "truncate-evolve" and kind == "evolve") or (
            mode == "truncate-answer" and kind == "answer" and _h(prompt) % 2 == 0)
        words = (text or "").split()
        if cut or len(words) > max_tokens:
            words = words[: min(max_tokens, max(1, len(words) // 2))]
            text, finish = " ".join(words), "length"
        self.served[model] += 1
        self.served[key] += 1
        if mode in ("null-content", "empty-content") and self.served[model] <= int(arg or 1 << 30):
            text = None if mode == "null-content" else ""
        self.status[f"{model}:200"] += 1
        return web.json_response({
            "id": f"chatcmpl-{_h(prompt):x}", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(words),
                      "total_tokens": len(prompt.split()) + len(words)},
        })

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": dict(self.requests), "status": dict(self.status),
                                  "total": sum(self.requests.values())})


def app() -> web.Application:
    bad = Bad()
    application = web.Application()
    application.router.add_post("/v1/chat/completions", bad.chat)
    application.router.add_get("/stats", bad.stats)
    return application


async def serve(port: int) -> None:
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(256)
    site = web.SockSite(runner, sock)
    await site.start()
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    try:
        asyncio.run(serve(parser.parse_args().port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
