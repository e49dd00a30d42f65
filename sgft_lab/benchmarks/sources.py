"""Where each benchmark's raw rows come from: local files (the layout of ../shared/data) or the HF hub.

Rows come back as `Row`s in Fine-tune-CoT's unified index order: the parts of a benchmark are concatenated
(GSM8K train then test, CommonsenseQA train then dev, AQuA train then test), so the official split files apply
unchanged. Every reader names the file and line (or row) of a bad record in a DataError: invalid JSON, CSV or
XML, bytes that are not UTF-8, a record of the wrong shape. A missing file is a DataFileMissing.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, DataFileMissing
from ..io import loads_line
from .preprocess import Row


@dataclass(frozen=True)
class Part:
    """One raw file of a benchmark, in unified index order."""

    path: str  # relative to the data dir
    fmt: str  # json_list | jsonl | examples (BIG-bench / Kojima {"examples": [...]}) | csv | asdiv_xml
    absent_rows: int | None = None  # rows it is known to have when its file may be missing (AQuA train)
    obtain: str = ""  # where to get the file when it is missing


class MissingTrainData(DataFileMissing):
    """A benchmark's train file is absent (AQuA's 97,467-row train.json); test-only loading still works."""


# --- local files --------------------------------------------------------------------------------------------


def _not_utf8(rel: str, data: bytes, e: UnicodeDecodeError, line: int | None = None) -> DataError:
    """The error for bytes that are not UTF-8: file, line and the offending byte (``e`` indexes ``data``)."""
    line = data.count(b"\n", 0, e.start) + 1 if line is None else line
    return DataError(f"{rel}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); benchmark files are UTF-8")


def _read_text(path: Path, rel: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(rel, data, e) from None


def _load_json(path: Path, rel: str) -> Any:
    return loads_line(_read_text(path, rel), rel, DataError, whole_file=True)


def read_part(data_dir: Path, part: Part, offset: int) -> list[Row]:
    """All rows of one local file, indexed from ``offset``."""
    path = data_dir / part.path
    rel = str(path)  # errors name the file as found
    if not path.is_file():
        raise DataFileMissing(
            f"{path}: benchmark file not found (data dir {data_dir}; expected the layout of "
            f"../shared/data){': ' + part.obtain if part.obtain else ''}"
        )
    if part.fmt == "jsonl":
        return list(_jsonl_rows(path, rel, offset))
    if part.fmt == "csv":
        return list(_csv_rows(path, rel, offset))
    if part.fmt == "asdiv_xml":
        return _asdiv_rows(path, rel, offset)
    data = _load_json(path, rel)
    if part.fmt == "examples":
        if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
            raise DataError(f"{rel}: field 'examples': missing or not a list")
        data = data["examples"]
    elif not isinstance(data, list):
        raise DataError(f"{rel}: expected a JSON array of records")
    rows = []
    for i, d in enumerate(data):
        where = f"{rel} row {i}"
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(d).__name__}")
        rows.append(Row(d, offset + i, where))
    return rows


def _jsonl_rows(path: Path, rel: str, offset: int) -> Iterator[Row]:
    # AQuA's *.json files are JSON Lines too; blank lines are skipped without taking an index.
    i = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _not_utf8(rel, raw, e, lineno) from None
            if not line.strip():
                continue
            d = loads_line(line, f"{rel}:{lineno}", DataError)
            if not isinstance(d, dict):
                raise DataError(f"{rel}:{lineno}: expected a JSON object, got {type(d).__name__}")
            yield Row(d, offset + i, f"{rel}:{lineno}")
            i += 1


def _csv_rows(path: Path, rel: str, offset: int) -> Iterator[Row]:
    import io

    reader = csv.DictReader(io.StringIO(_read_text(path, rel), newline=""))
    try:
        for i, d in enumerate(reader):
            if None in d:  # more cells than header columns
                raise DataError(
                    f"{rel}:{reader.line_num}: more cells than the header's {len(reader.fieldnames or ())}"
                )
            yield Row({k: v for k, v in d.items() if v is not None}, offset + i, f"{rel}:{reader.line_num}")
    except csv.Error as e:
        raise DataError(f"{rel}:{reader.reader.line_num}: invalid CSV ({e})") from None  # the line being read


def _asdiv_rows(path: Path, rel: str, offset: int) -> list[Row]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(_read_text(path, rel))  # a str: the declared encoding is not consulted
    except ET.ParseError as e:
        line = e.position[0]
        raise DataError(f"{rel}:{line}: invalid XML ({e})") from None
    rows = []
    for i, p in enumerate(root.iter("Problem")):
        d: dict[str, Any] = {k: v for k, v in p.attrib.items()}
        for child in p:
            d[child.tag] = child.text or ""
        rows.append(Row(d, offset + i, f"{rel} problem {i} ({d.get('ID', '?')})"))
    return rows


# --- the hub ------------------------------------------------------------------------------------------------


def hub_rows(
    hub_id: str,
    hub_config: str | None,
    parts: list[tuple[str, Callable[[dict], dict]]],
    *,
    data_files: Any = None,
    cache_dir: str | None = None,
) -> list[Row]:
    """Rows of ``datasets.load_dataset(hub_id, hub_config)``, the given splits concatenated in order, each row
    mapped to the local file's schema by its adapter. ``hub_id="json"`` with ``data_files`` loads local files
    in the hub's format through this same path (how the tests exercise it)."""
    try:
        import datasets  # heavy and optional (the `hub` extra): only here
    except ImportError as e:
        from ..errors import DataError

        raise DataError(f"benchmark.source=hub needs the Hugging Face `datasets` package, which cannot be "
                        f"imported ({e}); install it with: pip install 'sgft-lab[hub]'") from None

    kwargs: dict[str, Any] = {}
    if data_files is not None:
        kwargs["data_files"] = data_files
    if cache_dir is not None:
        kwargs["cache_dir"] = cache_dir
    name = hub_id + (f"/{hub_config}" if hub_config else "")
    ds = datasets.load_dataset(hub_id, hub_config, **kwargs)
    rows: list[Row] = []
    for split, adapt in parts:
        if split not in ds:
            raise ValueError(f"hub dataset {name}: no split {split!r} (has {sorted(ds)})")
        offset = len(rows)
        for i, d in enumerate(ds[split]):
            where = f"hub {name} split {split} row {i}"
            try:
                mapped = adapt(dict(d))
            except (KeyError, TypeError, ValueError) as e:
                field = e.args[0] if isinstance(e, KeyError) else str(e)
                raise ValueError(f"{where}: field {field!r}: missing or malformed") from None
            rows.append(Row(mapped, offset + i, where))
    return rows


