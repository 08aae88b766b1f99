"""Run a generated answer's Python code in a sandbox (`evolve --task code --exec-check`).

Generated code never runs in this process or outside this sandbox. `run_python(code)` runs it as a
child process:

- `python -I -S` (isolated mode: no PYTHON* variables, no user or site packages, no script directory
  on sys.path), in a fresh temporary directory that is its cwd, HOME and TMPDIR and is removed
  afterwards, with a minimal environment and no stdin;
- limits, set in the child before the code runs: address space (`memory_mb`, RLIMIT_AS), CPU time
  (`cpu_seconds`, RLIMIT_CPU), file size (RLIMIT_FSIZE, also caps the captured output), no core files,
  and for a non-root user the number of processes (RLIMIT_NPROC: the user's processes now + 64; the
  kernel never applies it to root, where the PID namespace below ends every process instead);
- a wall-time limit (`timeout`): the whole process group is killed (SIGKILL) when it is reached;
- no network: a new network namespace (`unshare --net`, util-linux; as root, or with an unprivileged user
  namespace) in which not even loopback is up, plus a PID namespace, so that every process the code
  starts dies with it. Where no namespace can be made, Landlock (Linux >= 6.7) denies TCP connect and bind
  (`isolation: "landlock-tcp"`: UDP and DNS are then not blocked), else nothing is (`isolation: "none"`,
  recorded in every result);
- writes only inside its directory: Landlock (Linux >= 5.13) denies creating, writing, truncating,
  renaming or removing any file outside it (`/dev/null` excepted), `filesystem: "landlock"`. Without
  Landlock (`filesystem: "none"`), the process runs as the same user as evolinstruct and can write
  wherever that user can; only cwd, HOME and TMPDIR point into the sandbox's directory;
- as root, every capability is dropped (the bounding set too, so an exec cannot regain them) and
  no_new_privs is set: the code cannot raise its limits, mount, or use raw sockets.

Reads are not restricted: the code can read what the user can (it needs the standard library).

A result's outcome: `ok` (exit 0, with any asserts and doctests the code holds passing), `crash` (an
exception or a non-zero exit), `timeout` (the wall-time or CPU limit), `blocked` (it stopped on what the
sandbox withholds: the network, a write outside its directory, or a module that is not in the standard
library, or input from stdin, named in `blocked`), `error` (the sandbox itself could not be set up).
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

OUTCOMES = ("ok", "crash", "timeout", "blocked", "error")
TIMEOUT = 5.0  # seconds of wall time
MEMORY_MB = 512
CPU_SECONDS = 5
FILE_MB = 16  # the largest file the code may write, its captured output included
KEEP_CHARS = 1000  # of stdout (its head) and stderr (its tail) kept as evidence
SETUP_FAILED = 125  # the bootstrap's exit status when a limit or a restriction cannot be applied
DOCTEST_MARK = "[evolinstruct-doctest]"

# The child's first code, run by `python -I -S -c`: limits, Landlock, capabilities, then the answer as the
# module __main__ and its doctests. argv: memory MB, CPU s, file MB, Landlock ABI (0: none), NPROC (0: none),
# the answer's path, the work directory. It fails closed: a restriction that cannot be applied exits 125.
BOOTSTRAP = r"""
import os, sys, resource as R
def _fail(what):
    sys.stderr.write("evolinstruct-sandbox: setup failed: %s\n" % what)
    os._exit(125)
