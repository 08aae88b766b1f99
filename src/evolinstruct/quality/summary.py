"""stats.json's "scores" section, computed from the run store alone (so `evolve` can write it too).

Per scorer, over the kept records (the dataset): how many have a value, how many did not parse, the
mean, and the mean by epoch, epoch "0" being the seeds: the paper's difficulty-by-round table.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from typing import Any

from ..store import RunStore


def _mean(values: list[float]) -> float | None:
    return round(fmean(values), 3) if values else None


def score_summary(store: RunStore) -> dict[str, Any]:
    values: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    failures: dict[str, int] = defaultdict(int)
    eliminated: dict[str, list[float]] = defaultdict(list)
    rows = store.db.execute(
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
