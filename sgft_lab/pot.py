"""Program-of-thought execution in a sandbox (FDD, methods.md section 4.2 "Execution" and "PoT format").

A PoT rationale is a Python program that leaves its answer in the variable ``ans``. ``run_program``
runs one in a fresh child process (``sys.executable -I -S sgft_lab/pot_runner.py``, cwd = a fresh
temporary directory) and returns a ``PotResult``; every failure of the program (error, timeout,
memory, refused action, crash of the child) is a result with a short reason, never an exception.

Layers, outermost first (the child reports which ones the machine allowed; see ``sandbox_layers``):

- Parent: the child's whole process group is SIGKILLed ``timeout_s`` + ``KILL_SLACK_S`` after the
  child reports that the program starts (its start-up, under ``STARTUP_LIMIT_S``, is not charged to
  the program, so a loaded machine does not cause spurious timeouts); stdout is read through a cap
  (a flood is killed: 'output limit'); the temporary directory is removed afterwards.
- rlimits: CPU seconds (SIGXCPU, then SIGKILL), address space (``memory_mb``), file size
  (``FSIZE_MB``), 64 open files, no core dumps, NPROC=0 (no fork, no threads).
- As root: a fresh network namespace, then uid/gid 65534 (nobody), so NPROC applies, the limits
  cannot be raised, and other users' files and processes are out of reach.
- SIGKILL when the caller dies (PR_SET_PDEATHSIG).
- Landlock (Linux >= 5.13): reads only in the work dir and the stdlib dir, writes only in the work
  dir, no TCP bind/connect (ABI >= 4), no signals to processes outside the sandbox (ABI >= 6).
- seccomp (x86_64, aarch64): fork/clone/exec, socket, ptrace, kill, rlimit changes, namespaces,
  mounts, bpf, io_uring and similar syscalls fail with EPERM.
- Python guards: the source is refused before it runs if it names a dunder attribute (except
  ``__init__``, ``__name__``, ``__doc__``), a frame/code attribute (``gi_frame``, ``f_globals``, ...)
  or a dunder name (``__builtins__``, ``__import__``); ``import`` only accepts ``ALLOWED_MODULES``
  (others: 'forbidden import: NAME') and hands out proxies holding their public, non-module names;
  no eval/exec/compile/globals/vars/input; getattr & co. refuse names starting with '_'; open()
  only inside the work dir; print output is captured (first ``OUTPUT_CHARS`` characters);
  recursion limit ``RECURSION_LIMIT``; a SIGALRM timer of ``timeout_s``.

What it guarantees, on Linux, even after a program escapes the Python guards (which are bypassable
on their own and are only the first layer): it cannot run longer than ``timeout_s`` +
``KILL_SLACK_S`` (process-group SIGKILL, RLIMIT_CPU), use more than ``memory_mb`` of address
space, write more than ``FSIZE_MB`` to one file, or outlive the caller. It cannot start processes
or threads where seccomp or the privilege drop is in force (or the caller is not root: NPROC=0),
open network connections where seccomp, the network namespace or Landlock ABI >= 4 is in force,
or touch files outside its work dir where Landlock is in force. ``sandbox_layers()`` says which of
these this machine has (the development machine: all of them). The caller never crashes.

What it does not guarantee: it is defence in depth for model-written code, not a security boundary
against a determined attacker (kernel exploits, side channels, CPU and memory pressure on the host
within the limits). A program that escapes the Python guards can forge its own JSON result. Without
seccomp, Landlock and root (another OS, an old kernel, a locked-down container) only the rlimits,
the process-group kill and the Python guards remain.

Answer normalisation (our choice): ``int`` stays ``int``, ``float`` stays ``float``, ``Fraction`` ->
``int`` when whole else ``float``, ``Decimal`` -> ``float``. ``bool`` is NOT numeric (``ans = True``
is not a number answer), nor are strings like ``"42"``, complex numbers or subclasses: ok False,
'non-numeric ans', with the repr in ``answer`` for debugging. NaN/inf -> 'non-finite ans'.
methods.md: a non-numeric ``ans`` or any error counts as wrong.

CLI: ``python -m sgft_lab.pot FILE.py [--timeout S] [--memory-mb M] [--answer-var ans] [--extract]``
prints the program's captured output, then as its last line {"ok": ..., "answer": ..., "error": ...}.
Exit code 0 whenever the program ran (even if it failed), 2 for usage errors.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sgft_lab.pot_runner import ALLOWED_MODULES  # noqa: F401 - re-exported; the child's list

RUNNER = Path(__file__).with_name("pot_runner.py")
STARTUP_LIMIT_S = 20.0  # interpreter start-up + pre-imports (~40 ms on an idle machine)
KILL_SLACK_S = 0.5  # after timeout_s the program's own timer fires; after this much more, SIGKILL
STDOUT_CAP = 1 << 20  # bytes read from the child's stdout (normally one JSON line)
STDERR_CAP = 1 << 16
OUTPUT_CHARS = 4000  # program print output kept for debugging
FSIZE_MB = 16
RECURSION_LIMIT = 1000


@dataclass
class PotResult:
    """Outcome of one program: ``ok`` means a finite numeric ``answer``; otherwise ``error`` says why."""

    ok: bool
    answer: float | int | str | None
    error: str | None
    output: str = ""  # the program's printed output (capped), for debugging


def run_program(
    code: str,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    answer_var: str = "ans",
    *,
    python_guards: bool = True,
) -> PotResult:
    """Run one PoT program in the sandbox and read ``answer_var``.

    ``python_guards=False`` drops only the Python-level layer (real builtins and imports) and exists
    to test that the OS layers alone contain an escaped program; never use it for model output.
    """
    if not isinstance(code, str):
        raise TypeError(f"code must be str, got {type(code).__name__}")
    if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number, got {timeout_s!r}")
    if not (isinstance(memory_mb, int) and memory_mb >= 64):
        raise ValueError(f"memory_mb must be an int >= 64, got {memory_mb!r}")
    if not answer_var.isidentifier():
        raise ValueError(f"answer_var must be an identifier, got {answer_var!r}")
    try:
        return _execute(code, float(timeout_s), memory_mb, answer_var, python_guards)[0]
    except Exception as e:  # noqa: BLE001 - the caller must never crash because of a program
        return PotResult(False, None, f"sandbox failure: {type(e).__name__}: {e}")


def run_many(
    codes: Iterable[str],
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    answer_var: str = "ans",
    max_workers: int = 2,
) -> list[PotResult]:
    """``run_program`` over many programs, at most ``max_workers`` children at a time, in input order."""
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    codes = list(codes)
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(lambda c: run_program(c, timeout_s, memory_mb, answer_var), codes))


@lru_cache(maxsize=1)
def sandbox_layers() -> tuple[str, ...]:
    """The layers the child could install on this machine (e.g. 'seccomp', 'landlock', 'drop_privs')."""
    try:
        return tuple(_execute("ans = 1", 5.0, 512, "ans", True)[1])
    except Exception:  # noqa: BLE001 - a diagnostic: no layers known
        return ()


# ---------------------------------------------------------------- extraction

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = {"", "python", "py", "python3"}


def extract_program(completion: str, answer_var: str = "ans") -> str:
    """Pull the Python program out of a teacher/student completion.

    Fenced blocks (```python, ```py or untagged; an unclosed fence runs to the end, as in a truncated
    generation): the LAST block that assigns ``answer_var`` at the start of a line, else the first
    block. No fence: the whole completion is the program. Our choice: a PAL-style program that
    defines ``solution()`` without assigning ``answer_var`` at top level gets
    ``ans = solution()`` appended.
    """
    blocks = [body for lang, body in _FENCE.findall(completion) if lang.lower() in _CODE_LANGS]
    if blocks:
        assigns = re.compile(rf"^[ \t]*{re.escape(answer_var)}[ \t]*=(?!=)", re.MULTILINE)
        assigning = [b for b in blocks if assigns.search(b)]
        code = assigning[-1] if assigning else blocks[0]
    else:
        code = completion
    code = textwrap.dedent(code).strip("\n")
    return _call_solution(code, answer_var) + "\n"


def _call_solution(code: str, answer_var: str) -> str:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    top_names = set()
    solution_ok = False
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        top_names |= {t.id for t in targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.FunctionDef) and node.name == "solution":
            a = node.args
            solution_ok = not a.posonlyargs and len(a.args) == len(a.defaults) and all(
                d is not None for d in a.kw_defaults)
    if answer_var not in top_names and solution_ok:
        return f"{code}\n{answer_var} = solution()"
    return code


# ---------------------------------------------------------------- straight-line arithmetic, in process

_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}
_STRAIGHT_MAX_STATEMENTS = 64
_STRAIGHT_MAX_MAGNITUDE = 10**15  # any larger value: the sandbox decides (no huge-int blow-up in process)


class _NotStraight(Exception):
    pass


def straight_line(code: str, answer_var: str = "ans") -> PotResult | None:
    """The result of a program that is only assignments of arithmetic over number literals and names, or None.

    Such a program (the shape nearly every PoT rationale of a word problem has: ``x = 3``, ``x = x + 4``,
    ``ans = x``) can do nothing but arithmetic, so it is evaluated here by walking its syntax tree, with
    Python's own operators (+ - * / // %, unary -/+) on exact ``int``/``float`` values: the same answer the
    sandbox computes, without starting a child process (~30 ms each; an FDD round executes hundreds).
    Anything else -- a call, an attribute, a loop, a bool or string, ``**``, more than
    ``_STRAIGHT_MAX_STATEMENTS`` statements, a value beyond ``_STRAIGHT_MAX_MAGNITUDE``, an error (unknown
    name, division by zero), a non-finite or missing ``answer_var`` -- returns None: the sandbox runs it and
    reports its own error text.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    if len(tree.body) > _STRAIGHT_MAX_STATEMENTS:
        return None
    env: dict[str, int | float] = {}

    def value(node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            v = node.value
        elif isinstance(node, ast.Name) and node.id in env:  # (names with "_" first never get in: the sandbox's)
            v = env[node.id]
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = value(node.operand)
            v = -v if isinstance(node.op, ast.USub) else +v
        elif isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            v = _OPS[type(node.op)](value(node.left), value(node.right))
        else:
            raise _NotStraight
        if type(v) not in (int, float) or not math.isfinite(v) or abs(v) > _STRAIGHT_MAX_MAGNITUDE:
            raise _NotStraight
        return v

    try:
        for stmt in tree.body:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 else \
                stmt.target if isinstance(stmt, ast.AugAssign) else None
            if not isinstance(target, ast.Name) or target.id.startswith("_"):  # _x, __x: the sandbox's guards
                raise _NotStraight
            if isinstance(stmt, ast.Assign):
                env[target.id] = value(stmt.value)
            elif type(stmt.op) in _OPS:
                env[target.id] = value(ast.BinOp(target, stmt.op, stmt.value))
            else:
                raise _NotStraight
    except (_NotStraight, ArithmeticError):
        return None
    return PotResult(True, env[answer_var], None) if answer_var in env else None


# ---------------------------------------------------------------- programs of a run

class Programs:
    """Sandboxed execution of PoT completions, each distinct program run once per process (FDD's rounds
    execute the same teacher and student programs again and again); straight-line arithmetic is evaluated in
    process (:func:`straight_line`), everything else in the sandbox."""

    def __init__(self, timeout_s: float = 5.0, memory_mb: int = 512, workers: int = 2):
        self.timeout_s, self.memory_mb, self.workers = timeout_s, memory_mb, workers
        self.results: dict[str, PotResult] = {}

    def run(self, completions: Iterable[str]) -> list[tuple[str, PotResult]]:
        """(program, result) per completion: the program is pulled out of the text, then executed."""
        programs = [extract_program(c.strip()) for c in completions]
        todo = []
        for p in dict.fromkeys(p for p in programs if p not in self.results):
            if (res := straight_line(p)) is not None:
                self.results[p] = res
            else:
                todo.append(p)
        for p, res in zip(todo, run_many(todo, timeout_s=self.timeout_s, memory_mb=self.memory_mb,
                                         max_workers=self.workers)):
            self.results[p] = res
        return [(p, self.results[p]) for p in programs]

    def score(self, examples, completions, split: str = "test") -> list[dict]:
        """Prediction rows like ``evaluation.score_rows``, scored ``fdd_numeric``: the program is executed and
        its ``ans`` compared with the gold number within 1e-4 (methods.md 4.3)."""
        from .answers import fdd_numeric

        rows = []
        for ex, c, (_, res) in zip(examples, completions, self.run(completions)):
            ok = res.ok and fdd_numeric(res.answer, ex.answer)
            rows.append({"id": ex.id, "split": split, "question": ex.question, "completion": c,
                         "extracted": None if res.answer is None else str(res.answer), "answer": ex.answer,
                         "correct": ok, "contains_answer": ok, "correct_format": res.ok, "error": res.error})
        return rows


# ---------------------------------------------------------------- parent side


def _execute(code: str, timeout_s: float, memory_mb: int, answer_var: str,
             python_guards: bool) -> tuple[PotResult, list[str]]:
    cpu_s = math.ceil(timeout_s + 2 * KILL_SLACK_S)  # start-up CPU is small; wall kill usually first
    cfg = {
        "timeout_s": timeout_s, "cpu_s": cpu_s, "memory_mb": memory_mb, "fsize_mb": FSIZE_MB,
        "answer_var": answer_var, "python_guards": python_guards, "output_chars": OUTPUT_CHARS,
        "recursion_limit": RECURSION_LIMIT, "parent_pid": os.getpid(),
    }
    with tempfile.TemporaryDirectory(prefix="sgft_pot_", ignore_cleanup_errors=True) as workdir:
        Path(workdir, "prog.py").write_bytes(code.encode("utf-8", "replace"))
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(RUNNER), json.dumps(cfg)],
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={"PATH": os.defpath, "LC_ALL": "C.UTF-8"}, start_new_session=True, close_fds=True,
        )
        try:
            out, err, why = _collect(proc, timeout_s)
        finally:
            for f in (proc.stdout, proc.stderr):
                f.close()
            # The child leads its own process group and is not reaped yet, so its pgid cannot
            # have been reused: killing the group here is safe and ends any straggler.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    return _interpret(out, err, why, proc.returncode, usage.ru_utime + usage.ru_stime, cpu_s)


