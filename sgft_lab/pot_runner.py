"""Child side of the program-of-thought sandbox; the parent side and the guarantees are in sgft_lab/pot.py.

Run as ``python -I -S pot_runner.py CONFIG_JSON`` with cwd = a fresh work dir that holds ``prog.py``.
Standard library only: -I -S keeps the package (and site-packages) off sys.path.

Order of events (each OS step is best-effort: it is skipped, and left out of ``layers``, where the
kernel or the privileges do not allow it):

1. read prog.py; pre-import the allowed modules (after the privilege drop the interpreter's own
   files may be unreadable, so nothing is imported later);
2. rlimits: CPU seconds, address space, file size, open files, no core, no processes (NPROC=0);
3. as root: a fresh network namespace (no interfaces up), then drop to uid/gid 65534 (nobody)
   so that NPROC applies and the limits cannot be raised again;
4. parent-death signal (SIGKILL when the caller dies);
5. no_new_privs + Landlock: reads only in the work dir and the stdlib dir, writes only in the work
   dir, no TCP bind/connect, no signals or abstract sockets outside the sandbox;
6. seccomp filter: process creation (fork/clone/exec), sockets, ptrace, kill, rlimit changes,
   namespaces, mounts, io_uring, bpf ... fail with EPERM;
7. Python guards (unless disabled for tests): AST check against dunder and frame attributes, an
   import allow-list that hands out read-only proxies of pre-imported modules, restricted builtins
   (no eval/exec/compile/globals/vars, getattr refusing private names, open() only inside the work
   dir), captured and capped print output;
8. write "ready" to fd 1, run the program under a SIGALRM timer, normalise ``ans``, write ONE JSON
   line to fd 1, _exit.
"""

import ast
import json
import os
import resource
import signal
import sys

ALLOWED_MODULES = (
    "math", "cmath", "fractions", "decimal", "statistics", "itertools", "functools",
    "collections", "collections.abc", "re", "datetime", "heapq", "bisect", "numbers",
)
# Public names of allowed modules that can reach a real module's globals (string-driven attribute
# copying, or eval of annotation strings), so they are left out of the proxies.
_GADGETS = {"functools": {"update_wrapper", "wraps", "singledispatch", "singledispatchmethod"}}
# Non-dunder attributes that lead to frames, code objects or globals.
_BLOCKED_ATTRS = frozenset({
    "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "cr_origin",
    "ag_frame", "ag_code", "ag_await", "f_globals", "f_locals", "f_back", "f_builtins", "f_code",
    "f_trace", "tb_frame", "tb_next", "func_globals",
})
_ALLOWED_DUNDERS = frozenset({"__init__", "__name__", "__doc__"})
_UNSAFE_BUILTINS = (
    "eval", "exec", "compile", "open", "input", "breakpoint", "help", "globals", "locals", "vars",
    "getattr", "setattr", "delattr", "hasattr", "__import__", "__loader__", "__spec__", "exit", "quit",
    "copyright", "credits", "license",
)
NOBODY = 65534

