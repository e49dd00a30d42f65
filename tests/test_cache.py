"""The shared teacher cache: opens safely from many connections at once (parallel sweep jobs); a damaged file
is a CacheError naming it and the repair commands; a wrong row is never served."""

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sgft_lab.errors import CacheError
from sgft_lab.teachers.__main__ import main as teachers_main
from sgft_lab.teachers.base import Completion, Request, SamplingParams, request_key
from sgft_lab.teachers.cache import TeacherCache, check_cache, completion_checksum
from sgft_lab.teachers.engine import TeacherAccounting, generate


def test_concurrent_first_open_never_fails_and_sees_one_store(tmp_path):
    errors = []
    for trial in range(10):
        path = tmp_path / f"c{trial}.sqlite"

        def open_and_write(i, path=path):
            try:
                c = TeacherCache(path)
                c.put(f"k{i}", "t", "p", {}, 0, Completion(text=str(i)))
                c.close()
            except Exception as e:  # noqa: BLE001 - the test reports any failure
                errors.append(e)

        threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(TeacherCache(path)) == 6
    assert errors == []


# --------------------------------------------------------------------------------------------------------
# Damage: a damaged file is a CacheError naming it and the repair commands; a wrong row is never served
# --------------------------------------------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
N = 400


class Echo:
    identity = "echo-teacher"

    def __init__(self):
        self.asked: list[str] = []

    def complete(self, requests):
        self.asked += [r.prompt for r in requests]
        return [Completion(text=f"answer to {r.prompt} " + "y" * 150) for r in requests]


def prompts(n=N):
    return [f"prompt number {i} " + "x" * 100 for i in range(n)]


def filled(path: Path, n=N) -> Path:
    c = TeacherCache(path)
    generate(Echo(), c, prompts(n), SamplingParams(), progress=False)
    c.close()
    for side in ("-wal", "-shm"):  # closed cleanly: everything is in the main file
        assert not Path(f"{path}{side}").exists() or Path(f"{path}{side}").stat().st_size == 0
    return path


def read_all(path: Path, n=N) -> dict:
    c = TeacherCache(path)
    try:
        keys = [request_key(Echo.identity, Request(p, SamplingParams(), 0)) for p in prompts(n)]
        return c.get_many(keys)
    finally:
        c.close()


def truncate_half(p: Path):
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)


def garbage_pages(p: Path):
    with open(p, "r+b") as f:
        for page in (12, 13, 30):
            f.seek(page * 4096)
            f.write(os.urandom(4096))


def not_sqlite(p: Path):
    p.write_bytes(b"this is a text file, not a database\n" * 50)


@pytest.mark.parametrize("damage", [truncate_half, garbage_pages, not_sqlite])
def test_damaged_cache_raises_cache_error_naming_file_and_commands(tmp_path, damage):
    path = filled(tmp_path / "teacher_cache.sqlite")
    damage(path)
    with pytest.raises(CacheError) as e:
        read_all(path)  # opening, or reading the rows behind the damage
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert f"python -m sgft_lab.teachers cache check {path}" in msg
    assert f"python -m sgft_lab.teachers cache rebuild {path}" in msg
    with pytest.raises(CacheError):  # the engine reaches the cache the same way: no sqlite3 traceback
        c = TeacherCache(path)
        generate(Echo(), c, prompts(), SamplingParams(), progress=False)


