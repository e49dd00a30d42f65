"""sgft_lab.report: paper numbers, matching, the seeded bootstrap, selections and protocols, the CLI on the fixture."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SHARED

from sgft_lab.report import PaperNumbers, bootstrap_ci, build_table, entries, load_runs, to_markdown
from sgft_lab.report.__main__ import main as report_main

FIXTURE = REPO / "tests" / "fixtures" / "results"
FTC = FIXTURE / "fine_tune_cot_main"


@pytest.fixture(scope="module")
def paper() -> PaperNumbers:
    return PaperNumbers.load()


# --- paper numbers ------------------------------------------------------------------------------------------
def test_paper_tables_are_complete_and_spot_checked(paper):
    ft = paper.data["fine_tune_cot"]
    assert set(ft["tables"]) == {
        "performance",
        "performance_oai",
        "performance_t5",
        "performance_flan_t5",
        "performance_gpt2",
    }
    for t in ft["tables"].values():
        assert all(len(r["values"]) == 12 for r in t["rows"])
    # Spot checks against methods.md 2.9 (one per table).
    get = {(r.table, r.method, r.size, r.benchmark): r.value for r in paper.records}
    assert get[("tab:performance", "diverse_reasoning", "6.7B", "multiarith")] == 53.33
    assert get[("tab:performance_oai", "vanilla_ft", "1.3B", "commonsense_qa")] == 70.93
    assert get[("tab:performance_t5", "fine_tune_cot", "700M", "date_understanding")] == 80.18
    assert get[("tab:performance_flan_t5", "diverse_reasoning", "700M", "tracking_shuffled_objects")] == 89.33
    assert get[("tab:performance_gpt2", "few_shot_cot", "124M", "tracking_shuffled_objects")] is None  # '-'
    assert paper.data["sgft"]["secondary"] is True


@pytest.mark.shared
def test_paper_numbers_match_methods_md(paper):
    """Every number of methods.md 2.9's five tables and its last paragraph is in the package data."""
    md = SHARED / "docs" / "methods.md"
    if not md.exists():
        pytest.skip(f"{md} is absent (../shared beside the repo)")
    text = md.read_text(encoding="utf-8")
    sec = text[text.index("### 2.9") : text.index("## 3. SGFT")]
    tables = re.split(r"\*\*(?:Headline \()?`tab:(performance\w*)`", sec)[1:]  # the tables' bold captions
    assert len(tables) == 10
    names = {
        "Random": "random",
        "Teacher (ZS-CoT)": "teacher",
        "Zero-shot": "zero_shot",
        "Zero-shot-CoT": "zero_shot_cot",
        "Few-shot-CoT": "few_shot_cot",
        "Fine-tune": "vanilla_ft",
        "Fine-tune-CoT": "fine_tune_cot",
        "Diverse reasoning": "diverse_reasoning",
    }
    n = 0
    for tid, body in zip(tables[::2], tables[1::2]):
        rows = paper.data["fine_tune_cot"]["tables"][tid]["rows"]
        lines = [ln for ln in body.split("Other printed numbers")[0].splitlines() if ln.startswith("| ")][1:]
        assert len(lines) == len(rows), tid
        for ln, row in zip(lines, rows):
            cells = [c.strip() for c in ln.strip("|").split("|")]
            assert names[cells[0]] == row["method"] and (cells[1] or None) == row["size"]
            assert [None if c == "-" else float(c) for c in cells[2:]] == row["values"], (
                tid,
                cells[0],
                cells[1],
            )
            n += 1
    assert n == 63
    last = sec[sec.index("Other printed numbers") :]
    abl = paper.data["fine_tune_cot"]["ablations"]
    assert [float(x) for x in re.findall(r"\d+\.\d\d", last)] == [
        *abl["teacher"]["values"].values(),
        *(p["value"] for p in abl["data_size"]["points"]),
    ]


