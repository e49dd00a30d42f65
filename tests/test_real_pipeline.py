"""End-to-end on a real benchmark: Fine-tune-CoT on GSM8K with golden rationales and a real HF checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_sgft
from sgft_lab.io import read_jsonl

SHARED = Path(__file__).resolve().parents[2] / "shared"
CHECKPOINT = SHARED / "models" / "TinyStories-656K"
DATA = SHARED / "data"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.slow,
    pytest.mark.skipif(not (CHECKPOINT / "config.json").is_file() or not (DATA / "gsm8k").is_dir(),
                       reason=f"needs ../shared ({CHECKPOINT} and {DATA / 'gsm8k'}) beside the repo"),
]


def test_fine_tune_cot_on_gsm8k_with_golden_rationales(tmp_path: Path):
    run_sgft(["method=fine_tune_cot", "benchmark=gsm8k", "teacher=reference", "student=hf",
              f"student.name_or_path={CHECKPOINT}", f"paths.data_dir={DATA}", "benchmark.n_shot=64",
              "trainer.max_epochs=2", "trainer.max_eval_examples=32", "student.max_new_tokens=64",
              "trainer.threads=1", "trainer.enable_progress_bar=false", "print_table=false"], tmp_path)
    (path,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    res = json.loads(path.read_text())
    r = res["run"]
    assert (r["benchmark"], r["student"], r["teacher"]) == ("gsm8k", "hf", "reference")
    assert res["data"]["n_train_questions"] == 64
    assert {(e["split"], e["n"]) for e in res["entries"]} == {("val", 32), ("test", 32)}
    # Golden rationales with gold answers: the teacher answered every question, the filter kept all of them.
    f = res["details"]["filter"]
    assert res["teacher"]["calls"] == 128 and f["kept"] == f["total"] == 64
    assert len(res["details"]["history"]) == 2
    run_dir = path.parent
    samples = read_jsonl(run_dir / "teacher" / "samples.jsonl")
    assert all(s["reasoning_completion"].strip() and "<<" not in s["reasoning_completion"] for s in samples)
    pairs = read_jsonl(run_dir / "data" / "train.jsonl")
    gold = {s["example_id"]: s["answer"] for s in samples}
    for p in pairs:
        assert p["input"].endswith(" ###") and p["label"].endswith(f" --> {gold[p['example_id']]}")
    preds = read_jsonl(run_dir / "predictions" / "epoch_001.jsonl")
    assert len(preds) == 32 and {r["split"] for r in preds} == {"val"}  # clean: validation every epoch ...
    test = read_jsonl(run_dir / "predictions" / "test.jsonl")  # ... test once, at the selected epoch
    assert len(test) == 32 and {r["split"] for r in test} == {"test"}
    # n_shot: the official 64-question subset of the whole train split; validation comes from the rest
    train_ids = {int(s["example_id"].rpartition(":")[2]) for s in samples}
    official = json.loads((DATA / "fine_tune_cot_splits" / "split" / "gsm8k__default.json").read_text())["train"]
    assert sorted(train_ids) == sorted(np.random.RandomState(0).permutation(official)[:64].tolist())