def _collect(proc: subprocess.Popen, timeout_s: float) -> tuple[bytes, bytes, str | None]:
    """Read stdout/stderr until both close; stop at the deadline or when stdout passes its cap.

    The child's first stdout line ("ready") marks the start of the program: the deadline is then
    reset to ``timeout_s + KILL_SLACK_S`` from that moment.
    """
    out_fd = proc.stdout.fileno()
    bufs = {out_fd: bytearray(), proc.stderr.fileno(): bytearray()}
    caps = {out_fd: STDOUT_CAP, proc.stderr.fileno(): STDERR_CAP}
    deadline, started = time.monotonic() + STARTUP_LIMIT_S, False
    why = None
    with selectors.DefaultSelector() as sel:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map() and why is None:
            left = deadline - time.monotonic()
            if left <= 0:
                why = "timeout" if started else "startup timeout"
                break
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                if len(buf) + len(chunk) > caps[key.fd] and key.fd == out_fd:
                    why = "output limit"
                    break
                buf += chunk[: max(0, caps[key.fd] - len(buf))]
                if not started and key.fd == out_fd and b"\n" in buf:
                    started, deadline = True, time.monotonic() + timeout_s + KILL_SLACK_S
    return bytes(bufs[out_fd]), bytes(bufs[proc.stderr.fileno()]), why


