"""Persistent teacher cache: SQLite in WAL mode, one row per (teacher, prompt, params, sample index).

Each completion is committed as it arrives, so a killed run loses nothing it paid for, and a rerun of
the same command sends no request whose answer is stored. One cache file is shared by all runs
(``paths.cache_dir``).

The cache never returns a wrong answer:

- **Every row is verified when it is read.** Its ``key`` must be what its own ``teacher``, ``prompt``,
  ``params`` and ``sample_index`` hash to (``base.request_key``), and its ``checksum`` (SHA-256 over the key
  and the stored answer: text, finish reason, token counts) must match. A row that fails either -- an edited
  or bit-flipped answer, a row stored under another request's key -- is not served: it is a miss (the
  request is sent again and its row replaced), counted in ``rejected`` and reported in a warning naming
  the check command. Rows written before checksums existed (``checksum`` NULL) are verified by key only.
  Cost: two SHA-256 per row read, a few microseconds.
- **A damaged file is named, never a traceback.** Any SQLite error reading or writing (``database disk
  image is malformed``, ``file is not a database`` ...) raises :class:`~sgft_lab.errors.CacheError` naming
  the file and the two commands that repair it:

  ``python -m sgft_lab.teachers cache check PATH``
      counts the rows that can be read and verified and those that cannot (SQLite ``quick_check``, a scan
      of the table that skips over unreadable pages, and the primary-key index for rows the table lost);
      exit 0 if healthy, 2 if not.
  ``python -m sgft_lab.teachers cache rebuild PATH``
      copies every readable, verified row into a fresh database, keeps the damaged file (and its -wal /
      -shm) as ``PATH.corrupt-<timestamp>``, and puts the fresh one at PATH. Run it while no run uses
      the cache. Rows lost are simply asked again by the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CacheError
from .base import Completion

log = logging.getLogger("sgft_lab.teachers")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    teacher TEXT NOT NULL,
    prompt TEXT NOT NULL,
    params TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    checksum TEXT
)
"""
_COLUMNS = ("key", "teacher", "prompt", "params", "sample_index", "text", "finish_reason", "prompt_tokens",
            "completion_tokens", "created", "checksum")
_INSERT = f"INSERT OR REPLACE INTO completions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_READ = "key, teacher, prompt, params, sample_index, text, finish_reason, prompt_tokens, completion_tokens"


def check_command(path: str | Path) -> str:
    return f"python -m sgft_lab.teachers cache check {path}"


def rebuild_command(path: str | Path) -> str:
    return f"python -m sgft_lab.teachers cache rebuild {path}"


def _is_busy(e: BaseException) -> bool:
    return isinstance(e, sqlite3.OperationalError) and any(w in str(e) for w in ("locked", "busy"))


def cache_error(path: str | Path, e: BaseException, doing: str = "read") -> CacheError:
    """The one-line error for a cache SQLite cannot ``doing`` (open / read / write)."""
    damaged = isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError) or \
        any(w in str(e).lower() for w in ("malformed", "not a database", "corrupt", "disk i/o"))
    if damaged:
        return CacheError(
            f"the teacher cache {path} is damaged ({e}) and cannot be {doing}: `{check_command(path)}` counts the "
            f"answers still readable, `{rebuild_command(path)}` keeps them in a fresh cache (the damaged file is "
            f"kept beside it); or delete the file to start an empty cache")
    return CacheError(f"the teacher cache {path} cannot be {doing} ({e}); check the path, its permissions and the "
                      f"free disk space, or set paths.cache_dir elsewhere")


