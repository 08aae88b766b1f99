#!/usr/bin/env python3
"""Prove that a refactor changed no behaviour: run the same commands with two builds and compare outputs.

Both builds (`--base REV`, and `--head`: the current working tree by default) run the same pipeline,
one after the other and in the same RUN_DIR path, against one bench/simserver.py. The server answers
from a hash of the request body, so two builds that send the same requests get the same answers, and
any difference in what they write comes from the code:

    evolve SEEDS --limit N --epochs E --backend openai ... -o RUN_DIR
    score RUN_DIR --heuristics
    filter RUN_DIR --no-embed --name eq
    export RUN_DIR -f sharegpt|alpaca|openai -o RUN_DIR/export.FMT.jsonl

Compared: dataset.jsonl, eliminated.jsonl and errors.jsonl byte for byte after evolve and after score,
stats.json after both (as JSON, without time-like keys), filtered/eq/{dataset,removed}.jsonl byte for
byte and filter_stats.json (without times), and each export byte for byte. Exit 0 only if all are the
same. Each build's CLI runs under .venv/bin/python with its own src/ first on sys.path, so the editable
install of the checkout does not leak into the base build; every child runs in its own process group
with a timeout, and PYTHONHASHSEED is fixed so set order cannot differ between the two runs.

    python bench/equivalence.py --base HEAD~1            # HEAD~1 vs the working tree
    python bench/equivalence.py --base HEAD --head HEAD  # two worktrees of HEAD (a self-check)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"
SIMSERVER = ROOT / "bench" / "simserver.py"
SEEDS = "../shared/data/seeds/alpaca_52k.json"  # relative to ROOT, the children's working directory
IMPORTED = "equivalence: imported "  # the line each child writes to stderr before the CLI runs
EXPORT_FORMATS = ("sharegpt", "alpaca", "openai")
# Where a build writes; the same path for both builds, so paths recorded in outputs are identical too.
ACTIVE_RUN = "run"


class Failure(Exception):
    """The harness itself could not run (not a difference between the builds)."""


# ---------------------------------------------------------------------------------------- processes
def run_logged(cmd: list[str], *, log: Path, timeout: float, cwd: Path = ROOT,
               env: dict[str, str] | None = None) -> int:
    """Run `cmd` in its own process group with stdout+stderr to `log`; kill that group on timeout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            out.write(f"\nequivalence: killed after {timeout:.0f}s\n".encode())
            return 124
        except BaseException:
            stop_group(proc)
            raise


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def git(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise Failure(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


@contextlib.contextmanager
def sim_server(log: Path, timeout: float = 30) -> Iterator[str]:
    """bench/simserver.py on 127.0.0.1 with a free port; yields the base URL (.../v1)."""
    cmd = [str(VENV_PY), str(SIMSERVER), "--host", "127.0.0.1", "--port", "0", "--slots", "64",
           "--latency-mean", "0.01", "--sigma", "0.5", "--rate-equal", "0.3"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on "):
            raise Failure(f"simserver did not start: {line!r} {log.read_text(errors='replace')[-2000:]}")
        yield line.split("listening on ", 1)[1].strip() + "/v1"
    finally:
        stop_group(proc)
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------------------------- builds
@dataclass
class Build:
    """One build of evolinstruct: a src/ directory, and the worktree it lives in (if this script made it)."""

    label: str
    spec: str
    src: Path
    worktree: Path | None = None
    imported: set[str] = field(default_factory=set)

    def command(self, *args: str) -> list[str]:
        # `from evolinstruct.cli import app` works whether cli is a module or a package.
        boot = (f"import sys; sys.path.insert(0, {str(self.src)!r}); import evolinstruct; "
                f"sys.stderr.write({IMPORTED!r} + evolinstruct.__file__ + '\\n'); sys.stderr.flush(); "
                "from evolinstruct.cli import app; sys.argv[0] = 'evolinstruct'; app()")
        return [str(VENV_PY), "-c", boot, *args]


def make_build(label: str, spec: str | None, worktrees: Path) -> Build:
    """`spec`: None (the current working tree), a directory (a checkout or a src/ dir) or a git revision."""
    if spec is None:
        return Build(label, f"working tree ({ROOT / 'src'})", ROOT / "src")
    path = Path(spec)
    if path.is_dir():
        for src in (path / "src", path):
            if (src / "evolinstruct" / "__init__.py").is_file():
                return Build(label, str(path.resolve()), src.resolve())
        raise Failure(f"{spec}: no evolinstruct package in it or in its src/")
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except Failure:
        raise Failure(f"{spec}: neither a directory nor a git revision") from None
    tree = worktrees / label
    git("worktree", "add", "--detach", str(tree), commit)
    build = Build(label, f"{spec} ({commit[:12]})", tree / "src", worktree=tree)
    if not (build.src / "evolinstruct" / "__init__.py").is_file():
        remove_worktree(build)
        raise Failure(f"{spec}: no src/evolinstruct in that revision")
    return build


def remove_worktree(build: Build) -> None:
    if build.worktree is not None:
        with contextlib.suppress(Failure, subprocess.TimeoutExpired):
            git("worktree", "remove", "--force", str(build.worktree))


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1", OPENAI_API_KEY="sim-equivalence",
               NO_COLOR="1", COLUMNS="120")
    env.pop("PYTHONPATH", None)
    return env


def run_build(build: Build, work: Path, base_url: str, args: argparse.Namespace) -> list[str]:
    """Run the pipeline with one build; leaves work/LABEL/{evolve,score,run,logs}. Returns failures."""
    out = work / build.label
    run_dir = work / ACTIVE_RUN
    logs = out / "logs"
    env = child_env()
    steps: list[tuple[str, list[str], tuple[int, ...], str | None]] = [
        ("evolve", ["evolve", SEEDS, "--limit", str(args.seeds), "--epochs", str(args.epochs),
                    "--backend", "openai", "--base-url", base_url, "--model", "sim", "--concurrency", "16",
                    "--max-tokens", "128", "-o", str(run_dir)], (0, 3), "evolve"),
        ("score", ["score", str(run_dir), "--heuristics"], (0, 3), "score"),
        ("filter", ["filter", str(run_dir), "--no-embed", "--name", "eq"], (0,), None),
    ]
    steps += [(f"export-{fmt}", ["export", str(run_dir), "-f", fmt, "-o", str(run_dir / f"export.{fmt}.jsonl")],
               (0,), None) for fmt in EXPORT_FORMATS]
    failures: list[str] = []
    try:
        for name, cli_args, ok_codes, snapshot in steps:
            log = logs / f"{name}.log"
            t0 = time.perf_counter()
            rc = run_logged(build.command(*cli_args), log=log, timeout=args.timeout, env=env)
            text = log.read_text(errors="replace")
            build.imported.update(line[len(IMPORTED):].strip() for line in text.splitlines()
                                  if line.startswith(IMPORTED))
            print(f"  {build.label} {name}: rc {rc} in {time.perf_counter() - t0:.1f}s", flush=True)
            if rc not in ok_codes:
                tail = "\n".join("    " + line for line in text.splitlines()[-15:])
                failures.append(f"{build.label} {name} exited {rc}; the end of {log.relative_to(work)}:\n{tail}")
                break
            if snapshot:  # score and filter rewrite files in place: keep what this stage wrote
                dest = out / snapshot
                dest.mkdir(parents=True)
                for f in ("dataset.jsonl", "eliminated.jsonl", "errors.jsonl", "stats.json"):
                    if (run_dir / f).exists():
                        shutil.copy2(run_dir / f, dest / f)
    finally:
        if run_dir.exists():
            run_dir.rename(out / "run")
    return failures


# ---------------------------------------------------------------------------------------- comparison
def first_diff_line(a: list[str], b: list[str]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False), 1):
        if x != y:
            return i
    return min(len(a), len(b)) + 1


def strip_times(obj: Any, path: str, dropped: set[str]) -> Any:
    """`obj` without time-like keys; notes what went in `dropped`.

    In stats.json the wall-clock keys are `seconds`, `seconds_total` and `score_run.seconds`; in
    filter_stats.json the `seconds` dict (time per stage). Everything else there is a count, a setting or
    a path (the same for both builds: they use the same RUN_DIR path). `http` holds retry counters, not
    latencies, so it is compared.
    """
    if isinstance(obj, dict):
        kept = {}
        for key, value in obj.items():
            where = f"{path}.{key}" if path else str(key)
            if "seconds" in str(key):
                dropped.add(where)
            else:
                kept[key] = strip_times(value, where, dropped)
        return kept
    if isinstance(obj, list):
        return [strip_times(v, f"{path}[]", dropped) for v in obj]
    return obj


def compare_file(rel: str, a: Path, b: Path, as_json: bool, dropped: set[str]) -> str:
    """One report line: `same  REL` or `DIFF  REL  (why)`; `as_json`: compare without time-like keys."""
    if not a.exists() or not b.exists():
        missing = " and ".join(label for label, p in (("base", a), ("head", b)) if not p.exists())
        return f"DIFF  {rel}  (missing in {missing})"
    if as_json:
        texts = [json.dumps(strip_times(json.loads(p.read_text(encoding="utf-8")), "", dropped),
                            indent=2, sort_keys=True, ensure_ascii=False) for p in (a, b)]
        lines_a, lines_b = texts[0].splitlines(), texts[1].splitlines()
        if lines_a == lines_b:
            return f"same  {rel}"
        return f"DIFF  {rel}  (first differing line {first_diff_line(lines_a, lines_b)} of the normalised JSON)"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    if data_a == data_b:
        return f"same  {rel}"
    line = first_diff_line(data_a.split(b"\n"), data_b.split(b"\n"))
    return f"DIFF  {rel}  (first differing line {line})"


def compared_files() -> list[tuple[str, bool]]:
    """(path relative to a build's directory, compare as JSON without times)."""
    files: list[tuple[str, bool]] = []
    for stage in ("evolve", "score"):
        files += [(f"{stage}/{f}", False) for f in ("dataset.jsonl", "eliminated.jsonl", "errors.jsonl")]
        files.append((f"{stage}/stats.json", True))
    files += [(f"run/filtered/eq/{f}", False) for f in ("dataset.jsonl", "removed.jsonl")]
    files.append(("run/filtered/eq/filter_stats.json", True))
    files += [(f"run/export.{fmt}.jsonl", False) for fmt in EXPORT_FORMATS]
    return files


# ---------------------------------------------------------------------------------------- main
def interrupted(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop the server and remove the worktrees."""
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision of the build before the refactor")
    p.add_argument("--head", default=None,
                   help="the build after it: a directory (a checkout or its src/) or a git revision "
                        "(default: this checkout's working tree)")
    p.add_argument("--seeds", type=int, default=60, help="seeds to evolve (--limit)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the run directories and logs here (new or empty), with equivalence.txt")
    p.add_argument("--timeout", type=float, default=300, help="seconds per CLI command before it is killed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not VENV_PY.exists():
        print(f"equivalence: {VENV_PY} is missing (run `make setup`)", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        print(f"equivalence: --keep {args.keep} is not empty", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupted)
    t0 = time.perf_counter()
    worktrees = Path(tempfile.mkdtemp(prefix="evolinstruct-eq-trees-"))
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="evolinstruct-eq-runs-"))
    work.mkdir(parents=True, exist_ok=True)
    builds: list[Build] = []
    report: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        report.append(line)

    try:
        builds.append(make_build("base", args.base, worktrees))
        builds.append(make_build("head", args.head, worktrees))
        failures: list[str] = []
        with sim_server(work / "simserver.log") as base_url:
            print(f"simserver at {base_url}; {args.seeds} seeds x {args.epochs} epochs per build", flush=True)
            for build in builds:
                failures += run_build(build, work, base_url, args)
        for build in builds:
            say(f"{build.label}: {build.spec}")
            for path in sorted(build.imported) or ["(nothing: the CLI did not start)"]:
                say(f"  imported {path}")
            if build.imported and not all(Path(p).is_relative_to(build.src) for p in build.imported):
                failures.append(f"{build.label} imported evolinstruct from outside {build.src}")
        for failure in failures:
            say(f"FAIL  {failure}")
        lines: list[str] = []
        ignored: dict[str, set[str]] = {}
        for rel, as_json in compared_files():
            dropped = ignored.setdefault(rel, set()) if as_json else set()
            lines.append(compare_file(rel, work / "base" / rel, work / "head" / rel, as_json, dropped))
            say(lines[-1])
        for rel, keys in ignored.items():
            if keys:
                say(f"ignored time-like keys in {rel}: {', '.join(sorted(keys))}")
        n_diff = sum(line.startswith("DIFF") for line in lines)
        say(f"equivalence: {len(lines) - n_diff} files same, {n_diff} differ")
        code = 0 if n_diff == 0 and not failures else 1
    except Failure as exc:
        say(f"equivalence: {exc}")
        code = 2
    except KeyboardInterrupt:
        say("equivalence: interrupted")
        code = 130
    finally:
        for build in builds:
            remove_worktree(build)
        shutil.rmtree(worktrees, ignore_errors=True)
        if args.keep:
            (work / "equivalence.txt").write_text("\n".join(report) + "\n", encoding="utf-8")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
