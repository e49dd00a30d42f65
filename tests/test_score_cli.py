"""`python -m sgft_lab.score`: re-scoring a predictions JSONL from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# task -> (template, [(completion, gold as stored, expected extracted, expected correct)]): 2 right, 1 wrong.
CASES = {
    "single_eq": ("ft_cot_token", [("3 + 40 = 43 --> 43 END", "43.0", "43.0", True),
                                   ("--> 1,200", "1200.0", "1200.0", True),
                                   ("--> 5", "6.0", "5.0", False)]),
    "addsub": ("zs", [("7 birds", "7.0", "7.0", True), ("-2.5", "-2.5", "-2.5", True),
                      ("nothing", "1.0", None, False)]),
    "multiarith": ("fs_cot", [("The answer is 18.", "18", "18", True), ("6 * 3 = 18", "18", "18", True),
                              ("The answer is 18.0.", "18", "18.0", False)]),
    "gsm8k": ("ft_cot_token", [("--> 1,000", "1,000", "1000", True), ("--> 72 END", "72", "72", True),
                               ("3,4 cookies", "3", "34", False)]),
    "aqua": ("fs_cot", [("The answer is (C).", "C", "C", True), ("so (B)", "B", "B", True),
                        ("(D), or A guess", "D", "A", False)]),
    "svamp": ("ft_cot_natural", [("Therefore, the answer is 34", "34.0", "34.0", True),
                                 ("3 + 31 = 34\n\nTherefore the answer is\n\n34", "34.0", "34.0", True),
                                 ("Therefore the answer is 34 or 35", "34.0", "35.0", False)]),
    "date_understanding": ("fs_cot", [("The answer is (F).", "F", "F", True),
                                      ("The answer is (A)", "A", "A", True),
                                      ("The answer is (G).", "F", None, False)]),
    "tracking_shuffled_objects": ("zs_cot", [(" (B)", "B", "B", True), (" (C) Bob", "C", "C", True),
                                             (" Bob has (C)", "C", "B", False)]),
    "last_letter_concatenation": ("ft_cot_token", [("--> yajo", "yajo", "yajo", True),
                                                   ('--> "ya jo".', "yajo", "yajo", True),
                                                   ("--> yajo END", "yajo", "yajoEND", False)]),
    "coin_flip": ("fs_cot", [('The answer is "yes".', "yes", "yes", True), ("Yes, no. No", "no", "no", True),
                             ("The answer is yes!", "yes", None, False)]),
    "commonsense_qa": ("ft_token", [("(E)", "E", "E", True), (" D", "D", "D", True),
                                    ("A (B)", "B", "A", False)]),
    "strategy_qa": ("ft_cot_token", [("--> Yes", "Yes", "yes", True), ("--> no.", "No", "no", True),
                                     ("--> maybe", "Yes", None, False)]),
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "sgft_lab.score", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_cases_cover_the_12_fine_tune_cot_tasks():
    from sgft_lab.answers import FTCOT_TASKS

    assert set(CASES) == set(FTCOT_TASKS)


@pytest.mark.parametrize("task", sorted(CASES))
def test_cli_scores_every_task(task, tmp_path):
    template, cases = CASES[task]
    src = tmp_path / f"{task}.jsonl"
    rows = [{"id": f"{task}:{i}", "completion": c, "answer": g} for i, (c, g, _, _) in enumerate(cases)]
    write_rows(src, rows)
    proc = run_cli("--benchmark", task, "--template", template, str(src), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "accuracy: 66.67% (2/3)" in lines
    summary = json.loads(lines[-1])
    assert summary["benchmark"] == task and summary["template"] == template
    assert summary["n"] == 3 and summary["accuracy"] == pytest.approx(2 / 3)

    out = [json.loads(x) for x in (tmp_path / f"{task}.scored.jsonl").read_text().splitlines()]
    assert len(out) == 3
    for i, (row, (completion, gold, extracted, correct)) in enumerate(zip(out, cases)):
        assert row["id"] == f"{task}:{i}" and row["completion"] == completion and row["answer"] == gold
        assert row["extracted"] == extracted, (i, row)
        assert row["correct"] is correct, (i, row)
        assert isinstance(row["contains_answer"], bool) and isinstance(row["correct_format"], bool)


def test_cli_prefix_override_and_flags(tmp_path):
    src = tmp_path / "preds.jsonl"
    write_rows(src, [{"completion": "1 step. The answer is 7. Check 8", "answer": "7"},
                     {"completion": "No prefix here: 3 then 8", "answer": "3"}])
    proc = run_cli("--benchmark", "multiarith", "--template", "zs", "--prefix", "The answer is", str(src),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy: 50.00% (1/2)" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1])["prefix"] == "The answer is"
    out = [json.loads(x) for x in (tmp_path / "preds.scored.jsonl").read_text().splitlines()]
    assert [r["extracted"] for r in out] == ["7", "8"]
    assert [r["correct_format"] for r in out] == [True, False]
    assert [r["contains_answer"] for r in out] == [True, True]


@pytest.mark.parametrize("text", ["", "\n", "\n  \n\t\n"])
def test_cli_empty_file_is_an_error(tmp_path, text):
    src = tmp_path / "empty.jsonl"
    src.write_text(text)
    proc = run_cli("--benchmark", "gsm8k", "--template", "zs", str(src), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("sgft_lab.score: ") and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "no rows" in proc.stderr and str(src) in proc.stderr
    assert not (tmp_path / "empty.scored.jsonl").exists()


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"completion": "The answer is 3"}', "missing field 'answer'"),
        ('{"answer": "3"}', "missing field 'completion'"),
        ('{"completion": "3", "answer": 3}', "field 'answer' must be a string"),
        ('{"completion": "3", ', "invalid JSON"),
    ],
)
def test_cli_bad_row_names_file_line_and_field(tmp_path, bad_line, message):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"completion": "3", "answer": "3"}\n\n' + bad_line + "\n", encoding="utf-8")
    proc = run_cli("--benchmark", "multiarith", "--template", "zs", str(src), cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert f"{src}:3:" in err and message in err, err  # line 3: the blank line still counts
    assert not (tmp_path / "bad.scored.jsonl").exists()


def test_cli_bad_gold_and_unknown_benchmark(tmp_path):
    src = tmp_path / "gold.jsonl"
    write_rows(src, [{"completion": "3", "answer": "three"}])
    proc = run_cli("--benchmark", "svamp", "--template", "zs", str(src), cwd=tmp_path)
    assert proc.returncode == 2 and f"{src}:1: field 'answer'" in proc.stderr
    proc = run_cli("--benchmark", "gsm9k", "--template", "zs", str(src), cwd=tmp_path)
    assert proc.returncode == 2 and "gsm9k" in proc.stderr


def score_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``sgft_lab.score.main(argv)`` in this process: (status, stdout, stderr)."""
    from sgft_lab.score import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sgft_lab.score: ") and "Traceback" not in err, err
    return lines[0]