def completion_checksum(key: str, text: str, finish_reason: str | None, prompt_tokens: int,
                        completion_tokens: int) -> str:
    """What a row's ``checksum`` holds: SHA-256 (128 bits, hex) over its key and the stored answer."""
    payload = json.dumps([key, text, finish_reason, int(prompt_tokens), int(completion_tokens)], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def row_key(teacher: str, prompt: str, params: str, sample_index: int) -> str:
    """The key a row's own columns hash to: ``base.request_key`` from the stored columns."""
    payload = json.dumps({"teacher": teacher, "prompt": prompt, "params": json.loads(params), "sample": sample_index},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def verify_row(row: tuple, checksum: str | None) -> bool:
    """True if a row (``_READ`` columns) is what it claims to be: key and (where stored) checksum match."""
    key, teacher, prompt, params, k, text, fr, pt, ct = row
    try:
        if not all(isinstance(x, str) for x in (key, teacher, prompt, params, text)) or \
                not all(isinstance(x, int) for x in (k, pt, ct)):
            return False
        if row_key(teacher, prompt, params, k) != key:
            return False
    except (TypeError, ValueError):  # params is not JSON
        return False
    return checksum is None or checksum == completion_checksum(key, text, fr, pt, ct)


class TeacherCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.rejected = 0  # rows read but not served: they failed their key / checksum check
        try:
            self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise cache_error(self.path, e, "opened") from None
        # Switching a new database to WAL takes an exclusive lock that SQLite's busy timeout does not cover:
        # two processes (e.g. parallel sweep jobs) opening a fresh cache at once can see "database is locked"
        # here. Retry with a short backoff instead of failing the run.
        for attempt in range(100):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute(_SCHEMA)
                self._migrate()
                break
            except sqlite3.Error as e:
                if not _is_busy(e) or attempt == 99:
                    self._conn.close()
                    raise cache_error(self.path, e, "opened") from None
                time.sleep(0.01 * (1 + attempt % 10))

    def _migrate(self) -> None:
        """Add the ``checksum`` column to a cache made before it existed (its rows keep NULL)."""
        cols = {r[1] for r in self._conn.execute("PRAGMA table_info(completions)")}
        if "checksum" not in cols:
            try:
                self._conn.execute("ALTER TABLE completions ADD COLUMN checksum TEXT")
            except sqlite3.OperationalError as e:
                if "duplicate column" not in str(e):  # another process added it just now
                    raise

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        """The stored completions of these keys; a row that fails verification is left out (a miss)."""
        out: dict[str, Completion] = {}
        bad: list[str] = []
        with self._lock:
            try:
                for i in range(0, len(keys), 500):
                    chunk = keys[i : i + 500]
                    q = f"SELECT {_READ}, checksum FROM completions WHERE key IN ({','.join('?' * len(chunk))})"
                    for *row, checksum in self._conn.execute(q, chunk):
                        key, _, _, _, _, text, fr, pt, ct = row
                        if verify_row(tuple(row), checksum):
                            out[key] = Completion(text=text, finish_reason=fr, prompt_tokens=pt, completion_tokens=ct)
                        else:
                            bad.append(key)
            except sqlite3.Error as e:
                if _is_busy(e):
                    raise
                raise cache_error(self.path, e, "read") from None
            self.rejected += len(bad)
        if bad:
            log.warning("teacher cache %s: %d stored answer(s) failed their integrity check (altered or damaged "
                        "rows) and were not used; they will be asked again. `%s` counts them", self.path, len(bad),
                        check_command(self.path))
        return out

    def put(self, key: str, teacher: str, prompt: str, params: dict, sample_index: int, c: Completion) -> None:
        self.put_many([(key, teacher, prompt, params, sample_index, c)])

    def put_many(self, rows: list[tuple[str, str, str, dict, int, Completion]]) -> None:
        """Store (key, teacher, prompt, params, sample_index, completion) rows in one transaction."""
        now = time.time()
        values = [(key, teacher, prompt, json.dumps(params, sort_keys=True), k, c.text, c.finish_reason,
                   c.prompt_tokens, c.completion_tokens, now,
                   completion_checksum(key, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens))
                  for key, teacher, prompt, params, k, c in rows]
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    self._conn.executemany(_INSERT, values)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                if _is_busy(e):
                    raise
                raise cache_error(self.path, e, "written") from None

    def __len__(self) -> int:
        with self._lock:
            try:
                return self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
            except sqlite3.Error as e:
                if _is_busy(e):
                    raise
                raise cache_error(self.path, e, "read") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# --------------------------------------------------------------------------------------------------------
# check / rebuild (python -m sgft_lab.teachers cache check|rebuild PATH)
# --------------------------------------------------------------------------------------------------------
@dataclass
class CacheReport:
    path: str
    healthy: bool = False
    rows_readable: int = 0  # rows read and verified: what a rebuild keeps
    rows_unreadable: int = 0  # rows known to exist (table or key index) that cannot be read or fail verification
    rows_altered: int = 0  # of those: read, but their key or checksum does not match (never served)
    rows_unverified: int = 0  # readable rows from before checksums (verified by key only)
    integrity: list[str] = field(default_factory=list)  # SQLite quick_check: ["ok"] when the file is sound
    error: str | None = None  # why nothing could be read (not a database, no such file ...)
    kept_as: str | None = None  # rebuild: where the damaged file now is
    rows_copied: int | None = None  # rebuild: rows in the fresh cache

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.error:
            head = f"{self.path}: unreadable ({self.error})"
        else:
            head = (f"{self.path}: {'healthy' if self.healthy else 'DAMAGED'}; {self.rows_readable} rows readable, "
                    f"{self.rows_unreadable} unreadable ({self.rows_altered} altered)")
            if self.integrity and self.integrity != ["ok"]:
                head += f"; sqlite quick_check: {self.integrity[0]}"
                if len(self.integrity) > 1:
                    head += f" (+{len(self.integrity) - 1} more)"
        return head


_MIN_ROWID, _MAX_ROWID = -(2**63), 2**63 - 1


class _Scan:
    """Reads whatever can be read from a (possibly damaged) cache file, without writing to it."""

    def __init__(self, path: Path):
        self.path = path
        self.report = CacheReport(str(path))
        self.con: sqlite3.Connection | None = None
        self.has_checksum = False

    def open(self) -> bool:
        if not self.path.is_file():
            self.report.error = "no such file" if not self.path.exists() else "not a file"
            return False
        try:
            self.con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.con.execute("PRAGMA query_only=1")  # a check never writes to the file it checks
            self.con.execute("PRAGMA writable_schema=ON")  # load a schema whose root pages point past the end
        except sqlite3.Error as e:
            self.report.error = str(e)
            return False
        try:
            lines = [ln for r in self.con.execute("PRAGMA quick_check(20)") for ln in str(r[0]).splitlines()]
            self.report.integrity = [ln for ln in lines if ln.strip() and not ln.startswith("*** in database")]
        except sqlite3.Error as e:
            self.report.integrity = [str(e)]
        try:
            cols = {r[1] for r in self.con.execute("PRAGMA table_info(completions)")}
        except sqlite3.Error as e:
            self.report.error = str(e)
            return False
        if not cols:
            self.report.error = "no completions table (not a teacher cache, or its schema page is lost)"
            return False
        self.has_checksum = "checksum" in cols
        return True

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None

    def _first_from(self, start: int) -> tuple[bool, int | None]:
        """(readable?, first rowid >= start) -- a probe of the table b-tree at ``start``."""
        try:
            r = self.con.execute("SELECT rowid FROM completions WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                                 (start,)).fetchone()
            return True, (r[0] if r else None)
        except sqlite3.DatabaseError:
            return False, None

    def table_rowids(self) -> list[int]:
        """Every rowid the table b-tree yields; a damaged page is skipped by probing past it."""
        ids: list[int] = []
        last = _MIN_ROWID  # rows > last are still to be read
        while True:
            try:
                for (r,) in self.con.execute("SELECT rowid FROM completions WHERE rowid > ? ORDER BY rowid",
                                             (last,)):
                    ids.append(r)
                    last = r
                return ids
            except sqlite3.DatabaseError:
                pass
            # Reading from last + 1 fails: find the smallest start past the damage that reads (exponential
            # probe, then bisection); the rows in between are unreadable.
            lo, hi, step, first = last + 1, None, 1, None
            while lo + step <= _MAX_ROWID:
                ok, first = self._first_from(lo + step)
                if ok:
                    hi = lo + step
                    break
                lo, step = lo + step, step * 2
            if hi is None:
                return ids
            while hi - lo > 1:
                mid = (lo + hi) // 2
                ok, f = self._first_from(mid)
                if ok:
                    hi, first = mid, f
                else:
                    lo = mid
            if first is None:
                return ids
            last = first - 1

    def index_rowids(self) -> set[int]:
        """Rowids listed in the primary-key index (read from both ends, as far as each gets)."""
        out: set[int] = set()
        for order in ("ASC", "DESC"):
            try:
                for (r,) in self.con.execute("SELECT rowid FROM completions INDEXED BY sqlite_autoindex_completions_1"
                                             f" ORDER BY key {order}"):
                    out.add(r)
            except sqlite3.DatabaseError:
                continue
        return out

    def rows(self) -> Iterator[tuple[tuple, str | None]]:
        """Every readable, verified row as ((_READ columns), checksum); the report counts the rest."""
        ids = self.table_rowids()
        known = set(ids) | self.index_rowids()
        rep = self.report
        cols = f"{_READ}, {'checksum' if self.has_checksum else 'NULL'}"
        good = 0
        for i in range(0, len(ids), 200):
            chunk = ids[i : i + 200]
            try:
                rows = self.con.execute(f"SELECT {cols} FROM completions WHERE rowid IN "
                                        f"({','.join('?' * len(chunk))})", chunk).fetchall()
            except sqlite3.DatabaseError:
                rows = []
                for r in chunk:  # read one by one: only the damaged rows are lost
                    try:
                        row = self.con.execute(f"SELECT {cols} FROM completions WHERE rowid = ?", (r,)).fetchone()
                    except sqlite3.DatabaseError:
                        continue
                    if row is not None:
                        rows.append(row)
            for *row, checksum in rows:
                if verify_row(tuple(row), checksum):
                    good += 1
                    rep.rows_unverified += checksum is None
                    yield tuple(row), checksum
                else:
                    rep.rows_altered += 1
        rep.rows_readable = good
        rep.rows_unreadable = max(len(known), good + rep.rows_altered) - good


def check_cache(path: str | Path) -> CacheReport:
    """Count the readable / unreadable rows of a cache file (it is not modified)."""
    scan = _Scan(Path(path))
    try:
        if scan.open():
            for _ in scan.rows():
                pass
    finally:
        scan.close()
    rep = scan.report
    rep.healthy = rep.error is None and rep.integrity == ["ok"] and rep.rows_unreadable == 0
    return rep


def rebuild_cache(path: str | Path) -> CacheReport:
    """Copy every readable, verified row of ``path`` into a fresh cache at ``path``; the old file (and its
    -wal / -shm) is kept as ``path.corrupt-<timestamp>``. Run it while no process uses the cache."""
    path = Path(path)
    if not path.is_file():
        return CacheReport(str(path), error="no such file" if not path.exists() else "not a file")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while kept.exists():
        n += 1
        kept = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    tmp = path.with_name(f"{path.name}.rebuild-{stamp}.tmp")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    scan = _Scan(path)
    fresh = TeacherCache(tmp)
    copied = 0
    try:
        if scan.open():
            batch: list[tuple] = []
            for (key, teacher, prompt, params, k, text, fr, pt, ct), _ in scan.rows():
                batch.append((key, teacher, prompt, json.loads(params), k,
                              Completion(text=text, finish_reason=fr, prompt_tokens=pt, completion_tokens=ct)))
                if len(batch) >= 500:
                    fresh.put_many(batch)
                    copied += len(batch)
                    batch = []
            fresh.put_many(batch)
            copied += len(batch)
        fresh._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except BaseException:
        fresh.close()
        scan.close()
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            p.unlink(missing_ok=True)
        raise
    fresh.close()
    scan.close()
    if path.exists():
        os.replace(path, kept)
    for suffix in ("-wal", "-shm"):  # never leave the damaged file's WAL beside the fresh database
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{kept}{suffix}"))
    for suffix in ("-wal", "-shm"):  # checkpointed and closed: the fresh database is all in tmp
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, path)
    rep = scan.report
    rep.kept_as = str(kept) if kept.exists() else None
    rep.rows_copied = copied
    rep.healthy = rep.error is None and rep.integrity == ["ok"] and rep.rows_unreadable == 0
    return rep
