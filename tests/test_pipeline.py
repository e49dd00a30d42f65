"""End to end: the Fine-tune-CoT pipeline on the embedded default with tiny settings; the run lifecycle every
method shares (results schema, W&B summary, loggers closed when a method raises, resume)."""

import time
from pathlib import Path

import pytest

from conftest import TINY, compose, results_of, run_sgft, wandb_summary
from sgft_lab.io import read_jsonl
from sgft_lab.run import check_results, question_fingerprint

SGFT_TINY = [  # tests/test_sgft.py's settings: a tiny guide, a tiny response model, short outputs
    "benchmark.n_train=32", "benchmark.n_test=6", "method.n_sg=null",
    "method.response.hidden_size=32", "method.response.num_layers=1", "method.response.num_heads=2",
    "method.response.intermediate_size=64", "method.response.vocab_size=300", "method.response.max_new_tokens=8",
    "method.response_pretrain.n_questions=30", "method.response_pretrain.max_epochs=1",
    "method.guide_max_new_tokens=40", "method.answer_max_new_tokens=40", "method.rationale_max_tokens=24",
    "method.answer_max_tokens=6", "method.lisa.layers=1", "method.lisa.interval=2",
]
FDD_TINY = ["benchmark.n_train=24", "method.epochs_per_round=1", "method.eval_every_n_epochs=null",
            "method.rounds=1", "method.max_new_per_round=null", "student.max_new_tokens=40"]


@pytest.mark.slow
def test_fine_tune_cot_end_to_end_and_cached_rerun(tmp_path: Path):
    run_sgft(TINY, tmp_path)
    (res,) = results_of(tmp_path / "outputs" / "runs")
    ident = res["run"]
    assert (ident["method"], ident["teacher"], ident["student"]) == ("fine_tune_cot", "reference", "tiny")
    assert res["metrics"]["protocol"] == "clean" and "best_test_epoch" not in res["metrics"]
    # Every train question was sent to the teacher twice (rationale + answer), nothing came from the cache.
    n = res["data"]["n_train_questions"]
    assert res["teacher"]["calls"] == 2 * n and res["teacher"]["cache_hits"] == 0
    f = res["details"]["filter"]
    assert 0 < f["kept"] < f["total"] == n == 48  # teacher.error_rate 0.15: the filter drops some
    assert res["data"]["n_train_samples"] == f["kept"]
    run_dir = Path(ident["run_dir"])
    for name in ("config.yaml", "overrides.txt", "metrics.csv", "teacher/samples.jsonl", "data/train.jsonl",
                 "checkpoints/last.ckpt", "checkpoints/best.pt"):
        assert (run_dir / name).exists(), name
    # Clean protocol: validation after every epoch, test never looked at until the selected epoch's model
    # answers it once.
    val = {e: read_jsonl(run_dir / "predictions" / f"epoch_{e:03d}.jsonl") for e in (0, 1)}
    assert all({r["split"] for r in rows} == {"val"} for rows in val.values())
    assert set(val[0][0]) >= {"question", "completion", "extracted", "answer", "correct", "strict_correct"}
    acc = {e: sum(r["correct"] for r in rows) / len(rows) for e, rows in val.items()}
    best = max(acc, key=lambda e: (acc[e], -e))
    test = read_jsonl(run_dir / "predictions" / "test.jsonl")
    assert len(test) == 8 and {(r["split"], r["epoch"]) for r in test} == {("test", best)}
    (t,) = [e for e in res["entries"] if e["split"] == "test"]
    (v,) = [e for e in res["entries"] if e["split"] == "val"]
    assert t == {"system": "student", "split": "test", "accuracy": res["metrics"]["accuracy"], "n": 8,
                 "selection": "dev_selected", "epoch": best, "round": None, "metric": "ftcot",
                 "strict_accuracy": sum(r["strict_correct"] for r in test) / 8, "protocol": "clean",
                 "benchmark": None, "outcomes": "".join("1" if r["correct"] else "0" for r in test),
                 "questions": question_fingerprint([r["id"] for r in test])}
    assert t["accuracy"] == sum(r["correct"] for r in test) / 8 and v["accuracy"] == acc[best]
    # Training pairs carry the exact ft_cot_token format with the gold answer.
    pair = read_jsonl(run_dir / "data" / "train.jsonl")[0]
    assert pair["input"].endswith(" ###") and pair["label"].startswith(" ") and " --> " in pair["label"]

    # Same command again: every teacher answer comes from the cache, training resumes at its end.
    run_sgft(TINY, tmp_path)
    (res2,) = results_of(tmp_path / "outputs" / "runs")
    assert res2["teacher"]["calls"] == 0 and res2["teacher"]["cache_hits"] == 2 * n
    assert res2["resumed_from_checkpoint"] and res2["entries"] == res["entries"]


def _check_summary(res: dict) -> None:
    """The offline W&B run of ``res`` holds its headline accuracy and its entries in the summary."""
    check_results(res)
    (wb,) = Path(res["run"]["run_dir"]).glob("wandb/offline-run-*/run-*.wandb")
    summary = wandb_summary(wb)
    assert summary["accuracy"] == pytest.approx(res["metrics"]["accuracy"]), res["run"]["method"]
    for e in res["entries"]:
        where = e["system"] + (f"/round_{e['round']}" if e["round"] is not None else "") + \
            (f"/{e['benchmark']}" if e.get("benchmark") else "")
        assert summary[f"{e['split']}_accuracy/{where}/{e['selection']}"] == pytest.approx(e["accuracy"])
    assert summary["teacher_calls"] == res["teacher"]["calls"]