def test_cli_invalid_utf8_names_file_and_line(tmp_path, capsys):
    src = tmp_path / "bin.jsonl"
    src.write_bytes(b'{"completion": "3", "answer": "3"}\n\n{"completion": "\xff\xfe 3", "answer": "3"}\n')
    rc, out, err = score_main(["--benchmark", "gsm8k", "--template", "zs", src], capsys)
    line = one_error_line(err)
    assert rc == 2 and out == ""
    assert f"{src}:3: not UTF-8 text (byte 0xff at column 17)" in line, line
    assert not (tmp_path / "bin.scored.jsonl").exists()


def test_cli_utf8_bom_and_crlf_are_read(tmp_path, capsys):
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"completion": "--> 5", "answer": "5"}\r\n{"completion": "--> 4", "answer": "5"}\r\n')
    rc, out, err = score_main(["--benchmark", "gsm8k", "--template", "ft_cot_token", src], capsys)
    assert rc == 0, err
    assert "accuracy: 50.00% (1/2)" in out.splitlines()


@pytest.mark.parametrize("blocker", ["directory", "parent_is_file"])
def test_cli_unwritable_output_is_one_line(tmp_path, capsys, blocker):
    src = tmp_path / "p.jsonl"
    write_rows(src, [{"completion": "--> 5", "answer": "5"}])
    argv = ["--benchmark", "gsm8k", "--template", "ft_cot_token", src]
    if blocker == "directory":  # FILE.scored.jsonl is a folder: the rename over it fails (also as root)
        target = tmp_path / "p.scored.jsonl"
        target.mkdir()
    else:  # --out under a regular file
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "out.jsonl"
        argv = ["--out", target, *argv]
    rc, out, err = score_main(argv, capsys)
    line = one_error_line(err)
    assert rc == 2 and out == ""
    assert f"cannot write {target}" in line and "--out" in line, line
    assert sorted(p.name for p in tmp_path.rglob("*") if ".tmp" in p.name) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_read_only_folder_is_one_line(tmp_path, capsys):
    src = tmp_path / "ro" / "p.jsonl"
    src.parent.mkdir()
    write_rows(src, [{"completion": "--> 5", "answer": "5"}])
    src.parent.chmod(0o555)
    try:
        rc, out, err = score_main(["--benchmark", "gsm8k", "--template", "ft_cot_token", src], capsys)
    finally:
        src.parent.chmod(0o755)
    assert rc == 2 and "cannot write" in one_error_line(err) and "Permission denied" in err


