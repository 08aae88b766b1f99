#!/usr/bin/env python3
"""Summarise a py-spy `record -f raw` file (collapsed stacks): top frames by self and inclusive share.

`python bench/pyspy_top.py profile.raw [--top 25] [--match evolinstruct]`
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r"\s*\(([^()]*?)(?::\d+)?\)$")


def _func(frame: str) -> str:
    """'name (path/to/file.py:123)' -> 'name (file.py)': group a function's lines together."""
    m = _LINE.search(frame)
    if not m:
        return frame.strip()
    path = m.group(1)
    short = "/".join(path.split("/")[-2:])
    return f"{frame[: m.start()].strip()} ({short})"


def summarise(path: str, top: int = 25, match: str | None = None) -> dict:
    self_c: Counter = Counter()
    incl_c: Counter = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, n = line.rpartition(" ")
            try:
                count = int(n)
            except ValueError:
                continue
            frames = [_func(fr) for fr in stack.split(";") if fr]
            if frames and frames[0].startswith("process ") or frames and frames[0].startswith("thread "):
                frames = frames[1:]
            if not frames:
                continue
            total += count
            self_c[frames[-1]] += count
            for fr in set(frames):
                incl_c[fr] += count
    def rows(c: Counter) -> list[tuple[str, float]]:
        items = [(k, v) for k, v in c.most_common() if not match or match in k]
        return [(k, round(100.0 * v / total, 1)) for k, v in items[:top]]
    return {"samples": total, "self": rows(self_c), "inclusive": rows(incl_c)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("raw")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--match", default=None, help="only frames whose text contains this")
    a = p.parse_args()
    s = summarise(a.raw, a.top, a.match)
    print(f"samples: {s['samples']}")
    for title in ("self", "inclusive"):
        print(f"\n== top by {title} %")
        for name, pct in s[title]:
            print(f"{pct:6.1f}%  {name}")


if __name__ == "__main__":
    main()
