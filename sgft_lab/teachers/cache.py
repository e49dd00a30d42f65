"""Persistent teacher cache: SQLite in WAL mode, one row per (teacher, prompt, params, sample index).

Each completion is committed as it arrives, so a killed run loses nothing it paid for, and a rerun of
the same command sends no request whose answer is stored. One cache file is shared by all runs
(``paths.cache_dir``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from .base import Completion

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
    created REAL NOT NULL
)
"""


class TeacherCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        # Switching a new database to WAL takes an exclusive lock that SQLite's busy timeout does not cover:
        # two processes (e.g. parallel sweep jobs) opening a fresh cache at once can see "database is locked"
        # here. Retry with a short backoff instead of failing the run.
        for attempt in range(100):
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute(_SCHEMA)
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 99:
                    raise
                time.sleep(0.01 * (1 + attempt % 10))

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, text, finish_reason, prompt_tokens, completion_tokens FROM completions " \
                    f"WHERE key IN ({','.join('?' * len(chunk))})"
                for key, text, fr, pt, ct in self._conn.execute(q, chunk):
                    out[key] = Completion(text=text, finish_reason=fr, prompt_tokens=pt, completion_tokens=ct)
        return out

    def put(self, key: str, teacher: str, prompt: str, params: dict, sample_index: int, c: Completion) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO completions VALUES (?,?,?,?,?,?,?,?,?,?)",
                (key, teacher, prompt, json.dumps(params, sort_keys=True), sample_index, c.text,
                 c.finish_reason, c.prompt_tokens, c.completion_tokens, time.time()),
            )

    def put_many(self, rows: list[tuple[str, str, str, dict, int, Completion]]) -> None:
        """Store (key, teacher, prompt, params, sample_index, completion) rows in one transaction."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO completions VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(key, teacher, prompt, json.dumps(params, sort_keys=True), k, c.text, c.finish_reason,
                      c.prompt_tokens, c.completion_tokens, now) for key, teacher, prompt, params, k, c in rows])
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
