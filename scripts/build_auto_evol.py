"""Regenerate src/evolinstruct/optimize/auto_evol_prompts.json, the prompts of `evolinstruct optimize`.

The strings are Auto Evol-Instruct's (arXiv 2406.00770), byte for byte, from
../shared/data/prompts/auto_evol_instruct_prompts.json (extracted from Zeng-WH/Auto-Evol-Instruct optimizer.py
@e26b08d): the initial evolving method, the trajectory-analysis and method-optimization prompts, the answer
system prompt, the final-instruction markers and the failure detector's phrases. Only the key order and the
`source` line are ours.

Usage: python scripts/build_auto_evol.py [AUTO_EVOL_PROMPTS_JSON]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "evolinstruct" / "optimize" / "auto_evol_prompts.json"
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts" / "auto_evol_instruct_prompts.json"
KEYS = ("init_method", "trajectory_analysis", "method_optimization", "answer_system", "final_markers", "failure_detector")


def build(src: Path) -> dict:
    data = json.loads(src.read_text(encoding="utf-8"))
    missing = [k for k in KEYS if k not in data]
    if missing:
        raise SystemExit(f"{src}: missing {', '.join(missing)}")
    return {"source": "Auto Evol-Instruct (arXiv 2406.00770), Zeng-WH/Auto-Evol-Instruct optimizer.py @e26b08d",
            **{k: data[k] for k in KEYS}}


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    OUT.write_text(json.dumps(build(src), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
