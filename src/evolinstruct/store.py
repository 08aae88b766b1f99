"""The run store: one SQLite file in RUN_DIR holding every LLM call, every record and the pool state.

- `calls`: each successful request and its response, keyed by a hash of model, sampling parameters
  and messages. A rerun replays stored answers instead of sending the request again.
- `failures`: requests that failed after the backend's retries, with their error; they are retried
  on the next run.
- `records`: every seed and attempted evolution with its status (kept / eliminated / error).
- `chains`: the pool state: for each seed, the last finished epoch and the current instruction.
- `meta`: the run's config and its hash; a RUN_DIR with a different config is refused.
- `scores`: one value per (record, scorer) from `evolinstruct score`; NULL where an LLM's output did not parse.

WAL mode with synchronous=NORMAL makes every commit survive a SIGKILL of the process. A SQLite error at
open or write time (a read-only directory, a full disk) is a `StoreError`: one line naming the file and
what to do. A failed write rolls its transaction back, so the store keeps every earlier commit and a rerun
resumes from there.
Migrations are ordered and named, as in simonw/llm.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from statistics import fmean
from typing import Any

from .models.base import Request, Result
from .records import Record
from .rundir import LOCK_FILE, STORE_FILE

MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_initial",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE calls (
            key TEXT PRIMARY KEY, purpose TEXT NOT NULL, model TEXT NOT NULL,
            request TEXT NOT NULL, response TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
            finish_reason TEXT, created REAL NOT NULL
        );
        CREATE TABLE failures (
            key TEXT PRIMARY KEY, purpose TEXT NOT NULL, model TEXT NOT NULL,
            error TEXT NOT NULL, attempts INTEGER NOT NULL, updated REAL NOT NULL
        );
        CREATE TABLE records (
            id TEXT PRIMARY KEY, root_id TEXT NOT NULL, seed_index INTEGER NOT NULL,
            epoch INTEGER NOT NULL, status TEXT NOT NULL, data TEXT NOT NULL
        );
        CREATE INDEX records_order ON records (seed_index, epoch);
        CREATE TABLE chains (
            root_id TEXT PRIMARY KEY, seed_index INTEGER NOT NULL, epoch_done INTEGER NOT NULL,
            current_id TEXT NOT NULL, state TEXT NOT NULL
        );
        """,
    ),
    (
        # Scores of records (evolinstruct score): value NULL when the scorer's output did not parse;
        # detail is JSON (raw output, parse error, extra measurements).
        "m002_scores",
        """
        CREATE TABLE scores (
            record_id TEXT NOT NULL, scorer TEXT NOT NULL, value REAL, detail TEXT NOT NULL,
            PRIMARY KEY (record_id, scorer)
        );
        """,
    ),
    (
        # Provider batches (--batch): a batch's requests are recorded as pending before it is submitted and
        # its provider id right after, so a killed run polls it again instead of paying for it twice.
        # batches.state: preparing (nothing created) | uploaded (file_id known) | submitted (batch_id known)
        # | ended | abandoned; batch_requests.state: pending | done | error | missing (resubmitted elsewhere).
        "m003_batches",
        """
        CREATE TABLE batches (
            id TEXT PRIMARY KEY, provider TEXT NOT NULL, model TEXT NOT NULL, round INTEGER NOT NULL,
            state TEXT NOT NULL, file_id TEXT, batch_id TEXT, status TEXT, counts TEXT,
            requests INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL
        );
        CREATE TABLE batch_requests (
            batch TEXT NOT NULL, key TEXT NOT NULL, purpose TEXT NOT NULL, model TEXT NOT NULL,
            request TEXT NOT NULL, state TEXT NOT NULL, PRIMARY KEY (batch, key)
        );
        CREATE INDEX batch_requests_key ON batch_requests (key);
        """,
    ),
]

OPEN_BATCH_STATES = ("preparing", "uploaded", "submitted")


class ConfigMismatch(RuntimeError):
    pass


class StoreError(RuntimeError):
    """A run store that cannot be opened or written as asked; the message is one line naming the file."""


_READ_ONLY = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")