def test_lookup_exact_stand_in_and_missing(paper):
    look = paper.lookup
    c = look(method="fine_tune_cot", student="t5-small", benchmark="multiarith", D=1)
    assert c.value == 5.56 and c.table == "tab:performance_t5" and c.exact
    # a student=hf run is matched by its checkpoint's base name
    c = look(
        method="vanilla_ft", student="hf", student_model="openai-community/gpt2-medium", benchmark="coin_flip"
    )
    assert c.value == 55.33
    # diverse reasoning matches only at the paper's D for the task (64 for MultiArith, 8 elsewhere)
    assert (
        look(method="diverse_reasoning", student="flan-t5-large", benchmark="multiarith", D=64).value == 20.00
    )
    assert look(method="diverse_reasoning", student="flan-t5-large", benchmark="multiarith", D=8) is None
    assert (
        look(method="diverse_reasoning", student="flan-t5-large", benchmark="multiarith", D=1).value == 14.44
    )
    assert look(method="few_shot_cot", student="gpt2", benchmark="tracking_shuffled_objects") is None  # '-'
    assert look(method="fine_tune_cot", student="Qwen2.5-0.5B", benchmark="gsm8k", D=1) is None
    # embedded: the real task's number for the paper student of the same size rank, marked as a stand-in
    c = look(
        method="vanilla_ft",
        student="tiny_small",
        benchmark="embedded_coin_flip",
        task="coin_flip",
        embedded=True,
        experiment="fine_tune_cot/main",
    )
    assert c.value == 60.00 and c.stand_in == ("task", "student") and "gpt2 124M" in c.student
    c = look(
        method="vanilla_ft",
        student="tiny",
        benchmark="embedded_coin_flip",
        task="coin_flip",
        embedded=True,
        experiment="fine_tune_cot/t5",
    )
    assert c.value == 100.00 and c.table == "tab:performance_t5"
    assert (
        look(
            method="vanilla_ft",
            student="tiny",
            benchmark="embedded_coin_flip",
            task="coin_flip",
            embedded=True,
            experiment=None,
        )
        is None
    )  # no stand-in rule without an experiment
    # data size: curie's Date points stand in for a student without its own
    c = look(
        method="diverse_reasoning",
        student="flan-t5-base",
        benchmark="date_understanding",
        D=8,
        n_shot=32,
        experiment="fine_tune_cot/data_size",
    )
    assert c.value == 35.14 and c.stand_in == ("student",)
    # ... but not for embedded runs, whose size is their n_train (no published point to stand in)
    assert (
        look(method="diverse_reasoning", student="tiny", benchmark="embedded_coin_flip", task="coin_flip",
             embedded=True, D=8, experiment="fine_tune_cot/data_size")
        is None
    )
    # SGFT: secondary, by guide and response model names
    c = look(
        method="sgft",
        student="hf->hf",
        student_model="Qwen/Qwen2-7B-Instruct",
        response_model="THUDM/chatglm3-6b",
        benchmark="gsm8k",
    )
    assert c.value == 48.3 and c.secondary and not c.exact


# --- bootstrap ----------------------------------------------------------------------------------------------
def test_bootstrap_is_seeded_and_sensible():
    import numpy as np

    a = bootstrap_ci([0.5, 0.6], [100, 100], rng=np.random.default_rng(1))
    b = bootstrap_ci([0.5, 0.6], [100, 100], rng=np.random.default_rng(1))
    assert a == b and a[0] < 0.55 < a[1]
    one = bootstrap_ci([0.3], [50], rng=np.random.default_rng(0))
    assert one[0] < 0.3 < one[1]  # one seed: the test-question interval (binomial) is not empty
    assert bootstrap_ci([0.0], [50]) == (0.0, 0.0)
    wide = bootstrap_ci([0.3], [20], rng=np.random.default_rng(0))
    assert wide[1] - wide[0] > one[1] - one[0]  # fewer test questions, wider interval
    # without question counts only the seeds are resampled
    lo, hi = bootstrap_ci([0.2, 0.4, 0.6], [None, None, None], rng=np.random.default_rng(0))
    assert 0.2 <= lo < 0.4 < hi <= 0.6