def _interpret(out: bytes, err: bytes, why: str | None, returncode: int, cpu_used: float,
               cpu_limit: int) -> tuple[PotResult, list[str]]:
    if why is not None:  # the parent killed the child: its stdout is not trusted
        return PotResult(False, None, why), []
    parsed = _parse_result(out)
    if parsed is not None:
        return parsed
    if returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= cpu_limit - 0.05):
            return PotResult(False, None, "timeout"), []
        if sig == signal.SIGXFSZ:
            return PotResult(False, None, "file size limit"), []
        return PotResult(False, None, f"crashed: signal {sig}"), []
    tail = err.decode("utf-8", "replace").strip().splitlines()
    detail = f" ({tail[-1][:200]})" if tail else ""
    return PotResult(False, None, f"crashed: exit code {returncode}{detail}"), []


def _parse_result(out: bytes) -> tuple[PotResult, list[str]] | None:
    """The child's last stdout line as a validated result, or None if it is not one."""
    lines = out.decode("utf-8", "replace").strip().splitlines()
    if not lines:
        return None
    try:
        d = json.loads(lines[-1])
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    ok, answer, error = d.get("ok"), d.get("answer"), d.get("error")
    output, layers = d.get("output", ""), d.get("layers", [])
    numeric = isinstance(answer, (int, float)) and not isinstance(answer, bool)
    if not (isinstance(ok, bool) and (answer is None or numeric or isinstance(answer, str))
            and (error is None or isinstance(error, str)) and isinstance(output, str)
            and isinstance(layers, list) and (not ok or (numeric and error is None))):
        return None
    if ok and not math.isfinite(answer):
        return None
    if isinstance(answer, str):
        answer = answer[:200]
    return PotResult(ok, answer, error[:300] if error else error, output[: 2 * OUTPUT_CHARS]), [
        str(x) for x in layers]