@pytest.mark.slow
def test_every_method_writes_the_result_schema_and_its_wandb_summary(tmp_path: Path, monkeypatch):
    """One run of each method (sweeps of methods sharing settings: a key of one method is an error for
    another), W&B offline: every results.json validates against the schema and every W&B run's summary holds
    the headline accuracy."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wb = ["logger=wandb", "logger.offline=true", "trainer.max_epochs=1"]
    run_sgft(["-m", "method=fine_tune_cot,diverse_reasoning,zero_shot_cot", "method.rationale_max_tokens=24",
              "method.answer_max_tokens=8", *TINY, *wb], tmp_path / "a")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # no key, no mode, logger.offline unset: offline, said so
    p = run_sgft(["-m", "method=vanilla_ft,zero_shot,few_shot_cot", "benchmark=embedded_coin_flip,embedded_last_letter",
                  *TINY, "logger=wandb", "trainer.max_epochs=1"], tmp_path / "b")
    assert p.stdout.count("no WANDB_API_KEY set, logging offline") == 6
    monkeypatch.setenv("WANDB_MODE", "offline")
    grid = results_of(tmp_path / "b" / "outputs" / "multirun")  # one sweep folder, one results.json per cell
    assert len(list((tmp_path / "b" / "outputs" / "multirun").iterdir())) == 1
    assert sorted((r["run"]["method"], r["run"]["benchmark"]) for r in grid) == sorted(
        (m, b) for m in ("vanilla_ft", "zero_shot", "few_shot_cot")
        for b in ("embedded_coin_flip", "embedded_last_letter"))
    assert all(r["teacher"]["calls"] == 0 for r in grid)
    run_sgft(["method=sgft", *TINY, *SGFT_TINY, *wb], tmp_path / "c")
    # FDD's own keys in a sweep over its two methods: through its preset, whose defaults choose an FDD method.
    run_sgft(["-m", "+experiment=fdd/rounds", "tier=embedded", "method=fdd,fdd_pot", "student=tiny", *TINY,
              *FDD_TINY, *wb], tmp_path / "d")
    results = [r for d in "abcd" for r in results_of(tmp_path / d / "outputs")]
    assert sorted({r["run"]["method"] for r in results}) == sorted(
        ["fine_tune_cot", "diverse_reasoning", "vanilla_ft", "zero_shot", "zero_shot_cot", "few_shot_cot",
         "sgft", "fdd", "fdd_pot"]) and len(results) == 12
    for res in results:
        _check_summary(res)
    by = {r["run"]["method"]: r for r in results}
    assert {e["system"] for e in by["sgft"]["entries"]} == {
        "student", "response_zero_shot", "response_zero_shot_cot", "teacher_sg", "cot_ft_x1"}
    assert {e["round"] for e in by["fdd"]["entries"]} == {0, 1}
    assert by["diverse_reasoning"]["data"]["rationales_per_question"] == 8  # the paper's D off MultiArith/SVAMP


class Boom(RuntimeError):
    pass


@pytest.mark.slow
def test_a_method_that_raises_closes_its_loggers_and_the_rerun_resumes(tmp_path: Path, monkeypatch):
    import wandb

    from sgft_lab.config import validate
    from sgft_lab.run import execute
    from sgft_lab.students.module import StudentModule

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = validate(compose([*TINY, "trainer.max_epochs=2", "logger=wandb", "logger.offline=true",
                            f"paths.output_dir={tmp_path}"]))
    real_step = StudentModule.training_step

    def dying(self, batch, batch_idx):
        if self.trainer.current_epoch == 1 and batch_idx == 2:  # mid-epoch 2, after epoch 1's checkpoint
            raise Boom("killed mid-run")
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(StudentModule, "training_step", dying)
    with pytest.raises(Boom):
        execute(cfg, run_dir=tmp_path / "run")
    assert wandb.run is None  # the run's W&B run was finished (marked failed), not left open
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "results.json").exists()
    epoch0 = run_dir / "predictions" / "epoch_000.jsonl"
    before = epoch0.stat().st_mtime_ns
    (first,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")

    def exits():
        return [r.exit.exit_code for r in __import__("conftest").wandb_records(first)
                if r.WhichOneof("record_type") == "exit"]

    # W&B's service process may write the exit record a moment after finish() returns (seen once in CI under
    # load): wait for it, up to 20 s, before reading the exit code.
    deadline = time.monotonic() + 20
    while not exits() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert exits() == [1]

    monkeypatch.setattr(StudentModule, "training_step", real_step)
    res = execute(cfg, run_dir=run_dir)
    assert res["resumed_from_checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert res["teacher"]["calls"] == 0  # the teacher stage was not repeated
    assert [h["epoch"] for h in res["details"]["history"]] == [0, 1]  # epoch 0's evaluation was kept ...
    assert epoch0.stat().st_mtime_ns == before  # ... not redone: training went on from epoch 1


def test_a_filter_that_keeps_nothing_ends_in_one_line_with_the_counts(tmp_path: Path):
    """A teacher that is always wrong: no training sample survives the correctness filter. The run stops before
    any student is built, with one line giving the counts, the commonest reason and what to change."""
    p = run_sgft([*TINY, "teacher.error_rate=1.0"], tmp_path, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("sgft_lab: the correctness filter kept 0 of 48 teacher samples "
                           "(rejections: wrong_answer 48); nothing to train on.")
    assert "try a stronger teacher" in line
    (run_dir,) = {f.parent for f in (tmp_path / "outputs" / "runs").rglob("config.yaml")}
    assert (run_dir / "teacher" / "filter_report.json").is_file() and not (run_dir / "checkpoints").exists()