def test_difference_interval_is_the_effect_with_its_uncertainty():
    import numpy as np

    from sgft_lab.report import bootstrap_diff_ci

    d, lo, hi = bootstrap_diff_ci([0.9, 0.8, 0.85], [100] * 3, [0.5, 0.45, 0.55], [100] * 3,
                                  rng=np.random.default_rng(0))
    assert d == pytest.approx(0.35) and 0.2 < lo < d < hi < 0.5
    # the sign follows the order of the arms; equal arms straddle zero
    neg = bootstrap_diff_ci([0.5, 0.45, 0.55], [100] * 3, [0.9, 0.8, 0.85], [100] * 3,
                            rng=np.random.default_rng(0))
    assert neg[0] == pytest.approx(-0.35) and neg[2] < 0
    same = bootstrap_diff_ci([0.5] * 3, [100] * 3, [0.5] * 3, [100] * 3, rng=np.random.default_rng(0))
    assert same[1] < 0 < same[2]
    # more test questions: a narrower interval
    small = bootstrap_diff_ci([0.6], [30], [0.4], [30], rng=np.random.default_rng(0))
    big = bootstrap_diff_ci([0.6], [3000], [0.4], [3000], rng=np.random.default_rng(0))
    assert big[2] - big[1] < (small[2] - small[1]) / 5


# --- collecting and aggregating the fixture -----------------------------------------------------------------
def _raw(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))]


def write_run(d: Path, *, accuracy: float, strict: float | None = None, protocol: str = "clean",
              selection: str = "dev_selected", benchmark: str = "embedded_arithmetic", seed: int = 0,
              method: str = "fine_tune_cot", n: int = 40) -> Path:
    """A minimal valid results.json (schema 2) with one test entry."""
    d.mkdir(parents=True, exist_ok=True)
    res = {"schema_version": 2,
           "run": {"method": method, "benchmark": benchmark, "student": "tiny", "seed": seed, "overrides": [],
                   "run_dir": str(d), "teacher": "reference"},
           "metrics": {"accuracy": accuracy}, "data": {}, "models": {}, "details": {},
           "teacher": {"calls": 0, "cache_hits": 0},
           "entries": [{"system": "student", "split": "test", "accuracy": accuracy, "n": n, "selection": selection,
                        "epoch": None if selection == "single" else 1, "round": None, "metric": "ftcot",
                        "strict_accuracy": strict, "protocol": protocol}]}
    (d / "results.json").write_text(json.dumps(res))
    return d


def test_fixture_table_means_and_selections(paper):
    runs = load_runs([FTC])
    raw = _raw(FTC)
    assert len(runs) == len(raw) >= 8
    auto = {"paper": "best_test_epoch", "clean": "dev_selected"}
    for selection in ("auto", "best_test_epoch", "last_epoch"):
        table = build_table(entries(runs, selection), selection=selection, paper=paper)
        assert table.rows
        for row in table.rows:
            for bench, cell in row.cells.items():
                # the cell mean is the mean over seeds of exactly this selection's numbers
                want = [
                    e
                    for r in raw
                    if (r["run"]["method"], r["run"]["student"], r["run"]["benchmark"])
                    == (row.method, row.student, bench)
                    and r["data"].get("rationales_per_question") == row.D
                    for e in r["entries"]
                    if (e["system"], e["split"]) == ("student", "test")
                    and e["selection"] == (auto[e["protocol"]] if selection == "auto" else selection)
                ]
                assert len(want) == len(cell.seeds)
                assert cell.mean == pytest.approx(100 * sum(e["accuracy"] for e in want) / len(want))
                assert cell.strict == pytest.approx(100 * sum(e["strict_accuracy"] for e in want) / len(want))
                assert cell.low <= cell.mean <= cell.high
                assert row.protocol == "paper" and cell.selection == ("best_test_epoch" if selection == "auto"
                                                                      else selection)
    # best_test_epoch >= last_epoch in every run (selection on test is optimistic)
    for r in raw:
        assert r["metrics"]["best_test_epoch"]["accuracy"] >= r["metrics"]["last_epoch"]["accuracy"]


