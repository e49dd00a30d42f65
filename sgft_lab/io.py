"""Atomic file writes and JSONL helpers: the one place outputs are written.

Every write goes to a temp file in the target's folder (``.NAME.XXXXXXXX.tmp``), is fsynced, then renamed over
the target (os.replace), so a kill never leaves a half file. The file gets the mode a plain ``open(path, "w")``
would give a new file: ``0o666 & ~umask`` (tempfile.mkstemp would make it 0600 whatever the umask).
Readers name the file and line of a malformed row (invalid JSON, or bytes that are not UTF-8) in a ValueError.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new, empty temp file beside ``path``, created 0o666 so the kernel applies the umask (as open() does)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temp file name for {path.name}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename, so a kill never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON document at ``path``; invalid JSON or UTF-8 -> ValueError naming the file and line."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def decode_line(raw: bytes, where: str) -> str:
    """One line of a file as text; bytes that are not UTF-8 -> ValueError naming ``where`` (file:line)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None


def loads_line(line: str, where: str, error: type[Exception] = ValueError, *, whole_file: bool = False) -> Any:
    """One JSON document from one line of a file; anything json cannot read (bad syntax, nesting too deep,
    an integer too long) -> ``error`` naming ``where`` (file:line). ``whole_file``: ``line`` is a whole
    file's text and ``where`` its name; a syntax error then names the line it is on."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise error(f"{where}{f':{e.lineno}' if whole_file else ''}: invalid JSON ({e.msg})") from None
    except RecursionError:
        raise error(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer longer than Python converts
        raise error(f"{where}: invalid JSON ({e})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield rows; a malformed line (invalid JSON or UTF-8) raises ValueError naming the file and line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = decode_line(raw, f"{path}:{lineno}")
            if not line.strip():
                continue
            yield loads_line(line, f"{path}:{lineno}")