def store_error(path: Path, exc: sqlite3.Error, doing: str) -> StoreError:
    """A SQLite error as one line: the file, what failed, SQLite's words, and what to do."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        hint = "the disk is full: free space, then rerun the same command to resume (every finished step is stored)"
    elif name.startswith(_READ_ONLY) or "readonly" in text or "unable to open" in text:
        hint = ("the run directory is read-only or cannot be written: make it writable, "
                "or copy the run to a writable place and use the copy")
    elif name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text or "malformed" in text:
        hint = "this is not a run store, or a damaged one: use another RUN_DIR"
    elif name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        hint = "another process holds the store: wait for it to finish"
    elif name.startswith("SQLITE_IOERR") or "I/O error" in text:
        hint = "the disk reported an error: check it (and free space), then rerun the same command to resume"
    else:
        hint = "rerun the same command to resume; every finished step is stored"
    return StoreError(f"{path}: cannot {doing} ({text}): {hint}")


def request_json(model: str, request: Request) -> str:
    """A call's canonical JSON: what its key hashes and what the store keeps as its request."""
    payload: dict[str, Any] = {"model": model, "sampling": request.sampling.to_dict(), "messages": request.messages}
    if request.guide is not None:  # only when set, so the keys of unguided calls stay as they were
        payload["guide"] = request.guide
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def key_of(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def call_key(model: str, request: Request) -> str:
    return key_of(request_json(model, request))


class RunStore:
    """All SQL of a run lives here. `readonly=True` opens an existing store without ever writing it
    (the report); otherwise the store is created and migrated."""

    def __init__(self, run_dir: str | Path, readonly: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / STORE_FILE
        self.readonly = readonly
        if readonly:
            if not self.path.is_file():
                raise StoreError(f"{self.path}: no run store here; run `evolinstruct evolve SEEDS -o {self.run_dir}` first")
            self.db = self._open_readonly()
            self._failed_keys: set[str] = set()
            self._lock = None
            return
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise StoreError(f"{self.run_dir}: exists and is not a directory; give a RUN_DIR path")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._lock = _lock(self.run_dir)
        except OSError as exc:
            raise StoreError(f"{self.run_dir}: cannot write here ({exc.strerror or exc}): "
                             + _os_hint(exc)) from None
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
            # Keys with a recorded failure: only their later success has a failures row to delete.
            self._failed_keys = {row[0] for row in self.db.execute("SELECT key FROM failures")}
        except sqlite3.DatabaseError as exc:
            error = self._error(exc, "open the run store for writing")
            self.close()
            raise error from None

    def _open_readonly(self) -> sqlite3.Connection:
        """Open without writing. A WAL store in a read-only directory cannot be opened with mode=ro (SQLite
        would create its -shm file there): then, when no write-ahead log holds commits (a writer that closed
        cleanly merged it), the file is opened as immutable, which reads it as it is."""
        uri = self.path.resolve().as_uri()
        try:
            db = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False)
            db.execute("SELECT 1 FROM records LIMIT 1")
            return db
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_CANTOPEN" and "unable to open" not in str(exc):
                raise StoreError(f"{self.path}: not a readable run store ({exc})") from None
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreError(f"{self.path}: cannot open in this read-only directory: its write-ahead log "
                                 f"{wal.name} holds commits not yet merged; make the directory writable once "
                                 "(any command that opens the run merges it), or copy the run elsewhere") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a readable run store ({exc})") from None
        try:
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, check_same_thread=False)
            db.execute("SELECT 1 FROM records LIMIT 1")
            return db
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a readable run store ({exc})") from None

    def _error(self, exc: sqlite3.Error, doing: str) -> BaseException:
        """A failed statement: roll back its transaction (earlier commits stay), and the one-line StoreError.
        Errors of this module's own making (integrity, misuse) come back as they are."""
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
            return exc
        db = getattr(self, "db", None)
        if db is not None:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is unusable; closing it rolls back
        return store_error(self.path, exc, doing)

    # ------------------------------------------------------------------ schema
    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
        done = {row[0] for row in self.db.execute("SELECT name FROM _migrations")}
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            self.db.execute("BEGIN")
            for statement in filter(str.strip, sql.split(";")):
                self.db.execute(statement)
            self.db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
            self.db.execute("COMMIT")

    # ------------------------------------------------------------------ meta / config
    def get_meta(self, key: str) -> Any:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "read the run's settings") from None
        return json.loads(row[0]) if row else None

    def set_meta(self, key: str, value: Any) -> None:
        try:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "write to the run store") from None

    def bind_config(self, config: dict[str, Any]) -> bool:
        """Record the run's config, or check it against the stored one. True when resuming."""
        stored = self.get_meta("config")
        if stored is None:
            self.set_meta("config", config)
            return False
        if stored != config:
            diffs = [k for k in sorted(set(stored) | set(config)) if stored.get(k) != config.get(k)]
            detail = "; ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in diffs[:4])
            raise ConfigMismatch(
                f"{self.run_dir} holds a run with a different config ({detail}). "
                "Use a new output directory, or rerun with the original options to resume."
            )
        return True

    # ------------------------------------------------------------------ call cache
    def cached(self, key: str) -> Result | None:
        row = self.db.execute(
            "SELECT response, prompt_tokens, completion_tokens, finish_reason FROM calls WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return Result(text=row[0], prompt_tokens=row[1], completion_tokens=row[2], finish_reason=row[3])

    def save_call(self, key: str, purpose: str, model: str, canonical_request: str, result: Result) -> None:
        """Store a successful call. `canonical_request` is `request_json(...)`, already built for the key."""
        row = (key, purpose, model, canonical_request, result.text, result.prompt_tokens, result.completion_tokens,
               result.finish_reason, time.time())
        try:
            if key not in self._failed_keys:
                # The common case is one statement, committed on its own. At 1,000 calls/s save_call was 12% of
                # the client's CPU (py-spy), and three of its four statements were this BEGIN/DELETE/COMMIT.
                self.db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                return
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            self.db.execute("DELETE FROM failures WHERE key = ?", (key,))
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "store a call") from None
        self._failed_keys.discard(key)

    def save_failure(self, key: str, purpose: str, model: str, error: str) -> None:
        self._failed_keys.add(key)
        try:
            self.db.execute(
                "INSERT INTO failures VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(key) DO UPDATE SET "
                "error = excluded.error, attempts = attempts + 1, updated = excluded.updated",
                (key, purpose, model, error, time.time()),
            )
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "store a failed call") from None

    def call_totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for purpose, n, p, c in self.db.execute(
            "SELECT purpose, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM calls GROUP BY purpose"
        ):
            out[purpose] = {"calls": n, "prompt_tokens": p or 0, "completion_tokens": c or 0}
        return out

    def tokens_by_model(self) -> dict[str, tuple[int, int]]:
        rows = self.db.execute("SELECT model, SUM(prompt_tokens), SUM(completion_tokens) FROM calls GROUP BY model")
        return {model: (p or 0, c or 0) for model, p, c in rows}

    def failures(self) -> list[dict[str, Any]]:
        cols = ("key", "purpose", "model", "error", "attempts")
        return [dict(zip(cols, row, strict=True)) for row in self.db.execute(f"SELECT {', '.join(cols)} FROM failures")]

    # ------------------------------------------------------------------ records and pool state
    def save_step(self, records: list[Record], seed_index: int, epoch_done: int, current_id: str, state: str) -> None:
        """Records of one chain step and the chain's new position, in one transaction."""
        rows = [(record.id, record.root_id, seed_index, record.epoch, record.status,
                 json.dumps(record.to_dict(), ensure_ascii=False, sort_keys=True)) for record in records]
        root = records[0].root_id if records else current_id
        try:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)", rows)
            self.db.execute(
                "INSERT OR REPLACE INTO chains VALUES (?, ?, ?, ?, ?)", (root, seed_index, epoch_done, current_id, state)
            )
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "store a step of the run") from None

    def iter_record_dicts(self, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Records as stored (plain dicts), in lineage order: seed by seed, epoch by epoch."""
        sql = "SELECT data FROM records"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        sql += " ORDER BY seed_index, epoch, id"
        for (data,) in self.db.execute(sql, args):
            yield json.loads(data)

    def iter_records(self, status: str | None = None) -> Iterator[Record]:
        for data in self.iter_record_dicts(status):
            yield Record.from_dict(data)

    # ------------------------------------------------------------------ scores
    def save_scores(self, rows: Iterable[tuple[str, str, float | None, dict[str, Any] | str]]) -> None:
        """(record_id, scorer, value or None, detail) rows, replacing earlier scores, in one transaction."""
        try:
            self.db.execute("BEGIN")
            for record_id, scorer, value, detail in rows:
                text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False, sort_keys=True)
                self.db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", (record_id, scorer, value, text))
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "store scores") from None

    def scores(self) -> dict[str, dict[str, float | None]]:
        """record_id -> {scorer: value}; a value is None where the scorer's output did not parse."""
        out: dict[str, dict[str, float | None]] = {}
        if not self.has_table("scores"):  # a store opened read-only before its scores migration
            return out
        for record_id, scorer, value in self.db.execute("SELECT record_id, scorer, value FROM scores ORDER BY scorer"):
            out.setdefault(record_id, {})[scorer] = value
        return out

    def score_summary(self) -> dict[str, Any]:
        """stats.json's "scores" section. Per scorer, over the kept records (the dataset): how many have a
        value, how many did not parse, the mean, and the mean by epoch, epoch "0" being the seeds: the
        paper's difficulty-by-round table. Eliminated records' scores are summarised apart."""
        if not self.has_table("scores"):
            return {}
        values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        failures: dict[str, int] = defaultdict(int)
        eliminated: dict[str, list[float]] = defaultdict(list)
        rows = self.db.execute(
            "SELECT s.scorer, r.epoch, r.status, s.value FROM scores s JOIN records r ON r.id = s.record_id"
        )
        for scorer, epoch, status, value in rows:
            if status != "kept":
                if value is not None:
                    eliminated[scorer].append(value)
                continue
            if value is None:
                failures[scorer] += 1
            else:
                values[scorer][epoch].append(value)
        summary: dict[str, Any] = {}
        for scorer in sorted(set(values) | set(failures) | set(eliminated)):
            all_values = [v for vs in values[scorer].values() for v in vs]
            entry: dict[str, Any] = {
                "scored": len(all_values),
                "parse_failures": failures[scorer],
                "mean": _mean(all_values),
                "by_epoch": {str(e): _mean(vs) for e, vs in sorted(values[scorer].items())},
            }
            if eliminated[scorer]:
                entry["eliminated"] = {"scored": len(eliminated[scorer]), "mean": _mean(eliminated[scorer])}
            summary[scorer] = entry
        return summary

    # ------------------------------------------------------------------ provider batches (--batch)
    def batch_prepare(self, uid: str, provider: str, model: str, round_no: int,
                      rows: list[tuple[str, str, str, str]]) -> None:
        """A batch about to be submitted and its (key, purpose, model, canonical request) rows, in one commit."""
        now = time.time()
        try:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, 'preparing', NULL, NULL, NULL, NULL, ?, ?, ?)",
                            (uid, provider, model, round_no, len(rows), now, now))
            self.db.executemany("INSERT OR REPLACE INTO batch_requests VALUES (?, ?, ?, ?, ?, 'pending')",
                                [(uid, *row) for row in rows])
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "record a batch before submitting it") from None

    def batch_update(self, uid: str, **fields: Any) -> None:
        """Set a batch's state, file_id, batch_id, status or counts (a dict, kept as JSON)."""
        if "counts" in fields and not isinstance(fields["counts"], str | None):
            fields["counts"] = json.dumps(fields["counts"], sort_keys=True)
        names = sorted(fields)
        try:
            self.db.execute(f"UPDATE batches SET {', '.join(f'{n} = ?' for n in names)}, updated = ? WHERE id = ?",
                            (*(fields[n] for n in names), time.time(), uid))
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "record a batch's state") from None

    def batch_requests_done(self, uid: str, states: dict[str, str]) -> None:
        """Each key's outcome in batch `uid` (done, error, missing), in one commit."""
        try:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE batch_requests SET state = ? WHERE batch = ? AND key = ?",
                                [(state, uid, key) for key, state in states.items()])
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "record a batch's results") from None

    def batches(self, open_only: bool = False) -> list[dict[str, Any]]:
        """Batches, oldest first; `open_only`: those not yet ended or abandoned."""
        if not self.has_table("batches"):
            return []
        cols = ("id", "provider", "model", "round", "state", "file_id", "batch_id", "status", "counts", "requests",
                "created", "updated")
        sql = f"SELECT {', '.join(cols)} FROM batches"
        if open_only:
            sql += f" WHERE state IN ({', '.join('?' * len(OPEN_BATCH_STATES))})"
        rows = self.db.execute(sql + " ORDER BY created, id", OPEN_BATCH_STATES if open_only else ())
        out = []
        for row in rows:
            item = dict(zip(cols, row, strict=True))
            item["counts"] = json.loads(item["counts"]) if item["counts"] else {}
            out.append(item)
        return out

    def batch_pending(self, uid: str) -> list[tuple[str, str, str, str]]:
        """The (key, purpose, model, canonical request) rows of batch `uid` still waiting for a result."""
        return list(self.db.execute(
            "SELECT key, purpose, model, request FROM batch_requests WHERE batch = ? AND state = 'pending' ORDER BY key",
            (uid,)))

    def tokens_by_mode(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(model, mode, purpose) -> stored prompt and completion tokens; mode "batch" for calls answered by a
        provider batch, "online" for the others."""
        if not self.has_table("batch_requests"):
            return {(m, "online", p): (pt, ct) for m, p, pt, ct in self.db.execute(
                "SELECT model, purpose, SUM(prompt_tokens), SUM(completion_tokens) FROM calls GROUP BY model, purpose")}
        rows = self.db.execute(
            "SELECT c.model, CASE WHEN EXISTS (SELECT 1 FROM batch_requests b WHERE b.key = c.key AND b.state = 'done') "
            "THEN 'batch' ELSE 'online' END AS mode, c.purpose, SUM(c.prompt_tokens), SUM(c.completion_tokens) "
            "FROM calls c GROUP BY c.model, mode, c.purpose")
        return {(m, mode, p): (pt or 0, ct or 0) for m, mode, p, pt, ct in rows}

    def record_counts(self) -> dict[str, int]:
        """Records by status (kept, eliminated, error): how far a run is, read while it runs."""
        return dict(self.db.execute("SELECT status, COUNT(*) FROM records GROUP BY status").fetchall())

    def absorb(self, other: RunStore) -> dict[str, int]:
        """Copy another store's calls, failures, records, chains, scores and provider batches into this one, in one
        transaction (`evolinstruct merge`: shards hold disjoint seeds; a call both hold is the same answer). Rows per
        table."""
        counts: dict[str, int] = {}
        try:
            self.db.execute("BEGIN")
            for table in ("calls", "failures", "records", "chains", "scores", "batches", "batch_requests"):
                if not other.has_table(table):
                    continue
                cursor = other.db.execute(f"SELECT * FROM {table}")  # noqa: S608 - our own table names
                marks = ", ".join("?" * len(cursor.description))
                counts[table] = 0
                while rows := cursor.fetchmany(2000):  # streamed: a shard's calls need not fit in memory
                    self.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", rows)  # noqa: S608
                    counts[table] += len(rows)
            # A call stored by one shard is no longer a failure in the merged run.
            self.db.execute("DELETE FROM failures WHERE key IN (SELECT key FROM calls)")
            self.db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._error(exc, "merge a run store") from None
        self._failed_keys = {row[0] for row in self.db.execute("SELECT key FROM failures")}
        return counts

    def has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    def close(self) -> None:
        try:
            if getattr(self, "db", None) is not None:
                self.db.close()
        except sqlite3.Error:
            pass  # closing cannot lose a commit; an unfinished transaction is rolled back
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None


def _lock(run_dir: Path):  # -> an open file holding the lock
    """One writer per run: an exclusive flock on RUN_DIR/run.lock, held while the store is open.

    The kernel drops a flock when its process dies (even by SIGKILL), so a stale lock never blocks;
    a second process refuses at once, naming the holder's pid.
    """
    handle = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StoreError(f"{run_dir} is in use by pid {holder}: wait for it to finish, or stop it "
                         "(one process writes a run at a time)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _os_hint(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full: free space and rerun"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "the location is read-only: choose a writable RUN_DIR, or make this one writable"
    return "choose another RUN_DIR"


def _mean(values: list[float]) -> float | None:
    return round(fmean(values), 3) if values else None
