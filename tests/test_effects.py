"""The effects presets (conf/experiment/effects/, experiments/effects/README.md): each is a 3-seed embedded
sweep sized for a 2-core CPU, sweeps the axis its effect is about, and runs end to end (tiny sizes here)."""

from __future__ import annotations

import pytest
from collections import Counter

from conftest import REPO, TINY, results_of, run_sgft
from test_experiments import CONF, compose, sweep_jobs

from sgft_lab.config import validate

EFFECTS = sorted(p.stem for p in (CONF / "experiment" / "effects").glob("*.yaml"))
AXES = {  # what each effect varies, besides the seed
    "ft_cot_difficulty": {"method": {"fine_tune_cot", "vanilla_ft"}, "benchmark.difficulty": {"2", "3", "4"}},
    "diverse_reasoning": {"method.diverse_samples": {"1", "2", "4", "8"}},
    "fdd": {"method.feedback": {"True", "False"}},
}


def test_the_four_effects_have_presets():
    assert {"ft_cot_difficulty", "diverse_reasoning", "fdd", "sgft"} <= set(EFFECTS)


@pytest.mark.parametrize("name", EFFECTS)
def test_effect_preset_is_a_three_seed_embedded_sweep_that_fits_two_cores(name):
    hc = compose([f"+experiment=effects/{name}"], hydra_cfg=True)
    jobs = [dict(a.split("=", 1) for a in j) for j in sweep_jobs(hc)]
    assert {j["seed"] for j in jobs} == {"0", "1", "2"}
    axes = {k: {j[k] for j in jobs} for k in jobs[0] if k != "seed"}
    if name in AXES:
        assert axes == AXES[name]
    assert len(jobs) == 3 * len({tuple(sorted((k, j[k]) for k in j if k != "seed")) for j in jobs})
    # Two processes of one thread each: no more than the machine's two cores.
    n_jobs = hc.hydra.launcher.get("n_jobs", 1)
    for job in jobs:
        cfg = validate(compose([f"+experiment=effects/{name}", *(f"{k}={v}" for k, v in job.items())],
                               hydra_cfg=True))
        assert cfg.benchmark.source == "embedded" and cfg.teacher.name == "reference"
        assert cfg.tier is None and cfg.trainer.accelerator == "cpu"
        assert n_jobs * cfg.trainer.threads <= 2


