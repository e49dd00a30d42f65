"""The program-of-thought sandbox (sgft_lab.pot): benign programs give their answer, every hostile
program of tests/pot_corpus is contained, with the Python guards on and (where this machine has the
OS layers that enforce it) with them off, as after an escape; the caller never crashes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from sgft_lab import pot
from sgft_lab.pot import PotResult, extract_program, run_many, run_program

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "pot_corpus"
TIMEOUT = 0.5  # for hostile programs expected to time out; the parent kills at TIMEOUT + KILL_SLACK_S
# Generous upper bound on how long a call may take: it shows the kill works (an uncontained program
# would run for minutes or forever), it is not a speed requirement.
MARGIN_S = 30.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox targets Linux")


def headers(path: Path) -> dict[str, str]:
    """The `# key: value` comment lines at the top of a corpus file."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].strip().partition(":")
        if sep and key in {"answer", "guarded", "os-only", "os-needs"}:
            out[key] = value.strip()
    return out


def matches(expected: str, error: str) -> bool:
    return any(alt in error for alt in expected.split("|"))


BENIGN = sorted(p for p in CORPUS.glob("*.py") if "answer" in headers(p))
HOSTILE = sorted(p for p in CORPUS.glob("*.py") if "guarded" in headers(p))


@pytest.fixture(scope="module")
def layers() -> set[str]:
    return set(pot.sandbox_layers())


def enforced(token: str, layers: set[str]) -> bool:
    """Whether this machine's sandbox has an OS layer that enforces ``token`` without the Python guards."""
    nonroot = os.geteuid() != 0  # RLIMIT_NPROC=0 binds non-root users; root only after drop_privs
    return {
        "noproc": "seccomp" in layers or "drop_privs" in layers or nonroot,
        "nonet": bool({"seccomp", "netns", "landlock_net"} & layers),
        "nofs": "landlock" in layers,
        "nokill": bool({"seccomp", "drop_privs", "landlock_scope"} & layers),
        "fixedlimits": "seccomp" in layers or "drop_privs" in layers or nonroot,
    }[token]


@dataclass
class Traps:
    listener: socket.socket
    outside: Path
    repo_probe: Path

    def fill(self, code: str) -> str:
        port = str(self.listener.getsockname()[1])
        return (code.replace("@@PORT@@", port).replace("@@OUTSIDE@@", str(self.outside))
                .replace("@@REPO@@", str(self.repo_probe)))

    def assert_untouched(self) -> None:
        assert not self.outside.exists(), f"{self.outside} was created"
        assert not self.repo_probe.exists(), f"{self.repo_probe} was created"
        with pytest.raises(BlockingIOError):
            conn, _ = self.listener.accept()
            conn.close()


@pytest.fixture
def traps():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    t = Traps(listener, Path(tempfile.gettempdir()) / f"sgft_pot_outside_{uuid.uuid4().hex}",
              REPO / f".sgft_pot_probe_{uuid.uuid4().hex}")
    yield t
    listener.close()
    for p in (t.outside, t.repo_probe):
        p.unlink(missing_ok=True)


def run_timed(code: str, timeout_s: float = TIMEOUT, **kw) -> PotResult:
    t0 = time.monotonic()
    res = run_program(code, timeout_s=timeout_s, **kw)
    assert time.monotonic() - t0 < timeout_s + pot.KILL_SLACK_S + MARGIN_S
    return res


def timeout_for(expected: str) -> float:
    """Short where a timeout is expected or any failure will do; elsewhere a loaded machine must not
    turn the expected failure into a timeout."""
    return TIMEOUT if "timeout" in expected or expected == "any" else 5.0


# ---------------------------------------------------------------- the corpus


@pytest.mark.parametrize("path", BENIGN, ids=lambda p: p.stem)
def test_benign_program_gives_its_answer(path):
    expected = json.loads(headers(path)["answer"])
    res = run_program(path.read_text(encoding="utf-8"))
    assert res.ok, res
    assert res.error is None
    assert res.answer == expected and type(res.answer) is type(expected)


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.stem)
def test_hostile_program_is_contained_by_the_python_guards(path, traps):
    expected = headers(path)["guarded"]
    res = run_timed(traps.fill(path.read_text(encoding="utf-8")), timeout_for(expected))
    assert not res.ok, res
    assert matches(expected, res.error)
    assert len(res.output) <= 2 * pot.OUTPUT_CHARS
    traps.assert_untouched()


