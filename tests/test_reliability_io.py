"""Hardening of files and signals, against real processes, files and file systems.

- Outputs: only regular files are written (a directory or a device given as -o is refused, never replaced),
  nothing is left behind on an error (no `.tmp`), the format is checked before anything is created.
- `train -o` a non-empty directory that is not an earlier output of the same config is refused.
- A read-only RUN_DIR and a full disk end in one line naming the file; the store stays intact and a rerun
  resumes. Both are real: as root (these tests' user) chmod does not stop writes, so the run directory is
  bind-mounted read-only, and the full disk is a tiny tmpfs, each in a private mount namespace
  (`unshare -m`: the mounts vanish with the shell, whatever happens). Not root: chmod does the read-only
  case and the full disk is skipped.
- SIGTERM to a real `evolinstruct evolve` stops it as Ctrl-C does: the same message, exit 143, every
  finished call stored, and a rerun finishes with the same dataset as an uninterrupted run.
- Seed files that were accepted wrongly (more after a JSON array, non-text instructions, a ShareGPT
  column, an empty file) fail in one `file:line:` line.

The LLM is bench/simserver.py (deterministic answers, `--latency-mean 0.2`), started once for the module.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolinstruct.cli import app
from evolinstruct.report.builder import Report, csp
from evolinstruct.report.data import RunData
from evolinstruct.rundir import OutputError, write_atomic_lines, write_json, write_text
from evolinstruct.store import RunStore, StoreError
from evolinstruct.train.trainer import TRAIN_CONFIG, TrainError, TrainOptions, check_out_dir
from runhelpers import CLI, EXAMPLES, simserver, stored_calls

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = os.geteuid() == 0
ENV = {**os.environ, "COLUMNS": "250"}  # rich wraps at 80 columns off a terminal; keep each message on its line


# ------------------------------------------------------------------------------------------ helpers
def _one_line_error(text: str) -> str:
    """The command's error: exactly one 'error:' line, no traceback."""
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    return errors[0]


def _no_tmp_left(*folders: Path) -> None:
    left = [p for folder in folders if folder.exists() for p in folder.rglob("*.tmp")]
    assert left == [], left


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """bench/simserver.py on a free loopback port, 0.2 s mean latency: runs last a few seconds."""
    with simserver(tmp_path_factory.mktemp("sim"), "--latency-mean", "0.2") as url:
        yield url


def _evolve_cmd(url: str, run_dir: Path | str) -> list[str]:
    return [*CLI, "evolve", str(EXAMPLES), "-o", str(run_dir), "--base-url", url, "--model", "sim",
            "--epochs", "2", "--concurrency", "16"]


