"""Fuzz: malformed inputs of every kind end in one line, status 2, no traceback, nothing half-written (issue 13).

Kinds: JSONL lines and whole prediction files for ``python -m sgft_lab.score``, config values on the
``python -m sgft_lab`` command line, benchmark data files, teacher cache files. The CLIs run in this process
(``main``; the main app with a patched ``sys.argv``) except a few real subprocesses, which cost ~5 s each.
Each case checks: exit status 2, exactly one line on stderr starting with the program's prefix, the file
(and line) named where there is one, no "Traceback", no ``*.tmp*`` file anywhere, and for config and data
errors no run directory under outputs/.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import TINY, run_sgft

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
GOOD = '{"completion": "--> 5", "answer": "5"}'


def no_temp_files(root: Path) -> None:
    assert sorted(str(p) for p in root.rglob("*") if ".tmp" in p.name) == []


def one_line(err: str, prefix: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), err[-3000:]
    return lines[0]


# --------------------------------------------------------------------------------------------------------
# The score CLI: one bad line after a good one (so the error must name line 2)

BAD_LINES = {
    "truncated": b'{"completion": "3", ',
    "array": b"[]",
    "string": b'"just text"',
    "number": b"42",
    "null": b"null",
    "no_answer": b'{"completion": "3"}',
    "no_completion": b'{"answer": "3"}',
    "completion_int": b'{"completion": 3, "answer": "3"}',
    "answer_null": b'{"completion": "3", "answer": null}',
    "answer_list": b'{"completion": "3", "answer": ["3"]}',
    "answer_nan": b'{"completion": "3", "answer": NaN}',
    "gold_word": b'{"completion": "3", "answer": "three"}',
    "gold_empty": b'{"completion": "3", "answer": ""}',
    "gold_minus": b'{"completion": "3", "answer": "-"}',
    "gold_exponent": b'{"completion": "3", "answer": "1e3"}',
    "trailing_text": b'{"completion": "3", "answer": "3"} x',
    "trailing_comma": b'{"completion": "3", "answer": "3",}',
    "single_quotes": b"{'completion': '3', 'answer': '3'}",
    "deep_nesting": b"[" * 100_000,
    "huge_int": b'{"completion": "3", "answer": "3", "n": ' + b"7" * 5000 + b"}",
    "lone_surrogate": b'{"completion": "\\ud800", "answer": "3"}',
    "latin1_bytes": b'{"completion": "caf\xe9", "answer": "3"}',
    "cut_multibyte": b'{"completion": "\xe2\x82", "answer": "3"}',
    "raw_nul": b'{"completion": "a\x00b", "answer": "3"}',
    "utf16": '{"completion": "3", "answer": "3"}'.encode("utf-16-le"),
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_score_cli_bad_line(tmp_path, capsys, name):
    from sgft_lab.score import main

    src = tmp_path / "preds.jsonl"
    src.write_bytes(GOOD.encode() + b"\n" + BAD_LINES[name] + b"\n" + GOOD.encode() + b"\n")
    rc = main(["--benchmark", "gsm8k", "--template", "ft_cot_token", str(src)])
    out, err = capsys.readouterr()
    line = one_line(err, "sgft_lab.score: ")
    assert rc == 2 and out == ""
    assert line.startswith(f"sgft_lab.score: {src}:2: "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]  # nothing written


# --------------------------------------------------------------------------------------------------------
# The score CLI: whole prediction files


def _garbage(n: int) -> bytes:
    return random.Random(n).randbytes(n)


# name -> (file content or None for "make it yourself", extra argv, what the line must contain: {src} filled)
BAD_FILES = {
    "empty": (b"", [], "{src}: no rows"),
    "blank_lines": (b"\n \n\t\n", [], "{src}: no rows"),
    "bom_only": (b"\xef\xbb\xbf\n", [], "{src}: no rows"),
    "random_bytes": (_garbage(512), [], "{src}:"),
    "gzip_magic": (b"\x1f\x8b\x08\x00" + _garbage(64), [], "{src}:1: not UTF-8"),
    "nul_bytes": (b"\x00" * 64, [], "{src}:1: invalid JSON"),
    "killed_writer": ((GOOD + "\n").encode() * 3 + b'{"completion": "--> ', [], "{src}:4: invalid JSON"),
    "split_missing": ((GOOD + "\n").encode(), ["--split", "test"], "{src}:1: missing field 'split'"),
    "split_absent": (b'{"split": "test", "completion": "3", "answer": "3"}\n', ["--split", "val"],
                     "{src}: no rows with split 'val'"),
    "split_unknown": ((GOOD + "\n").encode(), ["--split", "dev"], "--split"),
    "missing_file": (None, [], "{src}: cannot read"),
    "a_folder": (None, [], "{src}: cannot read"),
    "output_is_folder": ((GOOD + "\n").encode(), [], "cannot write {src_dir}/preds.scored.jsonl"),
    "output_under_file": ((GOOD + "\n").encode(), ["--out", "{src}/x.jsonl"], "cannot write {src}/x.jsonl"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_score_cli_bad_file(tmp_path, capsys, name):
    from sgft_lab.score import main

    content, extra, want = BAD_FILES[name]
    src = tmp_path / "preds.jsonl"
    if content is not None:
        src.write_bytes(content)
    elif name == "a_folder":
        src.mkdir()
    if name == "output_is_folder":
        (tmp_path / "preds.scored.jsonl").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    fill = {"src": src, "src_dir": tmp_path}
    try:
        rc = main([a.format(**fill) for a in extra] + ["--benchmark", "gsm8k", "--template", "zs", str(src)])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    line = one_line(err, "sgft_lab.score: ")
    assert rc == 2 and out == ""
    assert want.format(**fill) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp file left


# --------------------------------------------------------------------------------------------------------
# The main app in this process


def run_app(args: list[str], tmp_path: Path, monkeypatch, capsys) -> tuple[int, str, Path]:
    """``python -m sgft_lab ARGS`` in this process, outputs under tmp_path: (status, stderr, outputs dir)."""
    from sgft_lab.__main__ import main

    outputs = tmp_path / "outputs"
    monkeypatch.setenv("SGFT_LAB_OUTPUT_DIR", str(outputs))
    for var in ("HYDRA_FULL_ERROR", "SGFT_LAB_DATA_DIR", "SGFT_LAB_CONFIG_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["sgft_lab", *args])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra's logging setup: undone for the tests after this
    try:
        main()
        rc = 0
    except SystemExit as e:
        rc = e.code
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return rc, capsys.readouterr().err, outputs


def nothing_under_outputs(outputs: Path) -> None:
    """No run directory (Hydra itself may make the empty output root)."""
    assert not outputs.exists() or sorted(p.name for p in outputs.iterdir()) == []


# name -> (overrides, what the line must contain)
BAD_CONFIG = {
    "int_as_word": (["trainer.max_epochs=abc"], "`trainer.max_epochs`: Value 'abc'"),
    "int_as_float": (["trainer.batch_size=1.5"], "`trainer.batch_size`: Value '1.5'"),
    "float_as_word": (["trainer.lr=abc"], "`trainer.lr`: Value 'abc'"),
    "bool_as_word": (["print_table=maybe"], "`print_table`: Value 'maybe'"),
    "seed_word": (["seed=xyz"], "`seed`: Value 'xyz'"),
    "epochs_negative": (["trainer.max_epochs=-1"], "`trainer.max_epochs`: -1; allowed: >= 1"),
    "hidden_zero": (["student.hidden_size=0"], "`student.hidden_size`: 0; allowed: >= 1"),
    "retries_negative": (["teacher.max_retries=-3"], "`teacher.max_retries`: -3; allowed: >= 0"),
    "val_fraction_high": (["benchmark.val_fraction=1.5"], "`benchmark.val_fraction`: 1.5"),
    "misspelt_key": (["trainer.max_epoch=2"], "max_epoch"),
    "misspelt_group": (["trainr.max_epochs=2"], "`trainr` is not a key of the config"),
    "added_key": (["+student.new_key=1"], "new_key"),
    "unknown_method": (["method=nonexistent"], "`method`: no option 'nonexistent'"),
    "unknown_benchmark": (["benchmark=gsm9k"], "`benchmark`: no option 'gsm9k'"),
    "unknown_experiment": (["experiment=nope"], "`experiment`: no preset 'nope'"),
    "override_without_value": (["trainer.max_epochs"], "'trainer.max_epochs' missing EQUAL"),
    "unbalanced_bracket": (["trainer.max_epochs=[1,2"], "invalid config: no viable alternative at input '[1,2'"),
    "missing_data_dir": (["benchmark=gsm8k", "paths.data_dir=/nonexistent/sgft_lab_data"],
                         "data dir /nonexistent/sgft_lab_data does not exist"),
    "unknown_option": (["--nonexistent-flag"], "unrecognized arguments: --nonexistent-flag"),
}


@pytest.mark.parametrize("args, want", BAD_CONFIG.values(), ids=list(BAD_CONFIG))
def test_main_app_bad_config(tmp_path, monkeypatch, capsys, args, want):
    rc, err, outputs = run_app([*TINY, *args], tmp_path, monkeypatch, capsys)
    line = one_line(err, "sgft_lab: ")
    assert rc == 2
    assert want in line, line
    nothing_under_outputs(outputs)
    no_temp_files(tmp_path)


def test_main_app_bad_config_subprocess(tmp_path):
    """The same through a real ``python -m sgft_lab``: stderr is exactly the one line."""
    p = run_sgft([*TINY, "trainer.max_epochs=abc"], tmp_path, check=False, timeout=120)
    assert p.returncode == 2
    assert one_line(p.stderr, "sgft_lab: ") == ("sgft_lab: invalid config at `trainer.max_epochs`: Value 'abc' of "
                                                "type 'str' could not be converted to Integer")
    nothing_under_outputs(tmp_path / "outputs")


# --------------------------------------------------------------------------------------------------------
# Benchmark data files (a copy of tests/fixtures/data with one file corrupted)


def _insert_bytes(path: Path, line: int, junk: bytes = b"\xc0\xaf") -> None:
    lines = path.read_bytes().split(b"\n")
    cut = len(lines[line - 1]) // 2
    lines[line - 1] = lines[line - 1][:cut] + junk + lines[line - 1][cut:]
    path.write_bytes(b"\n".join(lines))


def _edit_jsonl(path: Path, line: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = fn(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def _edit_json(path: Path, fn) -> None:
    path.write_text(json.dumps(fn(json.loads(path.read_text())), indent=1))


def _mkdir_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()


SPLIT = "fine_tune_cot_splits/split/gsm8k__default.json"
# name -> (benchmark, file, corruption, what the line must contain after the data dir)
BAD_DATA = {
    "jsonl_binary": ("gsm8k", "gsm8k/test.jsonl", lambda p: _insert_bytes(p, 2), "gsm8k/test.jsonl:2: not UTF-8"),
    "jsonl_truncated": ("gsm8k", "gsm8k/test.jsonl", lambda p: _edit_jsonl(p, 2, lambda s: s[:-9]),
                        "gsm8k/test.jsonl:2: invalid JSON"),
    "jsonl_array_row": ("gsm8k", "gsm8k/train.jsonl", lambda p: _edit_jsonl(p, 1, lambda s: "[1, 2]"),
                        "gsm8k/train.jsonl:1: expected a JSON object"),
    "jsonl_no_answer": ("gsm8k", "gsm8k/test.jsonl", lambda p: _edit_jsonl(p, 2, lambda s: '{"question": "q"}'),
                        "gsm8k/test.jsonl:2: field 'answer': missing"),
    "jsonl_no_hashes": ("gsm8k", "gsm8k/test.jsonl",
                        lambda p: _edit_jsonl(p, 1, lambda s: '{"question": "q", "answer": "so 5"}'),
                        "gsm8k/test.jsonl:1: field 'answer'"),
    "jsonl_deep": ("commonsense_qa", "commonsenseqa/dev_rand_split.jsonl",
                   lambda p: _edit_jsonl(p, 1, lambda s: "[" * 100_000),
                   "commonsenseqa/dev_rand_split.jsonl:1: invalid JSON"),
    "file_is_folder": ("gsm8k", "gsm8k/test.jsonl", _mkdir_instead, "gsm8k/test.jsonl: benchmark file not found"),
    "file_empty": ("gsm8k", "gsm8k/test.jsonl", lambda p: p.write_bytes(b""), f"{SPLIT}: field 'test'"),
    "json_list_binary": ("single_eq", "singleeq/questions.json", lambda p: _insert_bytes(p, 3),
                         "singleeq/questions.json:3: not UTF-8"),
    "json_list_object": ("single_eq", "singleeq/questions.json", lambda p: p.write_text("{}"),
                         "singleeq/questions.json: expected a JSON array"),
    "json_huge_int": ("svamp", "svamp/SVAMP.json", lambda p: p.write_text("[" + "9" * 5000 + "]"),
                      "svamp/SVAMP.json: invalid JSON"),
    "json_bad_solution": ("multiarith", "multiarith/MultiArith.json",
                          lambda p: _edit_json(p, lambda d: [dict(r, lSolutions=["abc"]) for r in d]),
                          "multiarith/MultiArith.json row 0: field 'lSolutions'"),
    "json_solution_nan": ("multiarith", "multiarith/MultiArith.json",
                          lambda p: _edit_json(p, lambda d: [dict(r, lSolutions=["nan"]) for r in d]),
                          "multiarith/MultiArith.json row 0: field 'lSolutions'"),
    "json_solution_inf": ("multiarith", "multiarith/MultiArith.json",
                          lambda p: _edit_json(p, lambda d: [dict(r, lSolutions=["1e400"]) for r in d]),
                          "multiarith/MultiArith.json row 0: field 'lSolutions'"),
    "examples_binary": ("coin_flip", "coin_flip/coin_flip.json", lambda p: _insert_bytes(p, 4),
                        "coin_flip/coin_flip.json:4: not UTF-8"),
    "examples_not_list": ("coin_flip", "coin_flip/coin_flip.json", lambda p: p.write_text('{"examples": 3}'),
                          "coin_flip/coin_flip.json: field 'examples'"),
    "csv_binary": ("mawps", "mawps/cv_mawps/fold0/dev.csv", lambda p: _insert_bytes(p, 2),
                   "mawps/cv_mawps/fold0/dev.csv:2: not UTF-8"),
    "csv_huge_cell": ("mawps", "mawps/cv_mawps/fold0/train.csv",
                      lambda p: p.write_text(p.read_text() + '"' + "x" * 200_000 + '",1\n'),
                      "mawps/cv_mawps/fold0/train.csv:5: invalid CSV"),
    "xml_binary": ("asdiv", "asdiv/ASDiv.xml", lambda p: _insert_bytes(p, 5), "asdiv/ASDiv.xml:5: not UTF-8"),
    "xml_unclosed": ("asdiv", "asdiv/ASDiv.xml", lambda p: p.write_text(p.read_text()[:300]),
                     "asdiv/ASDiv.xml:"),
    "aqua_options": ("aqua", "aqua/test.json", lambda p: _edit_jsonl(
        p, 1, lambda s: json.dumps(dict(json.loads(s), options=["A)1"]))), "aqua/test.json:1: field 'options'"),
    "split_index": ("gsm8k", SPLIT, lambda p: p.write_text('{"train": [0], "test": [999]}'),
                    f"{SPLIT}: field 'test': index 999"),
    "split_bad_json": ("gsm8k", SPLIT, lambda p: p.write_text('{"train": [0], '), f"{SPLIT}:1: invalid JSON"),
    "split_missing": ("gsm8k", SPLIT, lambda p: p.unlink(), f"{SPLIT}: Fine-tune-CoT split file not found"),
    "split_binary": ("gsm8k", SPLIT, lambda p: p.write_bytes(b'{"train": [0], "test": [\xff]}'), f"{SPLIT}:1: "),
}


@pytest.mark.parametrize("key, rel, corrupt, want", BAD_DATA.values(), ids=list(BAD_DATA))
def test_main_app_bad_data_file(tmp_path, monkeypatch, capsys, key, rel, corrupt, want):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    corrupt(data / rel)
    # aqua trains on a file the fixtures lack: evaluate only (zero_shot) so its test file is what is read
    method = ["method=zero_shot"] if key == "aqua" else []
    rc, err, outputs = run_app([*TINY, f"benchmark={key}", f"paths.data_dir={data}", *method], tmp_path,
                               monkeypatch, capsys)
    line = one_line(err, "sgft_lab: ")
    assert rc == 2
    assert f"sgft_lab: {data}/{want}" in line, line
    nothing_under_outputs(outputs)
    no_temp_files(tmp_path)


# --------------------------------------------------------------------------------------------------------
# Teacher cache files (real subprocesses: the run gets as far as the teacher stage)


def _real_cache_then_damaged(path: Path) -> None:
    """A real cache with rows, then a page in the middle overwritten (a disk fault)."""
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE completions (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, prompt TEXT NOT NULL, "
                "params TEXT NOT NULL, sample_index INTEGER NOT NULL, text TEXT NOT NULL, finish_reason TEXT, "
                "prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0, "
                "created REAL, checksum TEXT)")
    con.executemany("INSERT INTO completions (key, teacher, prompt, params, sample_index, text) VALUES "
                    "(?, 't', ?, '{}', 0, ?)", [(f"k{i}", "p" * 200, "x" * 500) for i in range(200)])
    con.commit()
    con.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[2 * page:6 * page] = _garbage(4 * page)
    path.write_bytes(bytes(data))


BAD_CACHE = {
    "random_bytes": lambda p: p.write_bytes(_garbage(8192)),
    "header_then_garbage": lambda p: p.write_bytes(b"SQLite format 3\x00" + _garbage(8192)),
    "damaged_pages": _real_cache_then_damaged,
}


@pytest.mark.parametrize("name", sorted(BAD_CACHE))
def test_main_app_corrupt_teacher_cache(tmp_path, name):
    cache = tmp_path / "outputs" / "cache" / "teacher_cache.sqlite"
    cache.parent.mkdir(parents=True)
    BAD_CACHE[name](cache)
    p = run_sgft(TINY, tmp_path, check=False, timeout=180)
    assert p.returncode == 2, p.stderr[-3000:]
    line = one_line(p.stderr, "sgft_lab: ")
    assert f"the teacher cache {cache}" in line, line
    assert f"python -m sgft_lab.teachers cache rebuild {cache}" in line, line
    no_temp_files(tmp_path)