# Syscalls refused by the seccomp filter, per architecture (numbers from the kernel's unistd headers).
_DENY = (
    "clone clone3 fork vfork execve execveat kill tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo "
    "pidfd_open pidfd_send_signal pidfd_getfd ptrace process_vm_readv process_vm_writev socket "
    "socketpair setrlimit prlimit64 unshare setns mount umount2 chroot pivot_root open_tree move_mount "
    "fsopen fsconfig fsmount fspick mount_setattr bpf userfaultfd perf_event_open io_uring_setup "
    "io_uring_enter io_uring_register keyctl add_key request_key init_module finit_module "
    "delete_module kexec_load kexec_file_load reboot swapon swapoff acct mknod mknodat "
    "open_by_handle_at name_to_handle_at fanotify_init personality quotactl"
).split()
_SYSCALLS = {
    "x86_64": (0xC000003E, dict(
        clone=56, fork=57, vfork=58, execve=59, kill=62, ptrace=101, setrlimit=160, mount=165,
        umount2=166, chroot=161, tkill=200, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297,
        unshare=272, setns=308, prlimit64=302, process_vm_readv=310, process_vm_writev=311,
        execveat=322, bpf=321, userfaultfd=323, perf_event_open=298, socket=41, socketpair=53,
        pidfd_send_signal=424, pidfd_open=434, clone3=435, pidfd_getfd=438, io_uring_setup=425,
        io_uring_enter=426, io_uring_register=427, keyctl=250, add_key=248, request_key=249,
        init_module=175, finit_module=313, delete_module=176, kexec_load=246, kexec_file_load=320,
        reboot=169, swapon=167, swapoff=168, acct=163, pivot_root=155, mknod=133, mknodat=259,
        open_by_handle_at=304, name_to_handle_at=303, fanotify_init=300, personality=135,
        quotactl=179, open_tree=428, move_mount=429, fsopen=430, fsconfig=431, fsmount=432,
        fspick=433, mount_setattr=442)),
    "aarch64": (0xC00000B7, dict(
        clone=220, execve=221, kill=129, ptrace=117, setrlimit=164, mount=40, umount2=39, chroot=51,
        tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240, unshare=97, setns=268,
        prlimit64=261, process_vm_readv=270, process_vm_writev=271, execveat=281, bpf=280,
        userfaultfd=282, perf_event_open=241, socket=198, socketpair=199, pidfd_send_signal=424,
        pidfd_open=434, clone3=435, pidfd_getfd=438, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, keyctl=219, add_key=217, request_key=218, init_module=105,
        finit_module=273, delete_module=106, kexec_load=104, kexec_file_load=294, reboot=142,
        swapon=224, swapoff=225, acct=89, pivot_root=41, mknodat=33, open_by_handle_at=265,
        name_to_handle_at=264, fanotify_init=262, personality=92, quotactl=60, open_tree=428,
        move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442)),
}

_FALLBACK = b'{"ok": false, "answer": null, "error": "memory", "output": "", "layers": []}\n'


class ForbiddenImport(ImportError):
    """An import outside the allow-list (an ImportError, so ``except ImportError`` fallbacks work)."""


class Forbidden(PermissionError):
    """A refused path, attribute or name."""


class _Timeout(BaseException):
    pass


# ---------------------------------------------------------------- OS layers


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def set_rlimits(cfg):
    cpu = int(cfg["cpu_s"])
    mem = int(cfg["memory_mb"]) * 2**20
    fsize = int(cfg["fsize_mb"]) * 2**20
    limits = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU at cpu s, SIGKILL one second later
        (resource.RLIMIT_AS, (mem, mem)),
        (resource.RLIMIT_FSIZE, (fsize, fsize)),
        (resource.RLIMIT_NOFILE, (64, 64)),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NPROC, (0, 0)),  # counts threads too; root ignores it (see drop_privileges)
    ]
    for name in ("RLIMIT_MEMLOCK", "RLIMIT_MSGQUEUE"):
        if hasattr(resource, name):
            limits.append((getattr(resource, name), (0, 0)))
    for which, (soft, hard) in limits:
        cur_hard = resource.getrlimit(which)[1]
        if cur_hard != resource.RLIM_INFINITY:  # never ask for more than the caller already has
            hard = min(hard, cur_hard)
        resource.setrlimit(which, (min(soft, hard), hard))


def new_network_namespace():
    _, libc = _libc()
    return libc.unshare(0x40000000) == 0  # CLONE_NEWNET; needs CAP_SYS_ADMIN


def drop_privileges(workdir):
    """As root: give the work dir to nobody and become nobody (NPROC then applies, limits stick)."""
    try:
        os.chown(workdir, NOBODY, NOBODY)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    except OSError:
        return False
    return os.getuid() == NOBODY


def set_parent_death_signal(parent_pid):
    _, libc = _libc()
    ok = libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the caller already died before prctl
        os._exit(1)
    return ok


def open_paths(paths):
    """O_PATH fds for Landlock rules, opened before the privilege drop (ancestors may close then)."""
    fds = []
    for path in paths:
        try:
            fds.append(os.open(path, os.O_PATH | os.O_CLOEXEC))
        except OSError:
            fds.append(None)
    return fds


def landlock(workdir_fd, read_fds):
    """Restrict file access to the work dir (all) and ``read_fds`` dirs (read), no TCP, scoped signals.

    Takes O_PATH fds and closes them. Returns the Landlock ABI version in force, 0 if none.
    """
    try:
        return _landlock(workdir_fd, read_fds)
    finally:
        for fd in [workdir_fd, *read_fds]:
            if fd is not None:
                os.close(fd)


