"""End-to-end: the Fine-tune-CoT pipeline on the embedded default, with tiny settings."""

import json
from pathlib import Path

import pytest

from conftest import TINY, run_sgft
from sgft_lab.io import read_jsonl


def _results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("results.json"))]


@pytest.mark.slow
def test_fine_tune_cot_end_to_end_and_cached_rerun(tmp_path: Path):
    run_sgft(TINY, tmp_path)
    (res,) = _results(tmp_path / "outputs" / "runs")
    assert res["method"] == "fine_tune_cot" and res["teacher"] == "reference" and res["student"] == "tiny"
    assert 0.0 <= res["metrics"]["accuracy"] <= 1.0
    assert {"dev_selected", "best_test_epoch", "last_epoch"} <= set(res["metrics"])
    # Every train question was sent to the teacher twice (rationale + answer), nothing came from the cache.
    assert res["teacher_calls"] == 2 * res["n_train_questions"] and res["cache_hits"] == 0
    assert 0 < res["filter"]["kept"] <= res["filter"]["total"] == res["n_train_questions"]
    run_dir = Path(res["run_dir"])
    for name in ("config.yaml", "metrics.csv", "teacher/samples.jsonl", "data/train.jsonl", "checkpoints/last.ckpt"):
        assert (run_dir / name).exists(), name
    preds = read_jsonl(run_dir / "predictions" / "epoch_001.jsonl")
    assert {r["split"] for r in preds} == {"val", "test"}
    assert set(preds[0]) >= {"question", "completion", "extracted", "answer", "correct"}
    # Training pairs carry the exact ft_cot_token format with the gold answer.
    pair = read_jsonl(run_dir / "data" / "train.jsonl")[0]
    assert pair["input"].endswith(" ###") and pair["label"].startswith(" ") and " --> " in pair["label"]

    # Same command again: every teacher answer comes from the cache.
    run_sgft(TINY, tmp_path)
    (res2,) = _results(tmp_path / "outputs" / "runs")
    assert res2["teacher_calls"] == 0 and res2["cache_hits"] == 2 * res2["n_train_questions"]
    assert res2["resumed_from_checkpoint"]


@pytest.mark.slow
def test_multirun_two_methods_two_benchmarks(tmp_path: Path):
    p = run_sgft(["-m", "method=fine_tune_cot,vanilla_ft", "benchmark=embedded_coin_flip,embedded_last_letter",
                  *TINY, "trainer.max_epochs=1"], tmp_path)
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1, p.stdout
    results = _results(sweeps[0])
    assert len(results) == 4
    assert {(r["method"], r["benchmark"]) for r in results} == {
        (m, b) for m in ("fine_tune_cot", "vanilla_ft") for b in ("embedded_coin_flip", "embedded_last_letter")}
    assert all(r["teacher_calls"] == 0 for r in results if r["method"] == "vanilla_ft")


@pytest.mark.slow
def test_wandb_logger_offline_without_key(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # no key, no mode: sgft_lab must fall back to offline
    p = run_sgft([*TINY, "trainer.max_epochs=1", "logger=wandb", "benchmark=embedded_coin_flip"], tmp_path)
    assert "offline" in p.stdout + p.stderr
    (res,) = _results(tmp_path / "outputs" / "runs")
    runs = list(Path(res["run_dir"]).glob("wandb/offline-run-*/*.wandb"))
    assert runs, "no offline W&B run written"
    assert (Path(res["run_dir"]) / "metrics.csv").exists()  # the CSV log is always written too