# Hub row -> local schema adapters (keep thin: rename fields, nothing else).


def same(d: dict) -> dict:
    return d


def csqa_from_hub(d: dict) -> dict:
    """tau/commonsense_qa: question is a string, choices are {label: [...], text: [...]}."""
    if isinstance(d.get("question"), dict):
        return d
    ch = d["choices"]
    return {
        "id": d.get("id"),
        "answerKey": d["answerKey"],
        "question": {
            "stem": d["question"],
            "question_concept": d.get("question_concept"),
            "choices": [{"label": lab, "text": t} for lab, t in zip(ch["label"], ch["text"], strict=True)],
        },
    }


def multiarith_from_hub(d: dict) -> dict:
    """ChilleD/MultiArith: {question, final_ans} (final_ans a string)."""
    if "sQuestion" in d:
        return d
    return {"sQuestion": d["question"], "lSolutions": [float(d["final_ans"])]}


def bigbench_from_hub(d: dict) -> dict:
    """HF BIG-bench conversions: {inputs, targets, multiple_choice_targets, multiple_choice_scores}.

    Unverified here (the hub cannot be reached): the conversion may wrap `inputs` in its own prompt, so the
    rendered question can differ from Fine-tune-CoT's. The local task.json is the reference.
    """
    if "input" in d:
        return d
    out = {
        "input": d["inputs"],
        "target_scores": dict(zip(d["multiple_choice_targets"], d["multiple_choice_scores"], strict=False)),
    }
    if d.get("targets"):
        out["target"] = d["targets"][0]
    return out


def asdiv_from_hub(d: dict) -> dict:
    """EleutherAI/asdiv: {body, question, solution_type, answer, formula}."""
    if "Body" in d:
        return d
    return {
        "Body": d["body"],
        "Question": d["question"],
        "Answer": d["answer"],
        "Solution-Type": d.get("solution_type"),
        "Formula": d.get("formula"),
    }