SMOKE = {  # (command-line overrides that shrink the sweep, the systems its results must hold)
    "ft_cot_difficulty": (["benchmark.difficulty=3", "seed=0"], {("student", "fine_tune_cot"),
                                                                 ("student", "vanilla_ft")}),
    "diverse_reasoning": (["method.diverse_samples=1,2", "seed=0"], {("student", "diverse_reasoning")}),
    "fdd": (["seed=0", "method.rounds=1", "method.max_new_per_round=8", "method.epochs_per_round=1",
             "method.round0_epochs=2"],
            {("student", "fdd_pot"), ("no_feedback", "fdd_pot")}),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_effect_sweep_runs_end_to_end_at_tiny_sizes(name, tmp_path):
    over, systems = SMOKE[name]
    run_sgft(["-m", f"+experiment=effects/{name}", "hydra.launcher.n_jobs=1", *TINY, *over], tmp_path)
    results = results_of(tmp_path / "outputs")
    assert {(e["system"], r["run"]["method"]) for r in results for e in r["entries"]
            if e["split"] == "test" and e.get("benchmark") is None} == systems
    if name == "ft_cot_difficulty":  # the effects notebook draws the figure from this sweep
        import os
        import subprocess
        import sys

        from conftest import REPO

        env = dict(os.environ, SGFT_LAB_RESULTS=str(tmp_path / "outputs"), SGFT_LAB_FIGURES=str(tmp_path / "fig"),
                   PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.run([sys.executable, str(REPO / "notebooks" / "effects_figures.py")], env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        assert "| difficulty 3: fine_tune_cot - vanilla_ft |" in p.stdout
        assert (tmp_path / "fig" / "effects_ft_cot_difficulty.png").read_bytes()[:4] == b"\x89PNG"
    if name == "diverse_reasoning":
        assert sorted(r["data"]["rationales_per_question"] for r in results) == [1, 2]
    if name == "fdd":  # round 0 and the feedback round, on test and (the tuning read) the benchmark's val split
        import json

        from sgft_lab.benchmarks.embedded import load_embedded

        for r in results:
            test = [e for e in r["entries"] if e["split"] == "test"]
            assert {(e["round"], e["benchmark"]) for e in test} == {  # in domain and four operations
                (r, b) for r in (0, 1) for b in (None, "embedded_arithmetic_fourstep")}
            val = [e for e in r["entries"] if e["split"] == "val" and e["benchmark"] == "embedded_arithmetic"]
            assert {e["round"] for e in val} == {0, 1} and all(e["n"] == 8 for e in val)
            # round 0 trains method.round0_epochs (2), the feedback round epochs_per_round (1): the last epoch
            # is the one evaluated (0-based), and the feedback round continues from round 0's student
            assert [b["history"][-1]["epoch"] for b in r["details"]["rounds"]] == [1, 0]
        # The in-domain problems mix one to three operations in every split; the round-0 pool is train.
        from omegaconf import OmegaConf

        from sgft_lab.config import BenchmarkConfig

        run_dir = next((tmp_path / "outputs").rglob("round_0")).parent.parent
        pool = [json.loads(x) for x in (run_dir / "rounds" / "round_0" / "dataset.jsonl").read_text().splitlines()]
        bench = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BenchmarkConfig),
                                                    OmegaConf.load(run_dir / "config.yaml").benchmark))
        splits = load_embedded(bench)
        assert {x.id for x in splits.train} == {p["id"] for p in pool}
        assert sorted({x.meta["difficulty"] for x in splits.train + splits.test}) == [1, 2, 3]
        for rnd in (0, 1):  # the val read is the benchmark's val split, not the round's dev split
            rows = (run_dir / "rounds" / f"round_{rnd}" / "predictions" / "val_embedded_arithmetic.jsonl").read_text()
            assert [json.loads(x)["id"] for x in rows.splitlines()] == [x.id for x in splits.val]
        # report.fdd_difficulty: each round's val accuracy by difficulty, the feedback's pool solve rate by
        # the training problem's difficulty (FDD only: the control reads no student), the kept problems' kinds
        from sgft_lab.report import fdd_difficulty
        from sgft_lab.report.collect import load_runs

        diff = {x.id: x.meta["difficulty"] for x in splits.train + splits.val}
        for run in load_runs([tmp_path / "outputs"]):
            rounds = fdd_difficulty.run_rounds(run, "val")
            rd = run.path.parent / "rounds"
            assert [x.round for x in rounds] == [0, 1]
            for x in rounds:
                rows = [json.loads(v) for v in (rd / f"round_{x.round}" / "predictions" /
                                                "val_embedded_arithmetic.jsonl").read_text().splitlines()]
                assert x.split == {d: (sum(r["correct"] for r in rows if diff[r["id"]] == d),
                                       sum(diff[r["id"]] == d for r in rows)) for d in (1, 2, 3)}
            fb = [json.loads(v) for v in (rd / "round_1" / "feedback.jsonl").read_text().splitlines()]
            gen = [json.loads(v) for v in (rd / "round_1" / "generated.jsonl").read_text().splitlines()]
            assert rounds[0].pool == {} and not rounds[0].kept
            assert dict(rounds[1].kept) == dict(Counter(c["kind"] for c in gen if c["status"] == "kept"))
            if run.results["details"]["feedback"]:
                assert sum(n for _, n in rounds[1].pool.values()) == len(fb) == 8
                assert rounds[1].pool == {d: (sum(bool(r["correct"]) for r in fb if diff[r["id"]] == d),
                                              sum(diff[r["id"]] == d for r in fb))
                                          for d in sorted({diff[r["id"]] for r in fb})}
            else:
                assert rounds[1].pool == {} and set(rounds[1].kept) == {"similar"}
        out = subprocess_main(fdd_difficulty.main, [str(tmp_path / "outputs"), "--split", "val"])
        assert out.count("### seed 0, FDD:") == 1 and out.count("### seed 0, no-feedback control:") == 1
        assert out.count("| 1 |") == 2