def _landlock(workdir_fd, read_fds):
    ctypes, libc = _libc()
    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    if abi < 1:
        return 0
    fs_all = (1 << 13) - 1  # ABI 1: EXECUTE .. MAKE_SYM (bits 0-12)
    if abi >= 2:
        fs_all |= 1 << 13  # REFER
    if abi >= 3:
        fs_all |= 1 << 14  # TRUNCATE
    if abi >= 5:
        fs_all |= 1 << 15  # IOCTL_DEV
    read = (1 << 0) | (1 << 2) | (1 << 3)  # EXECUTE | READ_FILE | READ_DIR

    class Attr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    attr = Attr(fs_all, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    rfd = libc.syscall(444, ctypes.byref(attr), size, 0)
    if rfd < 0:
        return 0
    try:
        if workdir_fd is None:
            return 0
        rules = [(workdir_fd, fs_all)] + [(fd, read) for fd in read_fds if fd is not None]
        for pfd, access in rules:
            rule = PathBeneath(access, pfd)
            if libc.syscall(445, rfd, 1, ctypes.byref(rule), 0) != 0:  # PATH_BENEATH
                return 0
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return 0
        return abi if libc.syscall(446, rfd, 0) == 0 else 0  # landlock_restrict_self
    finally:
        os.close(rfd)


def seccomp():
    """Install a deny-list filter: the listed syscalls return EPERM, foreign ABIs are refused."""
    machine = os.uname().machine
    if machine not in _SYSCALLS:
        return False
    ctypes, libc = _libc()
    arch, numbers = _SYSCALLS[machine]
    deny = sorted({numbers[name] for name in _DENY if name in numbers})

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                    ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Insn))]

    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, eperm = 0x7FFF0000, 0x00050000 | 1
    n = len(deny)
    # 0: load arch; 1: foreign arch -> EPERM; 2: load nr; 3: x32 ABI (nr >= 2**30) -> EPERM;
    # then one JEQ per denied nr jumping to the final EPERM; then ALLOW; then EPERM.
    insns = [Insn(ld, 0, 0, 4), Insn(jeq, 0, n + 3, arch), Insn(ld, 0, 0, 0),
             Insn(jge, n + 1, 0, 0x40000000)]
    insns += [Insn(jeq, n - i, 0, nr) for i, nr in enumerate(deny)]
    insns += [Insn(ret, 0, 0, allow), Insn(ret, 0, 0, eperm)]
    arr = (Insn * len(insns))(*insns)
    prog = Prog(len(insns), arr)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return False
    return libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0  # PR_SET_SECCOMP, MODE_FILTER


# ---------------------------------------------------------------- Python guards


def _refused_attr(name):
    return (name.startswith("__") and name not in _ALLOWED_DUNDERS) or name in _BLOCKED_ATTRS


def check_ast(tree):
    """Return the first forbidden construct in source order (innermost first) as a reason, or None."""
    found = []
    for node in ast.walk(tree):
        reason = None
        if isinstance(node, ast.Attribute) and _refused_attr(node.attr):
            reason = f"forbidden attribute: {node.attr}"
        elif isinstance(node, ast.MatchClass):  # `case C(__class__=x)` reads attributes by name
            bad = [name for name in node.kwd_attrs if _refused_attr(name)]
            reason = f"forbidden attribute: {bad[0]}" if bad else None
        elif isinstance(node, ast.Name) and node.id.startswith("__") and node.id != "__name__":
            reason = f"forbidden name: {node.id}"
        if reason:
            found.append(((node.lineno, node.col_offset, node.end_lineno, node.end_col_offset), reason))
    return min(found)[1] if found else None


def _proxy(mod, proxies):
    import types

    p = types.ModuleType(mod.__name__, getattr(mod, "__doc__", None))
    skip = _GADGETS.get(mod.__name__, set())
    for k, v in vars(mod).items():
        if k.startswith("_") or k in skip:
            continue
        if isinstance(v, types.ModuleType):
            if v.__name__ in proxies:
                setattr(p, k, proxies[v.__name__])
            continue
        setattr(p, k, v)
    return p


def make_proxies(modules):
    proxies = {}
    for name in sorted(modules, key=lambda s: -s.count(".")):  # submodules first
        proxies[name] = _proxy(modules[name], proxies)
    return proxies


