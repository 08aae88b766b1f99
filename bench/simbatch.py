"""Provider batch APIs for bench/simserver.py: OpenAI's Files + Batches and Anthropic's Messages + Message
Batches, answered by the simulation server's own deterministic answers, so the real openai and anthropic
SDKs can run a batch run against it.

  - OpenAI: POST /v1/files (multipart upload), GET /v1/files/{id}/content, POST /v1/batches,
    GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel. A batch goes validating -> in_progress ->
    finalizing -> completed over `--batch-turnaround` seconds; its output file holds one line per request
    whose body is exactly the chat completion an online request with the same body gets; its error file
    holds per-line errors.
  - Anthropic: POST /v1/messages (online), POST /v1/messages/batches, GET /v1/messages/batches[/{id}],
    POST .../cancel, GET .../results (JSONL: succeeded, errored, canceled, expired).
  - Faults: `--batch-expire N` (the first N batches expire with half their requests done),
    `--batch-fail N` (the first N fail validation), `--batch-limit N` (a batch over N requests fails as too
    large, OpenAI; or is refused with a 413, Anthropic), `--batch-line-errors R` (a share of lines fail with
    a 500 the first time their custom_id is submitted), `--batch-hold PHASE:SECONDS` (the first upload,
    create or download does its work, then holds its response: a client can be killed right there),
    `--require-key KEY` (any other key gets a 401).
  - GET /batch/stats: how many times each custom_id was submitted in a created batch, batches, and the
    phase being held, so tests assert that nothing was submitted twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from datetime import UTC, datetime

from aiohttp import web

PHASES = ("upload", "create", "download")


def add_batch_args(p) -> None:
    p.add_argument("--batch-turnaround", type=float, default=2.0, help="seconds from batch creation to its end")
    p.add_argument("--batch-expire", type=int, default=0, help="the first N batches expire, half done")
    p.add_argument("--batch-fail", type=int, default=0, help="the first N batches fail validation")
    p.add_argument("--batch-limit", type=int, default=0, help="a batch over N requests is refused as too large")
    p.add_argument("--batch-line-errors", type=float, default=0.0,
                   help="share of lines failing with a 500 on their first submission")
    p.add_argument("--batch-hold", default=None, help="PHASE:SECONDS, PHASE one of upload, create, download")
    p.add_argument("--require-key", default=None, help="answer 401 to any other key")


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class SimBatches:
    def __init__(self, sim, args) -> None:
        self.sim, self.args = sim, args
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}  # both providers, by id
        self.submitted: Counter = Counter()  # custom_id -> times submitted in a created batch
        self.created = 0
        self.holding: str | None = None
        self.hold_phase, self.hold_seconds = None, 0.0
        if args.batch_hold:
            phase, _, seconds = args.batch_hold.partition(":")
            assert phase in PHASES, f"--batch-hold: phase must be one of {PHASES}"
            self.hold_phase, self.hold_seconds = phase, float(seconds or 30)

    # ------------------------------------------------------------------ helpers
    def _authorized(self, request: web.Request) -> bool:
        key = self.args.require_key
        if not key:
            return True
        bearer = request.headers.get("Authorization", "")
        return bearer == f"Bearer {key}" or request.headers.get("x-api-key") == key

    def _refused(self, anthropic: bool) -> web.Response:
        if anthropic:
            return web.json_response({"type": "error", "error": {"type": "authentication_error",
                                                                  "message": "invalid x-api-key"}}, status=401)
        return web.json_response({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                            "code": "invalid_api_key"}}, status=401)

    async def _hold(self, phase: str) -> None:
        if self.hold_phase == phase:
            self.hold_phase = None  # only the first time
            self.holding = phase
            await asyncio.sleep(self.hold_seconds)
            self.holding = None

    def _register(self, ids: list[str]) -> dict:
        self.created += 1
        n = self.created
        for custom_id in ids:
            self.submitted[custom_id] += 1
        a = self.args
        return {"n": n, "created": time.time(), "expire": n <= a.batch_expire,
                "fail": n <= a.batch_fail, "too_large": bool(a.batch_limit and len(ids) > a.batch_limit),
                "cancelled": False, "results": None}

    def _phase(self, b: dict) -> str:
        """running | completed | expired | failed | cancelled, by the time since creation."""
        if b["too_large"] or b["fail"]:
            return "failed"
        if b["cancelled"]:
            return "cancelled"
        elapsed = time.time() - b["created"]
        if elapsed < self.args.batch_turnaround:
            return "running"
        return "expired" if b["expire"] else "completed"

    def _line_fails(self, custom_id: str) -> bool:
        rate = self.args.batch_line_errors
        return rate > 0 and self.submitted[custom_id] <= 1 and (_h("line-error:" + custom_id) % 10_000) / 10_000 < rate

    def _expired_line(self, custom_id: str) -> bool:
        return _h("expire:" + custom_id) % 2 == 1

    # ------------------------------------------------------------------ OpenAI
    async def upload(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(False)
        reader = await request.multipart()
        data, name = b"", "batch.jsonl"
        while (part := await reader.next()) is not None:
            if part.name == "file":
                name = part.filename or name
                data = await part.read()
        file_id = f"file-{len(self.files) + 1:06d}"
        self.files[file_id] = data
        await self._hold("upload")
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": name, "purpose": "batch", "status": "processed"})

    async def content(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(False)
        file_id = request.match_info["file_id"]
        if file_id not in self.files:
            return web.json_response({"error": {"message": f"no file {file_id}"}}, status=404)
        await self._hold("download")
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    async def create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(False)
        body = await request.json()
        data = self.files.get(body.get("input_file_id", ""))
        if data is None:
            return web.json_response({"error": {"message": "no such input file"}}, status=400)
        lines = [json.loads(raw) for raw in data.splitlines() if raw.strip()]
        batch_id = f"batch_{len(self.batches) + 1:06d}"
        b = self._register([line["custom_id"] for line in lines])
        b.update(id=batch_id, provider="openai", lines=lines, input_file_id=body["input_file_id"],
                 metadata=body.get("metadata"), output_file_id=None, error_file_id=None)
        self.batches[batch_id] = b
        await self._hold("create")
        return web.json_response(self._openai(b))

    def _openai_results(self, b: dict) -> None:
        """The output and error files of an ended batch, made once."""
        if b["results"] is not None:
            return
        phase = self._phase(b)
        out, err = [], []
        for line in b["lines"]:
            cid = line["custom_id"]
            if phase in ("expired", "cancelled") and self._expired_line(cid):
                code = "batch_expired" if phase == "expired" else "batch_cancelled"
                err.append({"id": f"req_{cid[:8]}", "custom_id": cid, "response": None,
                            "error": {"code": code, "message": f"this request was not done ({phase})"}})
            elif self._line_fails(cid):
                err.append({"id": f"req_{cid[:8]}", "custom_id": cid, "response": {
                    "status_code": 500, "request_id": "sim", "body": {"error": {"message": "simulated line error",
                                                                               "type": "server_error"}}},
                            "error": None})
            else:
                body = line["body"]
                completion = self.sim.completion(body, _hash_body(body))
                out.append({"id": f"req_{cid[:8]}", "custom_id": cid,
                            "response": {"status_code": 200, "request_id": "sim", "body": completion}, "error": None})
        b["results"] = (out, err)
        for rows, key in ((out, "output_file_id"), (err, "error_file_id")):
            if rows:
                file_id = f"file-{len(self.files) + 1:06d}"
                self.files[file_id] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
                b[key] = file_id

    def _openai(self, b: dict) -> dict:
        phase = self._phase(b)
        elapsed = time.time() - b["created"]
        t = self.args.batch_turnaround
        status = {"running": "validating" if elapsed < 0.1 * t else ("in_progress" if elapsed < 0.7 * t else "finalizing"),
                  "completed": "completed", "expired": "expired", "failed": "failed", "cancelled": "cancelled"}[phase]
        total = len(b["lines"])
        completed = failed = 0
        errors = None
        if phase in ("completed", "expired", "cancelled"):
            self._openai_results(b)
            completed, failed = len(b["results"][0]), len(b["results"][1])
        elif phase == "failed":
            code, message = (("batch_size_limit_exceeded", f"the batch holds {total} requests, over the limit of "
                              f"{self.args.batch_limit}") if b["too_large"] else ("invalid_file", "simulated validation failure"))
            errors = {"object": "list", "data": [{"code": code, "message": message, "line": None, "param": None}]}
        return {"id": b["id"], "object": "batch", "endpoint": "/v1/chat/completions", "errors": errors,
                "input_file_id": b["input_file_id"], "completion_window": "24h", "status": status,
                "output_file_id": b.get("output_file_id"), "error_file_id": b.get("error_file_id"),
                "created_at": int(b["created"]), "metadata": b["metadata"],
                "request_counts": {"total": total, "completed": completed, "failed": failed}}

    async def retrieve(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(False)
        b = self.batches.get(request.match_info["batch_id"])
        if b is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        return web.json_response(self._openai(b))

    async def cancel(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["batch_id"])
        if b is None:
            return web.json_response({"error": {"message": "no such batch"}}, status=404)
        b["cancelled"] = True
        return web.json_response(self._openai(b) if b["provider"] == "openai" else self._anthropic(b))

    async def list(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(False)
        data = [self._openai(b) for b in reversed(list(self.batches.values())) if b["provider"] == "openai"]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    # ------------------------------------------------------------------ Anthropic
    def _message(self, params: dict) -> dict:
        h = _hash_body(params, sort=True)
        messages = list(params.get("messages") or [])
        if params.get("system"):
            messages = [{"role": "system", "content": params["system"]}, *messages]
        completion = self.sim.completion({"messages": messages, "max_tokens": params.get("max_tokens")}, h)
        choice = completion["choices"][0]
        return {"id": f"msg_{h:016x}", "type": "message", "role": "assistant", "model": params.get("model", "sim"),
                "content": [{"type": "text", "text": choice["message"]["content"]}],
                "stop_reason": "max_tokens" if choice["finish_reason"] == "length" else "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": completion["usage"]["prompt_tokens"],
                          "output_tokens": completion["usage"]["completion_tokens"]}}

    async def messages(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(True)
        return web.json_response(self._message(await request.json()))

    async def a_create(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(True)
        body = await request.json()
        requests = body.get("requests") or []
        if self.args.batch_limit and len(requests) > self.args.batch_limit:
            return web.json_response({"type": "error", "error": {"type": "request_too_large", "message":
                                      f"{len(requests)} requests exceed the limit of {self.args.batch_limit}"}},
                                     status=413)
        batch_id = f"msgbatch_{len(self.batches) + 1:06d}"
        b = self._register([r["custom_id"] for r in requests])
        b.update(id=batch_id, provider="anthropic", requests=requests)
        self.batches[batch_id] = b
        await self._hold("create")
        return web.json_response(self._anthropic(b, request))

    def _anthropic(self, b: dict, request: web.Request | None = None) -> dict:
        phase = self._phase(b)
        ended = phase != "running"
        counts = {"processing": 0 if ended else len(b["requests"]), "succeeded": 0, "errored": 0, "canceled": 0,
                  "expired": 0}
        if ended:
            for row in self._a_results(b):
                counts[{"succeeded": "succeeded", "errored": "errored", "canceled": "canceled",
                        "expired": "expired"}[row["result"]["type"]]] += 1
        base = f"{request.scheme}://{request.host}" if request is not None else b.get("base", "")
        b["base"] = base
        return {"id": b["id"], "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": counts, "created_at": _iso(b["created"]),
                "expires_at": _iso(b["created"] + 86400), "ended_at": _iso(time.time()) if ended else None,
                "cancel_initiated_at": None, "archived_at": None,
                "results_url": f"{base}/v1/messages/batches/{b['id']}/results" if ended else None}

    def _a_results(self, b: dict) -> list[dict]:
        if b["results"] is None:
            phase = self._phase(b)
            rows = []
            for r in b["requests"]:
                cid = r["custom_id"]
                if phase == "failed":
                    result = {"type": "errored", "error": {"type": "error", "error": {
                        "type": "invalid_request_error", "message": "simulated validation failure"}}}
                elif phase in ("expired", "cancelled") and self._expired_line(cid):
                    result = {"type": "expired" if phase == "expired" else "canceled"}
                elif self._line_fails(cid):
                    result = {"type": "errored", "error": {"type": "error", "error": {
                        "type": "api_error", "message": "simulated line error"}}}
                else:
                    result = {"type": "succeeded", "message": self._message(r["params"])}
                rows.append({"custom_id": cid, "result": result})
            b["results"] = rows
        return b["results"]

    async def a_retrieve(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(True)
        b = self.batches.get(request.match_info["batch_id"])
        if b is None:
            return web.json_response({"type": "error", "error": {"type": "not_found_error", "message": "no batch"}},
                                     status=404)
        return web.json_response(self._anthropic(b, request))

    async def a_list(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(True)
        data = [self._anthropic(b, request) for b in reversed(list(self.batches.values())) if b["provider"] == "anthropic"]
        return web.json_response({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def a_results(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._refused(True)
        b = self.batches.get(request.match_info["batch_id"])
        if b is None or self._phase(b) == "running":
            return web.json_response({"type": "error", "error": {"type": "not_found_error", "message": "no results"}},
                                     status=404)
        await self._hold("download")
        body = b"".join(json.dumps(r).encode() + b"\n" for r in self._a_results(b))
        return web.Response(body=body, content_type="application/binary")

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"submitted": dict(self.submitted), "batches": self.created, "holding": self.holding,
                                  "twice": sorted(k for k, n in self.submitted.items() if n > 1)})


def _hash_body(body: dict, sort: bool = False) -> int:
    """The hash the online handler computes from a request's bytes: json.dumps of the same dict (the online
    client sends json.dumps of it), so a batch line and an online request get the same answer."""
    return HASH[0](json.dumps(body, sort_keys=sort).encode())


HASH: list = [None]  # the server's body hash, given by add_batch_routes


def add_batch_routes(app: web.Application, sim, args, body_hash) -> SimBatches:
    HASH[0] = body_hash
    batches = SimBatches(sim, args)
    r = app.router
    r.add_post("/v1/files", batches.upload)
    r.add_get("/v1/files/{file_id}/content", batches.content)
    r.add_post("/v1/batches", batches.create)
    r.add_get("/v1/batches", batches.list)
    r.add_get("/v1/batches/{batch_id}", batches.retrieve)
    r.add_post("/v1/batches/{batch_id}/cancel", batches.cancel)
    r.add_post("/v1/messages", batches.messages)
    r.add_post("/v1/messages/batches", batches.a_create)
    r.add_get("/v1/messages/batches", batches.a_list)
    r.add_get("/v1/messages/batches/{batch_id}", batches.a_retrieve)
    r.add_post("/v1/messages/batches/{batch_id}/cancel", batches.cancel)
    r.add_get("/v1/messages/batches/{batch_id}/results", batches.a_results)
    r.add_get("/batch/stats", batches.stats)
    return batches