@pytest.fixture(scope="module")
def reference(sim_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: the dataset every interrupted-and-resumed run must reproduce byte for byte."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(_evolve_cmd(sim_url, run_dir), capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def _mount_namespace() -> bool:
    """Can this process mount in a private mount namespace (root, and not forbidden by a container)?"""
    if not IS_ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


MOUNTS = _mount_namespace()


def _run_script(script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A bash script in a private mount namespace: its mounts disappear when it ends, even on a failure."""
    done = subprocess.run(["unshare", "-m", "bash", "-c", "set -u\n" + script], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _steps(out: Path, name: str, command: list[str]) -> str:
    """A script line running `command`, its stderr to out/NAME.err and its status to out/NAME.rc."""
    return f"{shlex.join(command)} >/dev/null 2>{out / (name + '.err')}; echo $? >{out / (name + '.rc')}\n"


def _result(out: Path, name: str) -> tuple[int, str]:
    return int((out / f"{name}.rc").read_text()), (out / f"{name}.err").read_text()


# ------------------------------------------------------------------------------------------ 8: outputs
def test_export_to_a_directory_is_one_line_and_leaves_nothing(reference: Path, tmp_path: Path) -> None:
    target = tmp_path / "somedir"
    target.mkdir()
    result = _invoke("export", reference, "-o", f"{target}/")
    assert result.exit_code == 2
    assert "is a directory" in _one_line_error(result.output)
    assert list(target.iterdir()) == []
    _no_tmp_left(tmp_path)


def test_export_never_replaces_a_device_or_a_pipe(reference: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    nodes = [fifo]
    if IS_ROOT:  # the reporter's `export -o /dev/null`, on a device node of our own (char 1,3 is /dev/null)
        device = tmp_path / "null"
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        nodes.append(device)
    for node in nodes:
        mode = node.stat().st_mode
        result = _invoke("export", reference, "-o", node)
        assert result.exit_code == 2
        assert "not a regular file" in _one_line_error(result.output)
        assert node.stat().st_mode == mode  # still the device / the pipe
    _no_tmp_left(tmp_path)


def test_a_bad_format_creates_nothing(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "x.jsonl"
    result = _invoke("export", reference, "-f", "xml", "-o", out)
    assert result.exit_code == 2
    assert "unknown export format 'xml'" in _one_line_error(result.output)
    assert not (tmp_path / "new").exists()


def test_export_still_writes_a_regular_file(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "x.jsonl"
    out.parent.mkdir(parents=True)
    out.write_text("old\n")
    result = _invoke("export", reference, "-f", "openai", "-o", out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == len((reference / "dataset.jsonl").read_text().splitlines())


def test_atomic_writers_remove_their_temporary_file_on_any_error(tmp_path: Path) -> None:
    target = tmp_path / "rows.jsonl"
    target.write_text("kept\n")

    def rows():
        yield {"a": 1}
        raise ValueError("a bad row")

    with pytest.raises(ValueError, match="a bad row"):
        write_atomic_lines(target, rows())
    assert target.read_text() == "kept\n"  # the old file, untouched
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})  # not serialisable: fails before a file is opened
    for bad in (tmp_path, Path("/dev/null")):
        with pytest.raises(OutputError, match="is a directory|not a regular file"):
            write_text(bad, "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    _no_tmp_left(tmp_path)


@pytest.mark.skipif(not MOUNTS, reason="needs root and mount namespaces (unshare -m) for a real full disk")
def test_atomic_writers_on_a_full_disk(tmp_path: Path) -> None:
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    code = (
        "import json, sys; from evolinstruct.rundir import OutputError, write_text\n"
        "try:\n    write_text(sys.argv[1], 'x' * 200_000)\nexcept OutputError as e:\n    print(e)\n"
    )
    _run_script(f"mount -t tmpfs -o size=64k tmpfs {mnt}\n"
                f"{shlex.join([sys.executable, '-c', code, str(mnt / 'big.txt')])} >{out / 'said'}\n"
                f"ls -a {mnt} >{out / 'ls'}\n")
    said = (out / "said").read_text().strip()
    assert said.startswith(f"{mnt / 'big.txt'}: cannot write") and "disk is full" in said
    assert (out / "ls").read_text().split() == [".", ".."]  # no big.txt, no big.txt.tmp


def test_report_and_filter_refuse_a_wrong_kind_of_output(reference: Path, tmp_path: Path) -> None:
    result = _invoke("report", reference, "--no-map", "-o", tmp_path)
    assert result.exit_code == 2 and "is a directory" in _one_line_error(result.output)
    a_file = tmp_path / "file"
    a_file.write_text("mine\n")
    result = _invoke("filter", reference, "--no-embed", "--no-decontam", "-o", a_file)
    assert result.exit_code == 2 and "is not a directory" in _one_line_error(result.output)
    assert a_file.read_text() == "mine\n"
    _no_tmp_left(tmp_path, reference)


# ------------------------------------------------------------------------------------------ 7: train -o
def _train_data(tmp_path: Path) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i}."}) + "\n" for i in range(4)))
    return data


def test_train_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    data, out = _train_data(tmp_path), tmp_path / "mine"
    out.mkdir()
    (out / "README.md").write_text("my notes\n")
    (out / "config.json").write_text('{"mine": true}\n')
    result = _invoke("train", data, "-o", out, "--max-steps", "1")
    assert result.exit_code == 2
    line = _one_line_error(result.output)
    assert "is not empty" in line and "--overwrite" in line
    assert (out / "README.md").read_text() == "my notes\n" and (out / "config.json").read_text() == '{"mine": true}\n'
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json"]

    a_file = tmp_path / "model"
    a_file.write_text("x")
    result = _invoke("train", data, "-o", a_file)
    assert result.exit_code == 2 and "not a directory" in _one_line_error(result.output)


def test_train_accepts_its_own_output_of_the_same_config(tmp_path: Path) -> None:
    data, out = _train_data(tmp_path), tmp_path / "m"
    opts = TrainOptions(data=data, out_dir=out, seed=1)
    config = check_out_dir(opts)  # a new directory
    out.mkdir()
    check_out_dir(opts)  # an empty one
    (out / "README.md").write_text("card\n")
    (out / TRAIN_CONFIG).write_text(json.dumps(config))
    assert check_out_dir(opts) == config  # an earlier output of the same config: a resume
    assert check_out_dir(TrainOptions(data=data, out_dir=out, seed=1, max_steps=50)) == config  # may train longer
    other = TrainOptions(data=data, out_dir=out, seed=2)
    with pytest.raises(TrainError, match=r"another config \(seed differ"):
        check_out_dir(other)
    other.overwrite = True
    assert check_out_dir(other)["seed"] == 2


# ------------------------------------------------------------------------------------------ 9: store errors
def test_store_errors_at_open_are_one_line(tmp_path: Path) -> None:
    a_file = tmp_path / "run"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is not a directory"):
        RunStore(a_file)
    not_sqlite = tmp_path / "junk"
    not_sqlite.mkdir()
    (not_sqlite / "run.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"run\.sqlite: cannot open the run store for writing .*not a run store"):
        RunStore(not_sqlite)
    RunStore(tmp_path / "fine").close()  # the lock of a refused store was released: the next open works
    with pytest.raises(StoreError, match="not a readable run store"):
        RunStore(not_sqlite, readonly=True)


def _read_only(src: Path, mnt: Path) -> str:
    """Script lines that make `mnt` a read-only view of `src` (a bind mount; chmod does not stop root)."""
    if MOUNTS:
        return f"mount --bind {src} {mnt} && mount -o remount,bind,ro {mnt}\n"
    return f"chmod -R a-w {src}\n"


@pytest.mark.skipif(not MOUNTS and IS_ROOT, reason="root without mount namespaces: nothing makes a directory read-only")
def test_a_read_only_run_dir(reference: Path, sim_url: str, tmp_path: Path) -> None:
    run, mnt, out = tmp_path / "run", tmp_path / "mnt", tmp_path / "out"
    shutil.copytree(reference, run)
    mnt.mkdir()
    out.mkdir()
    view = mnt if MOUNTS else run
    script = (_read_only(run, mnt)
              + _steps(out, "evolve", _evolve_cmd(sim_url, view))
              + _steps(out, "score", [*CLI, "score", str(view), "--heuristics"])
              + _steps(out, "report_default", [*CLI, "report", str(view), "--no-map"])
              + _steps(out, "report", [*CLI, "report", str(view), "--no-map", "-o", str(out / "report.html")])
              + _steps(out, "export", [*CLI, "export", str(view), "-o", str(out / "export.jsonl")]))
    if MOUNTS:
        _run_script(script)
    else:
        try:
            subprocess.run(["bash", "-c", script], check=True, timeout=300, env=ENV)
        finally:
            subprocess.run(["chmod", "-R", "u+w", str(run)], check=True)
    for name in ("evolve", "score"):
        code, err = _result(out, name)
        assert code == 2, err
        line = _one_line_error(err)
        assert str(view) in line and "read-only" in line, line
    code, err = _result(out, "report_default")  # reading works; only the default output cannot be written
    assert code == 2 and "report.html" in _one_line_error(err) and "pass -o" in err
    code, err = _result(out, "report")
    assert code == 0, err
    assert (out / "report.html").stat().st_size > 10_000
    code, err = _result(out, "export")
    assert code == 0, err
    assert (run / "dataset.jsonl").read_bytes() == (reference / "dataset.jsonl").read_bytes()


@pytest.mark.skipif(not MOUNTS, reason="needs root and mount namespaces (unshare -m) for a real full disk")
def test_a_full_disk_keeps_the_store_and_resumes(reference: Path, sim_url: str, tmp_path: Path) -> None:
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    run = mnt / "run"
    check = (f"import sqlite3; db = sqlite3.connect('file:{run / 'run.sqlite'}?mode=ro', uri=True); "
             "print(db.execute('PRAGMA integrity_check').fetchone()[0], db.execute('SELECT COUNT(*) FROM calls').fetchone()[0])")
    # 512 KiB: the schema fits, and the write-ahead log fills it after a few calls, mid-run.
    _run_script(f"mount -t tmpfs -o size=512k tmpfs {mnt}\n"
                + _steps(out, "full", _evolve_cmd(sim_url, run))
                + f"{shlex.join([sys.executable, '-c', check])} >{out / 'check'}\n"
                + f"mount -o remount,size=64m {mnt}\n"  # space freed
                + _steps(out, "resume", _evolve_cmd(sim_url, run))
                + f"cp {run / 'dataset.jsonl'} {out}/\n")
    code, err = _result(out, "full")
    assert code == 2, err
    line = _one_line_error(err)
    assert str(run / "run.sqlite") in line and "disk is full" in line and "rerun" in line
    integrity, calls = (out / "check").read_text().split()
    assert integrity == "ok" and int(calls) >= 1  # it failed at write time, and kept every commit
    code, err = _result(out, "resume")
    assert code == 0, err
    assert (out / "dataset.jsonl").read_bytes() == (reference / "dataset.jsonl").read_bytes()


# ------------------------------------------------------------------------------------------ 9: SIGTERM
def test_sigterm_stops_like_ctrl_c_and_the_rerun_resumes(reference: Path, sim_url: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(_evolve_cmd(sim_url, run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.monotonic() + 120
    while stored_calls(run) < 10:  # mid-run: some calls stored, most still to come
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the run stored too few calls"
        time.sleep(0.05)
    before = stored_calls(run)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "interrupted: everything finished so far is stored; rerun the same command to resume." in err
    after = stored_calls(run)
    total = stored_calls(reference)
    assert before <= after < total  # nothing finished was lost, and it did stop early
    with sqlite3.connect(run / "run.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    rerun = subprocess.run(_evolve_cmd(sim_url, run), capture_output=True, text=True, timeout=300, env=ENV)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    stats = json.loads((run / "stats.json").read_text())
    assert stats["resumed"] is True
    assert stats["llm_calls"] == total - after  # every stored call replayed, none sent twice
    assert (run / "dataset.jsonl").read_bytes() == (reference / "dataset.jsonl").read_bytes()


# ------------------------------------------------------------------------------------------ 10: seeds
@pytest.mark.parametrize(
    ("name", "content", "args", "expected"),
    [
        ("more.json", '[{"instruction": "a"}]\n{"instruction": "b"}\n', [], "more.json:2: unexpected text after the JSON array"),
        ("num.jsonl", '{"instruction": "a"}\n{"instruction": 42}\n', [], "num.jsonl:2: column 'instruction' holds a number"),
        ("list.jsonl", '{"instruction": ["a", "b"]}\n', [], "list.jsonl:1: column 'instruction' holds a list"),
        ("dict.jsonl", '{"instruction": {"a": 1}}\n', [], "dict.jsonl:1: column 'instruction' holds an object"),
        ("bool.jsonl", '{"instruction": "a", "input": true}\n', [], "bool.jsonl:1: column 'input' holds a boolean"),
        ("empty.jsonl", "", [], "empty.jsonl:1: no seeds"),
        ("blank.json", "[]\n", [], "blank.json:1: no seeds"),
        ("unusable.jsonl", '{"instruction": ""}\n{"instruction": "  "}\n', [], "unusable.jsonl:2: no usable seed"),
        ("chat.json", json.dumps([{"id": "x", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]),
         ["--column", "conversations"], "chat.json:1: column 'conversations' holds a conversation"),
    ],
)
def test_wrong_seed_input_is_one_line(tmp_path: Path, name: str, content: str, args: list[str], expected: str) -> None:
    seeds, out = tmp_path / name, tmp_path / "run"
    seeds.write_text(content)
    result = _invoke("evolve", seeds, "-o", out, "--base-url", "http://127.0.0.1:9/v1", "--model", "none", *args)
    assert result.exit_code == 2, result.output
    line = _one_line_error(result.output)
    assert f"{seeds.parent}/{expected}" in line, line
    if name == "chat.json":
        assert "--task conversation" in line and "--column" in line
    assert not out.exists()  # checked before anything is written


# ------------------------------------------------------------------------------------------ 12: report CSP
def test_report_csp_allows_only_its_own_script(tmp_path: Path) -> None:
    html = Report(RunData(run_dir=tmp_path, records=[], stats={}, calls={}), None, map_limit=10, tree_limit=10).page()
    policy = html.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert "'unsafe-inline'" not in directives["script-src"] and "'unsafe-eval'" not in directives["script-src"]
    script = html.rsplit("<script>", 1)[1].split("</script>", 1)[0]
    assert directives["script-src"] == csp(script).split("script-src ", 1)[1].split(";", 1)[0]
    assert directives["default-src"] == "'none'"