def make_builtins(proxies, workdir):
    import builtins

    real_open, real_getattr = builtins.open, builtins.getattr

    def _import(name, globals=None, locals=None, fromlist=(), level=0):
        if level:
            raise ForbiddenImport("forbidden import: relative import")
        if name not in proxies:
            top = name.partition(".")[0]
            raise ForbiddenImport(f"forbidden import: {top if top not in proxies else name}")
        return proxies[name] if fromlist else proxies[name.partition(".")[0]]

    def _check(name):
        if not isinstance(name, str):
            raise TypeError("attribute name must be a string")
        if name.startswith("_") or name in _BLOCKED_ATTRS:
            raise Forbidden(f"forbidden attribute: {name}")
        return name

    _missing = object()

    def safe_getattr(obj, name, default=_missing):
        _check(name)
        if default is _missing:
            return real_getattr(obj, name)
        return real_getattr(obj, name, default)

    def safe_hasattr(obj, name):
        return hasattr(obj, _check(name))

    def safe_setattr(obj, name, value):
        setattr(obj, _check(name), value)

    def safe_delattr(obj, name):
        delattr(obj, _check(name))

    def safe_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
                  closefd=True, opener=None):
        if not isinstance(file, (str, bytes, os.PathLike)):  # no raw fds: fd 1 carries the result
            raise Forbidden("forbidden path: open() takes a path inside the work dir")
        if opener is not None:  # an opener could return any fd
            raise Forbidden("forbidden path: open(opener=...)")
        path = os.path.realpath(os.path.join(workdir, os.fsdecode(file)))
        if os.path.commonpath([path, workdir]) != workdir:
            raise Forbidden(f"forbidden path: {os.fsdecode(file)}")
        # Relative to the cwd (= workdir): after the privilege drop its ancestors may be untraversable.
        rel = os.path.relpath(path, workdir)
        return real_open(rel, mode, buffering, encoding, errors, newline, closefd)

    safe = {k: v for k, v in vars(builtins).items() if k not in _UNSAFE_BUILTINS}
    safe.update(__import__=_import, getattr=safe_getattr, hasattr=safe_hasattr,
                setattr=safe_setattr, delattr=safe_delattr, open=safe_open)
    return safe


class CappedText:
    """A write-only text sink that keeps the first ``cap`` characters (print output of the program)."""

    def __init__(self, cap):
        self.cap, self.parts, self.size, self.dropped = cap, [], 0, 0

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str")
        room = self.cap - self.size
        if room > 0:
            self.parts.append(s[:room])
            self.size += min(len(s), room)
        self.dropped += max(0, len(s) - max(room, 0))
        return len(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    def text(self):
        out = "".join(self.parts)
        return out + (f"\n[... {self.dropped} characters dropped]" if self.dropped else "")


# ---------------------------------------------------------------- the answer


def normalise(value):
    """Return (ok, answer, error): int/float for numbers, the repr otherwise.

    int -> int (bool is NOT a number here), float -> float, Fraction -> int when whole else float,
    Decimal -> float. NaN/inf and ints beyond float range -> 'non-finite ans'. Exact types only:
    subclasses could override conversions with program code.
    """
    import decimal
    import fractions
    import math

    t = type(value)
    try:
        if t is int:
            if abs(value) < 10**300:
                return True, value, None
            value = float(value)  # may raise OverflowError
        elif t is fractions.Fraction:
            value = int(value) if value.denominator == 1 else float(value)
        elif t is decimal.Decimal:
            value = float(value)
        elif t is not float:
            return False, _short_repr(value), "non-numeric ans"
    except (OverflowError, ValueError):
        return False, _short_repr(value), "non-finite ans"
    if isinstance(value, float) and not math.isfinite(value):
        return False, repr(value), "non-finite ans"
    if type(value) is int and abs(value) >= 10**300:
        return False, _short_repr(value), "non-finite ans"
    return True, value, None


def _short_repr(value, n=200):
    try:
        r = repr(value)
    except BaseException:  # noqa: BLE001 - a program-defined __repr__ may raise anything
        r = f"<unrepresentable {type(value).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def describe(exc):
    if isinstance(exc, (ForbiddenImport, Forbidden)):
        return str(exc)
    if isinstance(exc, _Timeout):
        return "timeout"
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, SystemExit):
        return "exit called"
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg}" + (f" (line {exc.lineno})" if exc.lineno else "")
    msg = str(exc).replace("\n", " ")
    msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


