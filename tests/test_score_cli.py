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
                                      ("The answer is (G).", "G", None, False)]),
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


def test_cli_empty_file(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("\n")
    proc = run_cli("--benchmark", "gsm8k", "--template", "zs", str(src), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy: 0.00% (0/0)" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 0


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


def test_cli_import_stays_light():
    heavy = "('torch', 'transformers', 'lightning')"
    code = f"import sys, sgft_lab.score; print(any(m in sys.modules for m in {heavy}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