def subprocess_main(main, argv) -> str:
    """``main(argv)``'s stdout (it must return 0)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


def test_fdd_difficulty_refuses_non_embedded_and_non_fdd_runs(tmp_path, capsys):
    from sgft_lab.report import fdd_difficulty
    from sgft_lab.report.collect import Run

    run = Run({"run": {}, "details": {"rounds": [{}]}}, {"benchmark": {"name": "gsm8k", "source": "local"}},
              tmp_path / "r" / "results.json", 0.0)
    with pytest.raises(ValueError, match="'gsm8k' is not embedded"):
        fdd_difficulty.run_rounds(run)
    assert fdd_difficulty.main([str(tmp_path / "missing")]) == 2
    assert "no such run or sweep directory" in capsys.readouterr().err
    fixtures = sorted((REPO / "tests" / "fixtures" / "results").rglob("results.json"))
    other = next(f for f in fixtures if "fdd" not in str(f))  # a run of another method
    assert fdd_difficulty.main([str(other)]) == 2
    assert "no FDD run" in capsys.readouterr().err
    fdd = next(f for f in fixtures if "fdd" in str(f))  # its results.json only: the rounds' files are not kept
    assert fdd_difficulty.main([str(fdd)]) == 2
    assert "no test read of round 0 (the round's files are gone)" in capsys.readouterr().err


# --- the effects' comparisons (sgft_lab/report/effects.py) ---------------------------------------------------
def _entry(method="fine_tune_cot", system="student", acc=0.5, seed=0, **kw):
    from sgft_lab.report.collect import Entry

    return Entry(method=method, student="tiny", benchmark=kw.pop("benchmark", "embedded_arithmetic"), seed=seed,
                 accuracy=acc, n=100, system=system, **kw)


def test_difficulty_effect_pairs_methods_at_each_difficulty():
    from sgft_lab.report.effects import ft_cot_difficulty

    es = [_entry("fine_tune_cot", acc=0.9 + 0.01 * s, seed=s, by=(4,)) for s in range(3)]
    es += [_entry("vanilla_ft", acc=0.5, seed=s, by=(4,)) for s in range(3)]
    es += [_entry("vanilla_ft", acc=0.9, seed=s, by=(2,)) for s in range(3)]  # no Fine-tune-CoT at 2: no row
    (c,) = ft_cot_difficulty(es)
    d, lo, hi = c.diff()
    assert c.label.startswith("difficulty 4") and d == pytest.approx(0.41) and 0.3 < lo < d < hi < 0.5


def test_diverse_effect_compares_each_d_with_one():
    from sgft_lab.report.effects import diverse_reasoning

    es = [_entry(acc=a, seed=s, D=d) for d, a in ((1, 0.1), (2, 0.2), (8, 0.4)) for s in range(3)]
    assert [(c.label, round(c.diff()[0], 3)) for c in diverse_reasoning(es)] == [("D=2 - D=1", 0.1),
                                                                                  ("D=8 - D=1", 0.3)]


def test_fdd_effect_compares_the_same_round_in_domain_first_then_ood():
    from sgft_lab.report.effects import fdd

    es = [_entry("fdd", system=s, acc=a, round=r, seed=0, benchmark=b)
          for b in ("embedded_arithmetic", "embedded_arithmetic_deeper") for r in (0, 1)
          for s, a in (("student", 0.3 + 0.1 * r), ("no_feedback", 0.3))]
    comps = fdd(es)
    assert [c.label for c in comps] == [
        "embedded_arithmetic round 0: FDD - control", "embedded_arithmetic round 1: FDD - control",
        "embedded_arithmetic_deeper round 0: FDD - control", "embedded_arithmetic_deeper round 1: FDD - control"]
    assert round(comps[1].diff()[0], 3) == 0.1


def test_sgft_effect_compares_guidance_with_the_best_alone_baseline():
    from sgft_lab.report.effects import sgft

    es = [_entry("sgft", system=s, acc=a, seed=k) for k in range(3)
          for s, a in (("student", 0.6), ("response_zero_shot", 0.2), ("response_zero_shot_cot", 0.3),
                       ("transfer_student", 0.5), ("transfer_response_zero_shot", 0.1))]
    assert [(c.label, round(c.diff()[0], 3)) for c in sgft(es)] == [
        ("student - response_zero_shot_cot", 0.3), ("transfer_student - transfer_response_zero_shot", 0.4)]


def test_val_split_reads_the_benchmarks_val_not_fdds_dev_split(tmp_path):
    """report.effects --split val (the tuning split): FDD's in-domain val reads (method.read_val, entries
    naming the run's benchmark) are compared; its per-round dev-split entries (benchmark None) are not."""
    from pathlib import Path

    from sgft_lab.report.collect import Run, entries
    from sgft_lab.report.effects import fdd, main

    def run(system, seed, val, dev, test):
        es = [{"system": system, "split": s, "accuracy": a, "n": n, "selection": "dev_selected", "epoch": 3,
               "round": 1, "metric": "fdd_numeric", "strict_accuracy": a, "protocol": "clean", "benchmark": b}
              for s, a, n, b in (("val", dev, 20, None), ("val", val, 100, "embedded_arithmetic"),
                                 ("test", test, 100, None))]
        return Run({"run": {"experiment": "effects/fdd", "method": "fdd_pot", "benchmark": "embedded_arithmetic",
                            "seed": seed, "student": "tiny", "task": "multiarith"}, "entries": es}, {}, Path(f"/x/{system}{seed}/r.json"), 0)

    runs = [run("student", s, 0.7, 0.1, 0.4) for s in range(3)] + [run("no_feedback", s, 0.5, 0.9, 0.6)
                                                                    for s in range(3)]
    val = entries(runs, split="val")
    assert sorted((e.system, e.accuracy, e.n, e.benchmark) for e in val)[:1] == [
        ("no_feedback", 0.5, 100, "embedded_arithmetic")]  # in domain (the run's benchmark), the dev ones left out
    assert {e.task for e in val} == {"multiarith"}  # the run's own task, not an out-of-domain benchmark's
    (c,) = fdd(val)
    assert c.label == "embedded_arithmetic round 1: FDD - control" and round(c.diff()[0], 3) == 0.2
    (t,) = fdd(entries(runs))
    assert round(t.diff()[0], 3) == -0.2  # the test split as before
    with pytest.raises(ValueError, match="unknown split"):
        entries(runs, split="dev")
    assert main([str(tmp_path), "--split", "val"]) == 1  # nothing there: one line, exit 1


