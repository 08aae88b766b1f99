"""Where the shared data lives (eval sets, judge prompts, seeds): --data-dir, $EVOLINSTRUCT_DATA, or
../shared/data beside the checkout or the working directory. eval and filter both look here."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "EVOLINSTRUCT_DATA"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The shared data directory, or None when none of the candidate places has one."""
    if data_dir:
        return Path(data_dir)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    here = Path(__file__).resolve()
    # src/evolinstruct/datadir.py -> the checkout is parents[2]; ../shared/data beside it.
    candidates = [here.parents[3] / "shared" / "data"] if len(here.parents) > 3 else []
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path.cwd() / "shared" / "data")
    return next((c for c in candidates if c.is_dir()), None)