@pytest.mark.parametrize("path", HOSTILE, ids=lambda p: p.stem)
def test_hostile_program_is_contained_by_the_os_layers_alone(path, traps, layers):
    """With the Python guards off, as if the program had escaped them."""
    h = headers(path)
    missing = [t for t in h.get("os-needs", "").split() if not enforced(t, layers)]
    if missing:
        pytest.skip(f"no OS layer enforcing {missing} here (layers: {sorted(layers)})")
    code = traps.fill(path.read_text(encoding="utf-8"))
    res = run_timed(code, timeout_for(h["os-only"]), python_guards=False)
    assert not res.ok, res
    if h["os-only"] != "any":
        assert matches(h["os-only"], res.error)
    traps.assert_untouched()


def test_corpus_covers_the_issue_list():
    names = {p.stem for p in HOSTILE}
    for needed in ("infinite_loop", "busy_c_loop", "huge_bytearray", "list_growing", "fork_os",
                   "fork_builtins_dict", "subprocess_run", "socket_connect", "write_outside_tmp",
                   "write_repo_dir", "import_importlib", "ctypes_fork", "recursion_bomb",
                   "recursion_setlimit", "subclasses_escape", "stdout_flood", "stdout_flood_raw",
                   "read_passwd", "os_exit", "signal_tricks", "threads"):
        assert needed in names
    assert len(BENIGN) >= 4


def test_no_process_outlives_a_fork_attempt(monkeypatch, tmp_path):
    """A fork that got through would leave a sleeping child whose command line names the work dir."""
    marker = tmp_path / f"pot_{uuid.uuid4().hex}"
    marker.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(marker))
    res = run_timed((CORPUS / "fork_os.py").read_text(encoding="utf-8"), python_guards=False)
    assert not res.ok
    leftovers = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if str(marker).encode() in cmdline:
            leftovers.append(proc.name)
    assert leftovers == []