@pytest.mark.parametrize("damage,some_kept", [(truncate_half, True), (garbage_pages, True), (not_sqlite, False)])
def test_check_then_rebuild_keeps_every_readable_row(tmp_path, damage, some_kept, capsys):
    path = filled(tmp_path / "teacher_cache.sqlite")
    damage(path)
    rep = check_cache(path)
    assert not rep.healthy
    if some_kept:
        assert 0 < rep.rows_readable < N and rep.rows_unreadable > 0
    else:
        assert rep.rows_readable == 0 and "not a database" in rep.error
    damaged_bytes = path.read_bytes()
    assert teachers_main(["cache", "check", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"{rep.rows_readable} rows readable" in out or "unreadable" in out
    assert path.read_bytes() == damaged_bytes  # check never writes

    assert teachers_main(["cache", "rebuild", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows_copied"] == rep.rows_readable
    kept = Path(report["kept_as"])
    assert kept.name.startswith("teacher_cache.sqlite.corrupt-") and kept.read_bytes() == damaged_bytes
    assert teachers_main(["cache", "check", str(path)]) == 0
    assert check_cache(path).rows_readable == rep.rows_readable
    # The rebuilt cache serves what was kept; the next run asks only for the rest.
    assert len(read_all(path)) == rep.rows_readable
    t = Echo()
    c = TeacherCache(path)
    acc = TeacherAccounting()
    out = generate(t, c, prompts(), SamplingParams(), accounting=acc, progress=False)
    c.close()
    assert len(t.asked) == N - rep.rows_readable and acc.stage("generate").cache_hits == rep.rows_readable
    assert [cs[0].text for cs in out] == [f"answer to {p} " + "y" * 150 for p in prompts()]


def test_altered_answer_is_a_miss_reported_and_replaced(tmp_path, caplog):
    path = filled(tmp_path / "c.sqlite", 20)
    victim = prompts(20)[3]
    with sqlite3.connect(path) as con:  # what a flipped bit or a hand edit would do
        con.execute("UPDATE completions SET text = 'The answer is 42.' WHERE prompt = ?", (victim,))
    c = TeacherCache(path)
    t = Echo()
    out = generate(t, c, prompts(20), SamplingParams(), progress=False)
    assert t.asked == [victim]  # served as a miss: asked again, never returned
    assert out[3][0].text == f"answer to {victim} " + "y" * 150
    assert c.rejected == 1
    assert "failed their integrity check" in caplog.text and "cache check" in caplog.text
    c.close()
    assert check_cache(path).healthy  # the request replaced the bad row
    assert len(read_all(path, 20)) == 20


def test_row_under_another_requests_key_is_never_served(tmp_path):
    """A row whose key does not hash from its own teacher / prompt / params / sample index (e.g. written by
    a buggy tool, or columns altered on disk) is not served, even with a consistent checksum."""
    path = filled(tmp_path / "c.sqlite", 5)
    a, b = (request_key(Echo.identity, Request(p, SamplingParams(), 0)) for p in prompts(5)[:2])
    with sqlite3.connect(path) as con:
        con.execute("DELETE FROM completions WHERE key = ?", (b,))
        text = "answer to the wrong question"
        con.execute("UPDATE completions SET key = ?, text = ?, checksum = ? WHERE key = ?",
                    (b, text, completion_checksum(b, text, "stop", 0, 0), a))
    got = read_all(path, 5)
    assert len(got) == 3 and b not in got and a not in got
    rep = check_cache(path)
    assert not rep.healthy and rep.rows_altered == 1 and rep.rows_readable == 3
    assert teachers_main(["cache", "check", str(path)]) == 2


def test_legacy_cache_without_checksums_is_migrated_and_still_served(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("""CREATE TABLE completions (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, prompt TEXT NOT NULL,
        params TEXT NOT NULL, sample_index INTEGER NOT NULL, text TEXT NOT NULL, finish_reason TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL)""")
    r = Request("old prompt", SamplingParams(), 0)
    k = request_key("old-teacher", r)
    con.execute("INSERT INTO completions VALUES (?,?,?,?,?,?,?,?,?,?)",
                (k, "old-teacher", r.prompt, json.dumps(r.params.key_dict(), sort_keys=True), 0, "old answer",
                 "stop", 1, 2, 0.0))
    con.commit()
    con.close()
    c = TeacherCache(path)
    assert c.get_many([k])[k].text == "old answer"  # no checksum: verified by its key only
    c.close()
    rep = check_cache(path)
    assert rep.healthy and rep.rows_readable == rep.rows_unverified == 1


def test_check_and_rebuild_cli_exit_codes(tmp_path):
    path = filled(tmp_path / "c.sqlite", 10)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = subprocess.run([sys.executable, "-m", "sgft_lab.teachers", "cache", "check", str(path)], env=env,
                        capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "healthy; 10 rows readable, 0 unreadable" in ok.stdout
    missing = subprocess.run([sys.executable, "-m", "sgft_lab.teachers", "cache", "check", str(tmp_path / "nope")],
                             env=env, capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "no such file" in missing.stdout
    assert teachers_main(["cache", "rebuild", str(tmp_path / "nope")]) == 2 and not (tmp_path / "nope").exists()
