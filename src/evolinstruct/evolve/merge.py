"""`evolinstruct merge`: the shards of a run (`evolve --shard I/N`, `evolve --ray N`) joined into one RUN_DIR.

Shards split the seeds by record id (executor.py `shard_of`), so their stores hold disjoint records; the
merged store holds all of them, bound to the run's config without the shard, so it is the run an unsharded
`evolve` with the same options would have made: score, filter, report, train and export take it unchanged,
and `evolve` itself resumes it (to finish seeds a stopped shard left). Outputs are rewritten from the merged
store in the usual one pass (outputs.py), so dataset.jsonl is ordered by seed as an unsharded run's is.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from ..rundir import STATS, write_stats
from ..store import RunStore, StoreError
from .outputs import finalize
from .tasks import get_task

# Summed over the shards' stats.json into the merged one (what each shard's process counted).
_SUMMED = ("llm_calls", "cache_hits", "failed_calls", "equality_unparsed", "skipped_empty_seeds")


def merge_runs(shard_dirs: list[Path], out: Path) -> dict[str, Any]:
    """Merge the complete set of shards of one run into `out`; returns the merged stats (also in out/stats.json).

    Refused, with one line naming the directory: a directory that holds no store, a run that is not a shard,
    shards of different runs or of a different split, a shard given twice, a shard missing."""
    if not shard_dirs:
        raise ValueError("merge needs the shards' RUN_DIRs")
    shards: dict[int, tuple[Path, dict[str, Any]]] = {}
    base: dict[str, Any] | None = None
    count = 0
    for d in shard_dirs:
        store = RunStore(d, readonly=True)
        try:
            config = store.get_meta("config")
        finally:
            store.close()
        if not config or "shard" not in config:
            raise ValueError(f"{d}: not a shard of a run (made without --shard I/N or --ray)")
        index, n = config.pop("shard")
        if base is None:
            base, count = config, n
        elif config != base or n != count:
            diffs = sorted(k for k in set(config) | set(base) if config.get(k) != base.get(k))
            raise ValueError(f"{d}: a shard of another run than {shard_dirs[0]} "
                             f"({', '.join(diffs) or f'{n} shards, not {count}'} differ)")
        if index in shards:
            raise ValueError(f"{d}: shard {index}/{count} is also {shards[index][0]}")
        shards[index] = (d, config)
    assert base is not None
    missing = sorted(set(range(count)) - set(shards))
    if missing:
        raise ValueError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(f'{i}/{count}' for i in missing)} "
                         "missing: give every shard's RUN_DIR")
    if out.resolve() in {d.resolve() for d, _ in shards.values()}:
        raise ValueError(f"{out}: is one of the shards; merge into another directory")

    merged = RunStore(out)
    try:
        merged.bind_config(base)  # a merge into the same RUN_DIR again (more shards finished) is allowed
        meta: dict[str, Any] = {"commands": [], "seconds_total": 0.0}
        shard_stats: dict[str, Any] = {}
        extra: dict[str, Any] = {k: 0 for k in _SUMMED}
        purposes: dict[str, Counter] = {}
        endpoints: dict[str, dict[str, Any]] = {}
        stopped = None
        for index in sorted(shards):
            d, _ = shards[index]
            source = RunStore(d, readonly=True)
            try:
                merged.absorb(source)
                for key in ("roles", "template_set"):
                    if (value := source.get_meta(key)) is not None:
                        meta[key] = value
                meta["commands"] += [c for c in source.get_meta("commands") or [] if c not in meta["commands"]]
                # Shards run side by side: the run took as long as the slowest.
                meta["seconds_total"] = max(meta["seconds_total"], source.get_meta("seconds_total") or 0.0)
            finally:
                source.close()
            stats = _read_stats(d)
            for k in _SUMMED:
                extra[k] += stats.get(k) or 0
            for kind, by_purpose in (stats.get("calls_by_purpose") or {}).items():
                purposes.setdefault(kind, Counter()).update(by_purpose)
            for url, e in (stats.get("endpoints") or {}).items():
                _add_endpoint(endpoints.setdefault(url, {}), e)
            stopped = stopped or stats.get("stopped_by")
            for k in ("models", "templates", "http"):
                if k in stats:
                    extra[k] = stats[k]
            shard_stats[f"{index}/{count}"] = {"run_dir": str(d), "seeds": stats.get("seeds"),
                                               "dataset_rows": stats.get("dataset_rows"),
                                               "llm_calls": stats.get("llm_calls"), "seconds": stats.get("seconds")}
        for key, value in meta.items():
            merged.set_meta(key, value)
        extra.update({"calls_by_purpose": {k: dict(v) for k, v in purposes.items()}, "stopped_by": stopped,
                      "resumed": False, "seconds": round(meta["seconds_total"], 3),
                      "seconds_total": round(meta["seconds_total"], 3), "shards": shard_stats})
        if endpoints:
            for e in endpoints.values():
                e["mean_latency_s"] = round(e.pop("_latency") / e["calls"], 4) if e["calls"] else None
            extra["endpoints"] = endpoints
        task = get_task(base.get("task", "chat"))
        stats = finalize(merged, base["epochs"], extra, task.tally() if task.tally else None)
        write_stats(out, stats)
        return stats
    finally:
        merged.close()


def shards_progress(shard_dirs: list[Path]) -> dict[str, int]:
    """Records by status summed over the shards' stores so far (a shard not started yet counts nothing);
    read-only, safe while the shards run."""
    total: Counter = Counter()
    for d in shard_dirs:
        try:
            store = RunStore(d, readonly=True)
        except StoreError:
            continue
        try:
            total.update(store.record_counts())
        except sqlite3.Error:
            pass  # a store still being created: nothing to count yet
        finally:
            store.close()
    return dict(total)


def _read_stats(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / STATS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}  # a shard stopped before it wrote any: its store is still merged
    except (OSError, ValueError) as exc:
        raise StoreError(f"{run_dir / STATS}: cannot read ({exc})") from None


def _add_endpoint(into: dict[str, Any], e: dict[str, Any]) -> None:
    """One shard's counters of an endpoint added to the merged ones (the mean latency re-weighted)."""
    for k in ("calls", "failures", "prompt_tokens", "completion_tokens", "ejections", "readmissions"):
        into[k] = into.get(k, 0) + (e.get(k) or 0)
    into["_latency"] = into.get("_latency", 0.0) + (e.get("mean_latency_s") or 0.0) * (e.get("calls") or 0)
    into["up"] = bool(e.get("up"))