# ---------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sgft_lab.pot",
        description="Run one program-of-thought program in the sandbox; the last line printed is "
        'the JSON {"ok", "answer", "error"}.')
    parser.add_argument("file", help="the Python program (or a completion, with --extract)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    parser.add_argument("--memory-mb", type=int, default=512, help="address-space limit (default 512)")
    parser.add_argument("--answer-var", default="ans", help="variable holding the answer (default ans)")
    parser.add_argument("--extract", action="store_true",
                        help="first pull the program out of a completion (fenced code blocks)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.timeout) and args.timeout > 0):
        parser.error(f"--timeout must be a positive number, got {args.timeout}")
    if args.memory_mb < 64:
        parser.error(f"--memory-mb must be >= 64, got {args.memory_mb}")
    if not args.answer_var.isidentifier():
        parser.error(f"--answer-var must be an identifier, got {args.answer_var!r}")
    try:
        code = Path(args.file).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        parser.error(f"cannot read {args.file}: {e.strerror or e}")
    if args.extract:
        code = extract_program(code, args.answer_var)
    res = run_program(code, args.timeout, args.memory_mb, args.answer_var)
    if res.output:
        sys.stdout.write(res.output if res.output.endswith("\n") else res.output + "\n")
    print(json.dumps({"ok": res.ok, "answer": res.answer, "error": res.error}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