def _setup():
    mem, cpu, fmb, abi, nproc = (int(a) for a in sys.argv[1:6])
    work = sys.argv[7]
    R.setrlimit(R.RLIMIT_AS, (mem << 20, mem << 20))
    R.setrlimit(R.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU at the soft limit, SIGKILL a second later
    R.setrlimit(R.RLIMIT_FSIZE, (fmb << 20, fmb << 20))
    R.setrlimit(R.RLIMIT_CORE, (0, 0))
    if nproc:
        uid = os.getuid()
        mine = 0
        for p in os.listdir("/proc"):
            try:
                mine += p.isdigit() and os.stat("/proc/" + p).st_uid == uid
            except OSError:
                pass
        R.setrlimit(R.RLIMIT_NPROC, (mine + nproc, mine + nproc))
    if not abi and os.geteuid() != 0:
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    def ok(r, what):
        if r < 0:
            _fail("%s: %s" % (what, os.strerror(ctypes.get_errno())))
        return r
    u64 = ctypes.c_uint64
    ok(libc.prctl(38, 1, 0, 0, 0), "no_new_privs")
    if abi:
        fs = 2 | 16 | 32 | 64 | 128 | 256 | 512 | 1024 | 2048 | 4096  # write, remove, make anything
        fs |= (8192 if abi >= 2 else 0) | (16384 if abi >= 3 else 0)  # refer (rename), truncate
        class Ruleset(ctypes.Structure):
            _fields_ = [("fs", u64), ("net", u64), ("scoped", u64)]
        class Beneath(ctypes.Structure):
            _pack_ = 1
            _fields_ = [("allowed", u64), ("fd", ctypes.c_int32)]
        attr = Ruleset(fs, 3 if abi >= 4 else 0, 3 if abi >= 6 else 0)  # net: TCP bind+connect; scoped: signals, unix
        size = 24 if abi >= 6 else 16 if abi >= 4 else 8
        rs = ok(libc.syscall(444, ctypes.byref(attr), size, 0), "landlock_create_ruleset")
        for path, allowed in ((work, fs), ("/dev/null", 2 | (16384 if abi >= 3 else 0))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            ok(libc.syscall(445, rs, 1, ctypes.byref(Beneath(allowed, fd)), 0), "landlock_add_rule " + path)
            os.close(fd)
        ok(libc.syscall(446, rs, 0), "landlock_restrict_self")
        os.close(rs)
    if os.geteuid() == 0:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
        for cap in range(last + 1):
            ok(libc.prctl(24, cap, 0, 0, 0), "drop capability %d" % cap)
        libc.prctl(47, 4, 0, 0, 0)  # clear ambient capabilities
        class Head(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        data = (ctypes.c_uint32 * 6)()
        ok(libc.capset(ctypes.byref(Head(0x20080522, 0)), data), "capset")
try:
    _setup()
except Exception as exc:
    _fail(repr(exc))
del _setup, _fail, R
if os.getpid() == 1:  # the PID namespace's init: run the code in a child, reap, pass its status on
    _child = os.fork()
    if _child:
        while True:
            _pid, _status = os.wait()
            if _pid == _child:
                os._exit(os.waitstatus_to_exitcode(_status) % 256 if os.WIFEXITED(_status) else 128 + os.WTERMSIG(_status))
def _run(path):
    import builtins, types
    with open(path, encoding="utf-8") as f:
        src = f.read()
    mod = types.ModuleType("__main__")
    mod.__file__, mod.__builtins__ = "answer.py", builtins
    sys.modules["__main__"], sys.argv = mod, ["answer.py"]
    try:
        exec(compile(src, "answer.py", "exec"), mod.__dict__)
        if ">>>" in src:
            import doctest
            res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
            sys.stdout.flush()
            sys.stderr.write("\n[evolinstruct-doctest] attempted=%d failed=%d\n" % (res.attempted, res.failed))
            if res.failed:
                sys.exit(1)
    except SystemExit:
        raise
    except BaseException:  # printed with the answer's lines (the C printer would look for answer.py on disk)
        import linecache, traceback
        linecache.cache["answer.py"] = (len(src), None, src.splitlines(True), "answer.py")
        traceback.print_exc()
        sys.exit(1)
_run(sys.argv[6])
"""


@dataclass(frozen=True, slots=True)
class Isolation:
    """What this machine's sandbox can do (probed once per process)."""

    prefix: tuple[str, ...]  # the namespace wrapper (unshare ...), empty when none works
    network: str  # netns | landlock-tcp | none
    filesystem: str  # landlock | none
    landlock_abi: int
    nproc: bool  # set RLIMIT_NPROC (not root)


@dataclass(frozen=True, slots=True)
class SandboxResult:
    outcome: str  # ok | crash | timeout | blocked | error
    returncode: int | None  # None after a wall-time kill
    stdout: str  # its head, KEEP_CHARS at most
    stderr: str  # its tail, KEEP_CHARS at most
    seconds: float
    isolation: str  # network: netns | landlock-tcp | none
    filesystem: str = "none"  # writes outside the directory: landlock (denied) | none
    blocked: str | None = None  # what it stopped on: network, filesystem, module:NAME, stdin
    error: str | None = None  # the last line of a crash, the limit of a timeout
    doctests: dict[str, int] = field(default_factory=dict)  # attempted, failed (when the code has any)

    def evidence(self) -> dict[str, Any]:
        """What a record keeps: the same for the same code on every run (no timing, no temp paths)."""
        out: dict[str, Any] = {"outcome": self.outcome, "returncode": self.returncode}
        for key in ("blocked", "error"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.doctests:
            out["doctests"] = dict(self.doctests)
        out["stdout"], out["stderr"] = self.stdout, self.stderr
        out["isolation"], out["filesystem"] = self.isolation, self.filesystem
        return out


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or this is not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    except (OSError, AttributeError):
        return 0
    return max(abi, 0)


NAMESPACES = (
    ("unshare", "--net", "--pid", "--fork", "--kill-child"),  # root
    ("unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"),  # unprivileged userns
)


def _bootstrap_runs(prefix: tuple[str, ...], abi: int, nproc: bool) -> bool:
    """Whether the bootstrap gets its limits and restrictions in place here (a container's seccomp filter may
    refuse what the kernel has)."""
    with tempfile.TemporaryDirectory(prefix="evolinstruct-sandbox-") as top:
        (Path(top) / "work").mkdir()
        (Path(top) / "answer.py").write_text("pass\n", encoding="utf-8")
        argv = [*prefix, sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(MEMORY_MB), str(CPU_SECONDS),
                str(FILE_MB), str(abi), "64" if nproc else "0", f"{top}/answer.py", f"{top}/work"]
        try:
            return subprocess.run(argv, cwd=f"{top}/work", capture_output=True, timeout=30,
                                  stdin=subprocess.DEVNULL).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False


@lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Probe once: which namespace wrapper works here, whether Landlock is there, and that the bootstrap
    runs with them (each is given up, in that order, if it does not)."""
    nproc = getattr(os, "getuid", lambda: 0)() != 0
    abi = landlock_abi()
    prefix: tuple[str, ...] = ()
    if sys.platform.startswith("linux") and shutil.which("unshare"):
        prefix = next((c for c in NAMESPACES if _bootstrap_runs(c, abi, nproc) or _bootstrap_runs(c, 0, nproc)), ())
    if abi and not _bootstrap_runs(prefix, abi, nproc):
        abi = 0
    network = "netns" if prefix else ("landlock-tcp" if abi >= 4 else "none")
    return Isolation(prefix, network, "landlock" if abi else "none", abi, nproc=nproc)


_NETWORK = re.compile(
    r"Network is unreachable|Cannot assign requested address|Temporary failure in name resolution|"
    r"Name or service not known|No address associated|gaierror|\[Errno (?:101|99|-2|-3|-5)\]"
)
_BOOT_FRAME = re.compile(r'^  File "<string>", line \d+, in (?:<module>|_run)$')  # the bootstrap's own frames
_MISSING = re.compile(r"^ModuleNotFoundError: No module named '([\w.]+)'")
_DENIED = re.compile(r"^PermissionError: \[Errno 13\] Permission denied: '([^']*)'")


def _last_error(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith(DOCTEST_MARK)]
    return lines[-1].strip()[:300] if lines else ""


def _blocked(stderr: str, last: str, work: str, iso: Isolation) -> str | None:
    """What the code stopped on that the sandbox withholds (None: an ordinary crash)."""
    if m := _MISSING.match(last):
        top = m.group(1).split(".")[0]
        if top not in getattr(sys, "stdlib_module_names", ()):
            return f"module:{top}"
        return None
    if last.startswith("EOFError: EOF when reading a line"):
        return "stdin"  # input(): the sandbox gives no input
    if iso.network != "none" and _NETWORK.search(last):
        return "network"
    if iso.landlock_abi >= 4 and last == "PermissionError: [Errno 13] Permission denied":
        return "network"  # Landlock denied a TCP connect or bind (a denied file would be named)
    if iso.filesystem == "landlock" and (m := _DENIED.match(last)):
        path = m.group(1)  # the sandbox's own directory is shown as <sandbox>
        if (os.path.isabs(path) or path.startswith("<sandbox>")) and not path.startswith(f"{work}/"):
            return "filesystem"
    return None


def _head(path: Path, chars: int) -> str:
    with open(path, "rb") as f:
        return f.read(chars * 4).decode("utf-8", "replace")[:chars]


def _tail(path: Path, chars: int) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - chars * 4))
        return f.read().decode("utf-8", "replace")[-chars:]


def _ended_within(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the process to end, at most `timeout` seconds. A pidfd wakes at once when it ends (Popen's
    own wait with a timeout polls, adding up to 50 ms to every run)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(
    code: str,
    timeout: float = TIMEOUT,
    memory_mb: int = MEMORY_MB,
    cpu_seconds: int = CPU_SECONDS,
    file_mb: int = FILE_MB,
    keep_chars: int = KEEP_CHARS,
) -> SandboxResult:
    """Run `code` (a Python module's source) in the sandbox and say how it ended. Blocking."""
    iso = isolation()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="evolinstruct-sandbox-") as top_dir:
        top = Path(top_dir)
        work = top / "work"
        work.mkdir()
        answer = top / "answer.py"
        answer.write_text(code, encoding="utf-8")
        argv = [*iso.prefix, sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(memory_mb), str(cpu_seconds),
                str(file_mb), str(iso.landlock_abi), "64" if iso.nproc else "0", str(answer), str(work)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work),
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        timed_out = False
        with open(top / "stdout", "wb") as out, open(top / "stderr", "wb") as err:
            proc = subprocess.Popen(argv, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True, close_fds=True)
            if _ended_within(proc, timeout):
                returncode: int | None = proc.wait()
            else:
                timed_out, returncode = True, None
                _kill_group(proc.pid)
                proc.wait()
            _kill_group(proc.pid)  # anything it left behind (without a PID namespace)
        seconds = time.perf_counter() - started
        stdout = _head(top / "stdout", keep_chars).replace(top_dir, "<sandbox>")
        stderr_full = _tail(top / "stderr", max(keep_chars, 4000)).replace(top_dir, "<sandbox>")
    doctests: dict[str, int] = {}
    for line in stderr_full.splitlines():
        if line.startswith(DOCTEST_MARK):
            doctests = {k: int(v) for k, v in (kv.split("=") for kv in line[len(DOCTEST_MARK):].split())}
    stderr = "\n".join(ln for ln in stderr_full.splitlines()
                       if not ln.startswith(DOCTEST_MARK) and not _BOOT_FRAME.match(ln)).rstrip()
    stderr = stderr[-keep_chars:]
    last = _last_error(stderr)
    common: dict[str, Any] = dict(returncode=returncode, stdout=stdout, stderr=stderr, seconds=round(seconds, 4),
                                  isolation=iso.network, filesystem=iso.filesystem, doctests=doctests)
    if timed_out:
        return SandboxResult("timeout", error=f"wall time over {timeout:g} s", **common)
    # Killed by a signal: a negative status, or 128 + the signal passed on by the PID namespace's init.
    sig = -returncode if returncode is not None and returncode < 0 else (
        returncode - 128 if iso.prefix and returncode is not None and 128 < returncode < 128 + 65 else 0)
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and seconds >= cpu_seconds):
        return SandboxResult("timeout", error=f"CPU time over {cpu_seconds} s", **common)
    if returncode == 0:
        return SandboxResult("ok", **common)
    if returncode == SETUP_FAILED and "evolinstruct-sandbox: setup failed" in stderr:
        return SandboxResult("error", error=last, **common)
    if doctests.get("failed"):
        return SandboxResult("crash", error=f"{doctests['failed']} of {doctests.get('attempted', 0)} doctests failed",
                             **common)
    blocked = _blocked(stderr, last, "<sandbox>/work", iso)
    if blocked:
        return SandboxResult("blocked", blocked=blocked, error=last, **common)
    if sig and not last:
        last = f"killed by {signal.Signals(sig).name}" if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    return SandboxResult("crash", error=last or f"exit status {returncode}", **common)