# ---------------------------------------------------------------- main


def install_os_layers(cfg, workdir):
    """Steps 2-6 of the module docstring; returns the names of the layers in force."""
    linux = sys.platform.startswith("linux")
    path_fds = open_paths([".", os.path.dirname(os.__file__)]) if linux else [None, None]
    layers = []
    set_rlimits(cfg)
    layers.append("rlimits")
    if linux and os.geteuid() == 0 and new_network_namespace():
        layers.append("netns")
    if os.geteuid() == 0 and drop_privileges(workdir):
        layers.append("drop_privs")
    if linux and set_parent_death_signal(int(cfg["parent_pid"])):
        layers.append("pdeathsig")
    abi = landlock(path_fds[0], path_fds[1:]) if linux else 0
    if abi:
        layers.append("landlock")  # file reads and writes
        layers += ["landlock_net"] if abi >= 4 else []  # TCP bind/connect
        layers += ["landlock_scope"] if abi >= 6 else []  # signals, abstract unix sockets
    if linux and seccomp():
        layers.append("seccomp")
    return layers


def run_source(source, cfg, modules, workdir):
    """Check, compile and run the program; return (ok, answer, error). Raises what the program raises."""
    guards = cfg["python_guards"]
    try:
        tree = ast.parse(source, "prog.py")
    except ValueError as e:  # some Python versions reject NUL bytes with ValueError, not SyntaxError
        return False, None, f"SyntaxError: {e}"
    reason = check_ast(tree) if guards else None
    if reason:
        return False, None, reason
    code = compile(tree, "prog.py", "exec")
    g = {"__name__": "__main__"}
    if guards:
        g["__builtins__"] = make_builtins(make_proxies(modules), workdir)
    exec(code, g)
    var = cfg["answer_var"]
    if var not in g:
        return False, None, f"no variable {var}"
    return normalise(g[var])


def main():
    cfg = json.loads(sys.argv[1])
    workdir = os.path.realpath(os.getcwd())
    with open("prog.py", encoding="utf-8", errors="replace") as f:
        source = f.read()
    out = os.dup(1)  # the result channel; the program's prints go to a CappedText
    os.set_inheritable(out, False)

    import importlib

    modules = {name: importlib.import_module(name) for name in ALLOWED_MODULES}
    importlib.import_module("_strptime")  # datetime.strptime imports it lazily
    if not cfg["python_guards"]:  # test mode: simulate a full escape with the tools already loaded
        for name in ("os", "sys", "socket", "subprocess", "ctypes", "threading", "signal", "time",
                     "resource", "builtins", "encodings.idna"):
            importlib.import_module(name)
    _libc()  # load ctypes before the address-space limit

    layers = install_os_layers(cfg, workdir)
    if cfg["python_guards"]:
        layers.append("python_guards")
    sys.setrecursionlimit(int(cfg["recursion_limit"]))

    sink = CappedText(int(cfg["output_chars"]))
    in_program = [False]

    def on_alarm(signum, frame):
        if in_program[0]:
            raise _Timeout()

    signal.signal(signal.SIGALRM, on_alarm)
    sys.stdout = sys.stderr = sink
    os.write(out, b"ready\n")  # the parent's wall-clock deadline starts now
    in_program[0] = True
    signal.setitimer(signal.ITIMER_REAL, float(cfg["timeout_s"]))
    try:
        try:
            ok, answer, error = run_source(source, cfg, modules, workdir)
        except BaseException as e:  # noqa: BLE001 - every failure of the program is a result
            ok, answer, error = False, None, describe(e)
        finally:
            in_program[0] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:  # the alarm fired between the inner handler and the finally clause
        ok, answer, error = False, None, "timeout"
    try:
        result = {"ok": ok, "answer": answer, "error": error, "output": sink.text(), "layers": layers}
        data = (json.dumps(result, ensure_ascii=True) + "\n").encode()
    except BaseException:  # noqa: BLE001 - e.g. MemoryError with the program's data still alive
        data = _FALLBACK
    try:
        while data:
            data = data[os.write(out, data):]
    finally:
        os._exit(0)  # skip finalisers: they would run program code outside the timer


if __name__ == "__main__":
    main()