def test_cli_unreadable_input_is_one_line(tmp_path, capsys):
    for path in (tmp_path / "missing.jsonl", tmp_path):  # absent; a folder
        rc, _, err = score_main(["--benchmark", "gsm8k", "--template", "zs", path], capsys)
        assert rc == 2 and f"{path}: cannot read" in one_error_line(err)


# A gold answer each task can never match (refused for every task, with file and line; module docstring).
BAD_GOLD = {
    "single_eq": "three", "addsub": "seven", "multiarith": "1e3", "gsm8k": "three", "aqua": "F",
    "svamp": "nan", "date_understanding": "(A)", "tracking_shuffled_objects": "D",
    "last_letter_concatenation": "ya jo", "coin_flip": "Yes", "commonsense_qa": "b", "strategy_qa": "maybe",
    "asdiv": "9 apples", "mawps": "",
}


def test_bad_gold_table_covers_every_task():
    from sgft_lab.answers import TASKS

    assert set(BAD_GOLD) == set(TASKS)


@pytest.mark.parametrize("task", sorted(BAD_GOLD))
def test_cli_unparseable_gold_is_refused_with_file_and_line(tmp_path, capsys, task):
    """Numeric (gsm8k, multiarith were silently counted wrong) and non-numeric tasks alike."""
    src = tmp_path / "gold.jsonl"
    good = CASES[task][1][0][:2] if task in CASES else ("3", "3")
    write_rows(src, [{"completion": good[0], "answer": good[1]}, {"completion": "3", "answer": BAD_GOLD[task]}])
    for rule in ("official", "strict"):
        rc, out, err = score_main(["--benchmark", task, "--template", "zs", "--rule", rule, src], capsys)
        line = one_error_line(err)
        assert rc == 2 and out == ""
        assert f"{src}:2: field 'answer': gold {BAD_GOLD[task]!r}" in line, line
    assert not (tmp_path / "gold.scored.jsonl").exists()


def test_every_fixture_gold_is_accepted():
    """No false alarm: every gold the loaders produce from the fixture data is comparable."""
    from sgft_lab.benchmarks.loaders import KNOWN, default_config, load_pools
    from sgft_lab.score import gold_problem

    n = 0
    for key in KNOWN:
        for ex in load_pools(default_config(key), REPO / "tests" / "fixtures" / "data",
                             require_train=False).examples.values():
            assert gold_problem(key, ex.answer) is None, (key, ex.answer)
            n += 1
    assert n > 40


def run_rows() -> list[dict]:
    """A run's predictions/epoch_001.jsonl: val and test rows (evaluation.score_rows' fields)."""
    rows = []
    for split, answers in (("val", ["5", "6"]), ("test", ["5", "6", "7"])):
        for i, a in enumerate(answers):
            rows.append({"id": f"gsm8k:{split}{i}", "split": split, "question": "q", "completion": "--> 5",
                         "extracted": "5", "answer": a, "correct": a == "5", "contains_answer": a == "5",
                         "correct_format": True})
    return rows