def test_scratch_files_work_when_the_temp_dir_is_deep(monkeypatch, tmp_path):
    """After the privilege drop the work dir's ancestors may be closed to the program: paths still work."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    res = run_program((CORPUS / "benign_scratch_file.py").read_text(encoding="utf-8"), timeout_s=5)
    assert (res.ok, res.answer) == (True, 6), res


# ---------------------------------------------------------------- imports and results


@pytest.mark.parametrize("stmt, name", [
    ("import os", "os"), ("import sys", "sys"), ("import subprocess", "subprocess"),
    ("import ctypes", "ctypes"), ("import importlib", "importlib"), ("import socket", "socket"),
    ("import shutil", "shutil"), ("import pathlib", "pathlib"), ("import io", "io"),
    ("import threading", "threading"), ("import multiprocessing", "multiprocessing"),
    ("import time", "time"), ("import builtins", "builtins"), ("import numpy as np", "numpy"),
    ("import os.path", "os"),
    ("from os import path", "os"), ("from . import x", "relative import"),
])
def test_imports_outside_the_allow_list_are_refused(stmt, name):
    res = run_program(f"{stmt}\nans = 1", timeout_s=5)
    assert (res.ok, res.error) == (False, f"forbidden import: {name}")


def test_allowed_imports_and_import_fallbacks_work():
    code = ("import collections.abc\nfrom collections.abc import Iterable\nimport math as m\n"
            "from math import *\ntry:\n    import numpy as np\nexcept ImportError:\n    np = None\n"
            "ans = (np is None) + isinstance([], Iterable) + isinstance([], collections.abc.Sized)"
            " + floor(m.pi)")
    assert run_program(code, timeout_s=5) == PotResult(True, 6, None, "")


@pytest.mark.parametrize("code, ok, answer, error", [
    ("x = 1", False, None, "no variable ans"),
    ("ans = '42 apples'", False, "'42 apples'", "non-numeric ans"),
    ("ans = True", False, "True", "non-numeric ans"),
    ("ans = [1]", False, "[1]", "non-numeric ans"),
    ("ans = 1j", False, "1j", "non-numeric ans"),
    ("ans = float('inf')", False, "inf", "non-finite ans"),
    ("ans = 10 ** 400", False, None, "non-finite ans"),
    ("ans = 1 / 0", False, None, "ZeroDivisionError: division by zero"),
    ("ans = (", False, None, "SyntaxError: '(' was never closed (line 1)"),
    ("ans = 1\x00", False, None, "SyntaxError: source code string cannot contain null bytes"),
    ("ans = 7", True, 7, None),
    ("ans = 2.5", True, 2.5, None),
    ("from fractions import Fraction\nans = Fraction(3, 2)", True, 1.5, None),
    ("from fractions import Fraction\nans = Fraction(6, 3)", True, 2, None),
    ("from decimal import Decimal\nans = Decimal('0.25')", True, 0.25, None),
])
def test_answers_are_normalised_and_failures_have_reasons(code, ok, answer, error):
    res = run_program(code, timeout_s=5)
    assert (res.ok, res.error) == (ok, error), res
    if answer is not None:
        assert res.answer == answer and type(res.answer) is type(answer)
    elif error == "non-finite ans":
        assert isinstance(res.answer, str)


def test_other_answer_variable_and_captured_output():
    res = run_program("print('step', 1)\nresult = 41 + 1", timeout_s=5, answer_var="result")
    assert res == PotResult(True, 42, None, "step 1\n")


def test_bad_arguments_are_caller_errors():
    for kwargs in ({"timeout_s": 0}, {"timeout_s": float("nan")}, {"memory_mb": 10}, {"answer_var": "a b"}):
        with pytest.raises(ValueError):
            run_program("ans = 1", **kwargs)
    with pytest.raises(TypeError):
        run_program(b"ans = 1")


def test_a_broken_sandbox_is_a_result_not_an_exception(monkeypatch):
    monkeypatch.setattr(pot, "STARTUP_LIMIT_S", 0.0)
    assert run_program("ans = 1", timeout_s=5) == PotResult(False, None, "startup timeout")
    monkeypatch.undo()
    monkeypatch.setattr(pot, "RUNNER", REPO / "no_such_runner.py")
    res = run_program("ans = 1", timeout_s=5)
    assert not res.ok and res.error.startswith("crashed: exit code 2")

    def refuse(*a, **k):
        raise OSError("cannot start a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    res = run_program("ans = 1", timeout_s=5)
    assert not res.ok and res.error.startswith("sandbox failure: OSError")


def _children() -> set[str]:
    return {p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == os.getpid()}


def test_the_caller_stays_healthy_after_hostile_programs():
    threads_before = threading.active_count()
    children_before = _children()  # other tests of the session may have left their own helpers running
    for name in ("huge_bytearray.py", "fork_os.py", "stdout_flood_raw.py", "os_exit.py"):
        assert not run_timed((CORPUS / name).read_text(encoding="utf-8"), python_guards=False).ok
    assert threading.active_count() == threads_before
    assert _children() - children_before == set()
    assert run_program("ans = 6 * 7", timeout_s=5).answer == 42


def _ppid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_sandbox_reports_its_layers(layers):
    assert {"rlimits", "python_guards"} <= layers


# ---------------------------------------------------------------- run_many


def test_run_many_keeps_order_and_bounds_concurrency(monkeypatch):
    real = pot.run_program
    lock, state = threading.Lock(), {"now": 0, "max": 0}

    def counting(*a, **k):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        try:
            return real(*a, **k)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(pot, "run_program", counting)
    codes = [f"ans = {i} * 2" for i in range(5)] + ["import os", "ans = 'x'"]
    res = run_many(codes, timeout_s=5, max_workers=2)
    assert [r.answer for r in res[:5]] == [0, 2, 4, 6, 8]
    assert res[5].error == "forbidden import: os" and res[6].error == "non-numeric ans"
    assert 1 <= state["max"] <= 2


# ---------------------------------------------------------------- extract_program


def test_extract_program_from_fenced_and_raw_completions():
    two_blocks = ("First try:\n```python\nx = 1\n```\nBetter:\n```python\n"
                  "apples = 5\nans = apples * 2\n```\nThe answer is 10.")
    assert extract_program(two_blocks) == "apples = 5\nans = apples * 2\n"
    assert extract_program("```\nans = 3\n```") == "ans = 3\n"
    assert extract_program("```py\n    ans = 4\n") == "ans = 4\n"  # unclosed fence, indented
    assert extract_program("n = 2\nans = n + 1") == "n = 2\nans = n + 1\n"
    assert extract_program("```python\nx = 1\n```\n```bash\nans=2\n```") == "x = 1\n"


def test_extract_program_calls_a_pal_style_solution():
    completion = "```python\ndef solution():\n    total = 3 + 4\n    return total\n```"
    code = extract_program(completion)
    assert code.endswith("ans = solution()\n")
    assert run_program(code, timeout_s=5).answer == 7
    assert "solution()" not in extract_program("def solution(x):\n    return x").splitlines()[-1:]
    assigned = "def solution():\n    return 1\nans = solution() + 1"
    assert extract_program(assigned) == assigned + "\n"


# ---------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "sgft_lab.pot", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_prints_the_result_as_its_last_line(tmp_path):
    p = run_cli(str(CORPUS / "benign_class_and_print.py"), "--timeout", "5")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"ok": True, "answer": 12.5, "error": None}
    assert lines[0] == "rect Rect 12.5"

    p = run_cli(str(CORPUS / "fork_os.py"), "--timeout", "2", "--memory-mb", "256")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {
        "ok": False, "answer": None, "error": "forbidden import: os"}

    completion = tmp_path / "completion.txt"
    completion.write_text("Here:\n```python\nans = 2 ** 5\n```\n", encoding="utf-8")
    p = run_cli(str(completion), "--extract")
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"ok": True, "answer": 32, "error": None}


@pytest.mark.parametrize("args", [["missing_file.py"], ["FILE", "--timeout", "0"],
                                  ["FILE", "--memory-mb", "8"], [], ["FILE", "--bogus"]])
def test_cli_usage_errors_exit_2(args):
    args = [str(CORPUS / "benign_math.py") if a == "FILE" else a for a in args]
    p = run_cli(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)


# ---------------------------------------------------------------- straight-line arithmetic in process

def _random_straight_programs(n: int, seed: int = 0) -> list[str]:
    """Seeded programs of the PoT rationales' shape: assignments of + - * / // % and unary minus over
    literals (int and float) and earlier names, some with augmented assignment."""
    import random

    rng = random.Random(seed)
    ops = ["+", "-", "*", "/", "//", "%"]

    def term(names):
        if names and rng.random() < 0.6:
            return rng.choice(names)
        return str(rng.choice([rng.randint(-20, 60), round(rng.uniform(-5, 50), 2)]))

    out = []
    for _ in range(n):
        names, lines = [], []
        for _ in range(rng.randint(1, 6)):
            target = rng.choice(["apples", "total", "x", "each", "ans"] if names else ["apples", "x"])
            if target in names and rng.random() < 0.3:
                lines.append(f"{target} {rng.choice(ops)}= {term(names)}")
            else:
                neg = "-" if rng.random() < 0.1 else ""
                expr = term(names) if rng.random() < 0.2 else f"{term(names)} {rng.choice(ops)} {neg}{term(names)}"
                lines.append(f"{target} = {expr}")
            names.append(target)
        lines.append(f"ans = {rng.choice(names)}")
        out.append("\n".join(lines) + "\n")
    return out


def test_straight_line_programs_give_the_sandboxes_answer():
    """Every program the in-process path answers gets exactly the sandbox's answer (value and type); the
    rest (errors such as division by zero) are left to the sandbox."""
    progs = _random_straight_programs(60) + ["x = 7\nans = x / 2\n", "x = -7\nans = x // 2\n", "ans = -7 % 3\n",
                                             "a = 3\na *= 2\nans = a - 1.5\n", "ans = 0.1 + 0.2\n", "ans = +3\n"]
    answered = 0
    for code, sandboxed in zip(progs, run_many(progs, max_workers=2)):
        fast = pot.straight_line(code)
        if fast is None:
            assert not sandboxed.ok, code  # only a failing one (division by zero) falls back
            continue
        answered += 1
        assert (fast.ok, fast.answer, type(fast.answer), fast.error) == \
            (sandboxed.ok, sandboxed.answer, type(sandboxed.answer), sandboxed.error), code
    assert answered >= 50  # the path is taken for the rationale shape, not skipped


@pytest.mark.parametrize("code", [
    "ans = 1 / 0\n", "ans = y\n", "ans = 2 ** 3\n", "ans = True\n", "ans = 'a'\n", "import math\nans = 1\n",
    "ans = abs(-3)\n", "x = 10 ** 15\nans = x\n", "x = 1000000000\nans = x * x * x\n", "_x = 3\nans = _x\n",
    "x = 3\n", "a = b = 3\nans = a\n", "for i in range(3):\n    ans = i\n", "ans = x.real\n", "ans = 1e308 * 10\n",
    "x = 3\nx **= 2\nans = x\n", "ans = [1][0]\n", "def f():\n    return 1\nans = 2\n", "ans = 3 +\n",
])  # fmt: skip
def test_straight_line_leaves_everything_else_to_the_sandbox(code):
    assert pot.straight_line(code) is None


def test_programs_run_only_what_is_not_straight_line_in_the_sandbox(monkeypatch):
    sent = []

    def fake_run_many(codes, **kw):
        sent.extend(codes)
        return [PotResult(True, 99, None) for _ in codes]

    monkeypatch.setattr(pot, "run_many", fake_run_many)
    programs = pot.Programs()
    out = programs.run(["x = 3\nx = x + 4\nans = x", "```python\nans = abs(-2)\n```", "x = 3\nx = x + 4\nans = x"])
    assert [res.answer for _, res in out] == [7, 99, 7]
    assert sent == ["ans = abs(-2)\n"]  # one child, for the program with a call