def test_selections_are_never_mixed_and_protocols_never_merged(tmp_path, paper):
    """A run without the chosen selection's number leaves its cell out instead of falling back; auto takes
    each run's protocol's own number; a paper and a clean run of the same cell are two rows."""
    write_run(tmp_path / "clean", accuracy=0.25, protocol="clean", selection="dev_selected")
    write_run(tmp_path / "paper", accuracy=0.75, protocol="paper", selection="best_test_epoch")
    runs = load_runs([tmp_path])
    t = build_table(entries(runs, "dev_selected"), selection="dev_selected", paper=paper)
    assert [(r.protocol, c.mean) for r in t.rows for c in r.cells.values()] == [("clean", 25.0)]
    assert t.missing == 1 and "have no `dev_selected` number" in to_markdown(t)
    t = build_table(entries(runs, "auto"), selection="auto", paper=paper)
    assert sorted((r.protocol, c.mean, c.selection) for r in t.rows for c in r.cells.values()) == [
        ("clean", 25.0, "dev_selected"), ("paper", 75.0, "best_test_epoch")]


def test_duplicate_seeds_keep_newest_and_by_splits(tmp_path, paper, capsys):
    src = next(FTC.rglob("results.json")).parent
    for name, lr in (("a", 0.001), ("b", 0.002)):
        shutil.copytree(src, tmp_path / name)
        cfg = (tmp_path / name / "config.yaml").read_text()
        (tmp_path / name / "config.yaml").write_text(re.sub(r"\n  lr: [^\n]+", f"\n  lr: {lr}", cfg, count=1))
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    for e in res["entries"]:
        if (e["split"], e["selection"]) == ("test", "best_test_epoch"):
            e["accuracy"] = 0.75
    (tmp_path / "b" / "results.json").write_text(json.dumps(res))
    runs = load_runs([tmp_path])
    t = build_table(entries(runs, "best_test_epoch"), selection="best_test_epoch", paper=paper)
    assert "two runs" in capsys.readouterr().err
    (row,) = t.rows
    (cell,) = row.cells.values()
    assert len(cell.seeds) == 1
    t = build_table(
        entries(runs, "best_test_epoch", by=["trainer.lr"]),
        selection="best_test_epoch",
        paper=paper,
        by=["trainer.lr"],
    )
    assert sorted(r.by for r in t.rows) == [(0.001,), (0.002,)]
    assert [c.mean for r in sorted(t.rows, key=lambda r: r.by) for c in r.cells.values()][1] == pytest.approx(
        75.0
    )


def test_sgft_and_fdd_entries(paper):
    runs = load_runs([FIXTURE / "sgft_grid"])
    es = entries(runs, "best_test_epoch")
    sgft = [e for e in es if e.label == "sgft"]
    assert len(sgft) == len(runs) == 4 and all(e.single_evaluation and "->" in e.student for e in sgft)
    assert {e.label for e in es} >= {"sgft", "sgft:response_zero_shot"}
    runs = load_runs([FIXTURE / "fdd_rounds"])
    es = entries(runs)
    for run in runs:
        rounds = [e for e in es if e.run_dir == str(run.path.parent)]
        details = run.results["details"]["rounds"]
        assert [e.round for e in rounds] == [d["round"] for d in details]
        assert [e.label for e in rounds] == [f"{run.results['run']['method']} round {d['round']}" for d in details]
        # each round's model is selected on the round's own dev split, then read once on test
        assert [(e.accuracy, e.selection, e.protocol) for e in rounds] == [
            (d["metrics"]["accuracy"], "dev_selected", "clean") for d in details]
    t = build_table(es, paper=paper)
    assert all(c.paper is None for r in t.rows for c in r.cells.values())  # FDD has no published numbers