# --- paired intervals (report.table.bootstrap_paired_diff_ci) ---------------------------------------------------
def test_paired_interval_of_a_system_with_itself_is_zero_and_narrower_than_independent():
    from sgft_lab.report.table import bootstrap_diff_ci, bootstrap_paired_diff_ci

    same = ["1101001110" * 10, "0111011010" * 10, "1100110011" * 10]
    assert bootstrap_paired_diff_ci(same, same) == (0.0, 0.0, 0.0)
    lo, hi = bootstrap_diff_ci([0.6, 0.6, 0.6], [100] * 3, [0.6, 0.6, 0.6], [100] * 3)[1:]
    assert lo < -0.05 and hi > 0.05  # independent resampling: a wide interval around an exact zero
    # B solves what A solves except 6 questions per seed: +6 points, paired interval well above zero
    b = [s[:94] + "000000" for s in ["1" * 100] * 3]
    a = ["1" * 100] * 3
    d, lo, hi = bootstrap_paired_diff_ci(a, b)
    assert d == pytest.approx(0.06) and 0.02 < lo <= d <= hi < 0.11
    # Seeds disagreeing: A better at two seeds by 10 points, worse at one by 10: the interval spans zero
    mixed_a = ["1" * 60 + "0" * 40, "1" * 60 + "0" * 40, "1" * 50 + "0" * 50]
    mixed_b = ["1" * 50 + "0" * 50, "1" * 50 + "0" * 50, "1" * 60 + "0" * 40]
    d, lo, hi = bootstrap_paired_diff_ci(mixed_a, mixed_b)
    assert d == pytest.approx(0.1 / 3) and lo < 0 < hi
    with pytest.raises(ValueError, match="same questions"):
        bootstrap_paired_diff_ci(["11"], ["1"])


def test_comparisons_pair_only_on_the_same_questions_and_seeds():
    from sgft_lab.report.effects import Arm, Comparison

    def arm(outs, qs="q1", seeds=(0, 1, 2)):
        return Arm("x", [o.count("1") / len(o) for o in outs], [len(o) for o in outs], list(seeds),
                   [(o, qs) for o in outs])

    a, b = ["1" * 10] * 3, ["1" * 9 + "0"] * 3
    assert Comparison("c", arm(a), arm(b)).paired
    d, lo, hi = Comparison("c", arm(a), arm(b)).diff()
    assert d == pytest.approx(0.1) and lo >= 0 and hi > d  # A never worse on any question: no negative replicate
    assert not Comparison("c", arm(a), arm(b, qs="other")).paired  # other questions: independent
    assert not Comparison("c", arm(a), arm(b, seeds=(0, 1, 3))).paired  # other seeds
    no = Arm("x", [1.0] * 3, [10] * 3, [0, 1, 2], [(None, None)] * 3)  # a run written before outcomes
    c = Comparison("c", arm(a), no)
    assert not c.paired and c.diff()[0] == pytest.approx(0.0)


def test_entries_keep_outcomes_in_question_order_and_results_check_them():
    from sgft_lab.run import check_results, question_fingerprint, rows_entry

    rows = [{"id": "t:0", "correct": True}, {"id": "t:1", "correct": False}, {"id": "t:2", "correct": True}]
    e = rows_entry(rows)
    assert (e.outcomes, e.questions) == ("101", question_fingerprint(["t:0", "t:1", "t:2"]))
    assert question_fingerprint(["t:1", "t:0", "t:2"]) != e.questions
    import json

    from conftest import REPO

    fixture = next((REPO / "tests" / "fixtures" / "results").rglob("results.json"))
    res = json.loads(fixture.read_text())
    check_results({**res, "entries": [e.to_dict()]}, "r.json")
    bad = dict(e.to_dict(), outcomes="111")  # does not match accuracy 2/3
    with pytest.raises(ValueError, match="outcomes"):
        check_results({**res, "entries": [bad]}, "r.json")


def test_bad_inputs_end_in_one_line_with_status_2(tmp_path, capsys):
    from sgft_lab.config import ConfigError
    from sgft_lab.report.effects import main

    with pytest.raises(ConfigError, match=r"`benchmark.difficulty_mix`: 0; allowed"):
        validate(compose(["benchmark.difficulty_mix=[1,0]"]))
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing: no such run or sweep directory" in err[0]
