"""sgft_lab.io: atomic writes (the process umask, no half files, no temp files left) and readers that name
the file and line of a bad row."""

from __future__ import annotations

import os
import stat

import pytest

from sgft_lab.io import atomic_write_text, iter_jsonl, read_json, read_jsonl, write_json, write_jsonl


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def with_umask(mask: int, fn):
    old = os.umask(mask)
    try:
        return fn()
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664), (0o000, 0o666)])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, mask, expected):
    def write_all():
        atomic_write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "sub" / "b.json", {"a": 1})
        write_jsonl(tmp_path / "c.jsonl", [{"a": 1}])
        with open(tmp_path / "plain.txt", "w") as f:  # the reference
            f.write("x")

    with_umask(mask, write_all)
    assert mode(tmp_path / "plain.txt") == expected
    for name in ("a.txt", "sub/b.json", "c.jsonl"):
        assert mode(tmp_path / name) == expected, (name, oct(mode(tmp_path / name)))


def test_rewrite_takes_the_current_umask(tmp_path):
    path = tmp_path / "r.json"
    with_umask(0o077, lambda: write_json(path, 1))
    assert mode(path) == 0o600
    with_umask(0o022, lambda: write_json(path, 2))
    assert mode(path) == 0o644 and read_json(path) == 2


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": 1}])

    def rows():
        yield {"a": 2}
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "\ud800")  # encoded before the temp file exists
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path / "folder", "x")  # the rename over a folder fails: its temp is removed
    assert read_jsonl(path) == [{"a": 1}]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["folder", "rows.jsonl"]


def test_readers_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"a": 1}\n\n{"a": "\xc3\x28"}\n')
    with pytest.raises(ValueError, match=rf"^{bad}:3: not UTF-8 text \(byte 0xc3 at column 8\)$"):
        read_jsonl(bad)
    bad.write_bytes(b'{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=rf"^{bad}:2: invalid JSON"):
        list(iter_jsonl(bad))
    doc = tmp_path / "doc.json"
    doc.write_bytes(b'{\n "a": 1,\n "b": \xff\n}\n')
    with pytest.raises(ValueError, match=rf"^{doc}:3: not UTF-8 text \(byte 0xff\)$"):
        read_json(doc)
    doc.write_bytes(b'{\n "a": 1,\n "b": \n}\n')
    with pytest.raises(ValueError, match=rf"^{doc}:4: invalid JSON"):
        read_json(doc)