# --- the CLI ------------------------------------------------------------------------------------------------
def test_cli_markdown_csv_tex(tmp_path, capsys):
    assert report_main([str(FTC)]) == 0
    md = capsys.readouterr().out
    assert "selection `auto`" in md and "95% bootstrap" in md and "| paper |" in md
    assert re.search(r"\d+\.\d\d \[\d+\.\d, \d+\.\d\] · p† \d+\.\d\d · Δ [+-]\d+\.\d\d", md), md
    assert "(≈Coin)" in md and "stand-in" in md and "Teacher cost per cell" in md
    out = tmp_path / "t.csv"
    assert report_main([str(FTC), "--format", "csv", "--out", str(out), "--selection", "last_epoch"]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert rows and all((r["selection"], r["protocol"]) == ("last_epoch", "paper") for r in rows)
    assert all(float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]) for r in rows)
    with_paper = [r for r in rows if r["paper"]]
    assert with_paper and all(
        float(r["diff"]) == pytest.approx(float(r["mean"]) - float(r["paper"]), abs=1e-3) for r in with_paper
    )
    assert all(r["cost_usd"] != "" for r in rows if r["method"] == "fine_tune_cot")
    assert report_main([str(FIXTURE), "--format", "tex"]) == 0
    tex = capsys.readouterr().out
    assert tex.startswith("\\begin{table}") and "\\bottomrule" in tex and "sgft" in tex


def test_cli_errors_name_the_file(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 1
    assert "no results.json" in capsys.readouterr().err
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "results.json").write_text('{"method": "x",\n oops}')
    assert report_main([str(tmp_path)]) == 2
    assert f"{bad / 'results.json'}:2" in capsys.readouterr().err


def test_a_results_file_of_another_schema_is_refused_in_one_line(tmp_path, capsys):
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.json").write_text(json.dumps({"method": "fine_tune_cot", "metrics": {"accuracy": 0.5}}))
    assert report_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "schema version 1" in err and str(old / "results.json") in err
    broken = json.loads(next(FTC.rglob("results.json")).read_text())
    broken["entries"][0]["selection"] = "best_guess"
    (old / "results.json").write_text(json.dumps(broken))
    assert report_main([str(tmp_path)]) == 2
    assert "entries[0]" in capsys.readouterr().err


def test_the_report_reads_entries_not_method_names(tmp_path, paper):
    """A method the report has never heard of, with systems and rounds of its own, gets its rows."""
    res = json.loads(next(FTC.rglob("results.json")).read_text())
    res["run"]["method"] = "brand_new"
    res["entries"] = [
        {"system": "student", "split": "test", "accuracy": 0.5, "n": 10, "selection": "single", "epoch": None,
         "round": None, "metric": "ftcot", "protocol": "paper"},
        {"system": "helper", "split": "test", "accuracy": 0.25, "n": 10, "selection": "last_epoch", "epoch": 2,
         "round": 1, "metric": "ftcot", "protocol": "paper"}]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(res))
    t = build_table(entries(load_runs([tmp_path]), "last_epoch"), selection="last_epoch", paper=paper)
    assert [(r.label, c.mean) for r in t.rows for c in r.cells.values()] == [
        ("brand_new", 50.0), ("brand_new:helper round 1", 25.0)]


def test_cli_starts_without_torch():
    code = (
        "import sys, sgft_lab.report.__main__ as m; sys.argv=['x','--help']\n"
        "try: m.main()\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr
    assert "--selection" in p.stdout


def test_an_entry_on_another_benchmark_fills_that_benchmarks_column(tmp_path):
    """Out-of-domain tests (FDD): an entry naming another benchmark is that benchmark's cell in the same row."""
    d = write_run(tmp_path / "r", accuracy=0.5, protocol="clean", method="fdd", benchmark="gsm8k")
    res = json.loads((d / "results.json").read_text())
    res["entries"].append({**res["entries"][0], "accuracy": 0.25, "benchmark": "svamp"})
    (d / "results.json").write_text(json.dumps(res))
    t = build_table(entries(load_runs([tmp_path])), paper=None)
    (row,) = t.rows
    assert {b: c.mean for b, c in row.cells.items()} == {"gsm8k": 50.0, "svamp": 25.0}
    res["entries"][1]["benchmark"] = 7
    (d / "results.json").write_text(json.dumps(res))
    with pytest.raises(ValueError, match=r"entries\[1\]\.benchmark"):
        load_runs([tmp_path])