@pytest.mark.parametrize("split, n, k", [("val", 2, 1), ("test", 3, 1), (None, 5, 2)])
def test_cli_split_filters_a_runs_predictions(tmp_path, capsys, split, n, k):
    src = tmp_path / "predictions" / "epoch_001.jsonl"
    src.parent.mkdir()
    write_rows(src, run_rows())
    rc, out, err = score_main(["--benchmark", "gsm8k", "--template", "ft_cot_token", src]
                              + (["--split", split] if split else []), capsys)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert f"accuracy: {100 * k / n:.2f}% ({k}/{n})" in lines
    summary = json.loads(lines[-1])
    assert summary["split"] == split and summary["n"] == n and summary["correct"] == k
    written = src.with_name(f"epoch_001.{split}.scored.jsonl" if split else "epoch_001.scored.jsonl")
    assert lines[0] == f"scored: {written}"
    scored = [json.loads(x) for x in written.read_text().splitlines()]
    assert [r["id"] for r in scored] == [r["id"] for r in run_rows() if split in (None, r["split"])]


def test_cli_split_needs_the_field_on_every_row(tmp_path, capsys):
    src = tmp_path / "p.jsonl"
    write_rows(src, [{"split": "test", "completion": "3", "answer": "3"}, {"completion": "3", "answer": "3"}])
    rc, _, err = score_main(["--benchmark", "gsm8k", "--template", "zs", "--split", "test", src], capsys)
    assert rc == 2 and f"{src}:2: missing field 'split'" in one_error_line(err)
    rc, _, err = score_main(["--benchmark", "gsm8k", "--template", "zs", src], capsys)  # without --split: fine
    assert rc == 0, err


def test_cli_split_without_rows_is_an_error(tmp_path, capsys):
    src = tmp_path / "p.jsonl"
    write_rows(src, [r for r in run_rows() if r["split"] == "test"])
    rc, _, err = score_main(["--benchmark", "gsm8k", "--template", "zs", "--split", "val", src], capsys)
    line = one_error_line(err)
    assert rc == 2 and f"{src}: no rows with split 'val' (3 rows: test 3)" in line, line
    rc, _, err = score_main(["--benchmark", "gsm8k", "--template", "zs", "--split", "train", src], capsys)
    assert rc == 2 and "--split" in one_error_line(err) and "'train'" in err


def test_scored_files_beside_a_runs_predictions_leave_epoch_history_alone(tmp_path, capsys):
    """Scoring predictions/epoch_001.jsonl in place writes epoch_001[.SPLIT].scored.jsonl there; a resume's
    epoch_history still reads only epoch_NNN.jsonl."""
    from sgft_lab.evaluation import epoch_history
    from sgft_lab.paths import RunPaths

    paths = RunPaths(tmp_path / "run")
    paths.predictions_dir.mkdir(parents=True)
    write_rows(paths.predictions(1), run_rows())
    before = epoch_history(paths)
    assert before == [{"epoch": 1, "val_accuracy": 0.5, "n_val": 2, "test_accuracy": pytest.approx(1 / 3),
                       "n_test": 3}]
    for extra in ([], ["--split", "test"]):
        rc, _, err = score_main(["--benchmark", "gsm8k", "--template", "zs", *extra, paths.predictions(1)], capsys)
        assert rc == 0, err
    names = sorted(p.name for p in paths.predictions_dir.iterdir())
    assert names == ["epoch_001.jsonl", "epoch_001.scored.jsonl", "epoch_001.test.scored.jsonl"]
    assert epoch_history(paths) == before


def test_cli_option_errors_are_one_line(capsys, tmp_path):
    rc, _, err = score_main(["--benchmark", "gsm9k", "--template", "zs", tmp_path / "x.jsonl"], capsys)
    assert rc == 2 and "gsm9k" in one_error_line(err)
    rc, _, err = score_main(["--template", "zs", tmp_path / "x.jsonl"], capsys)
    assert rc == 2 and "--benchmark" in one_error_line(err)


def test_cli_import_stays_light():
    heavy = "('torch', 'transformers', 'lightning')"
    code = f"import sys, sgft_lab.score; print(any(m in sys.modules for m in {heavy}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
