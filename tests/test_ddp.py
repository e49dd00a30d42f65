"""DDP with 2 CPU processes (gloo) through the CLI: `python -m sgft_lab trainer=ddp trainer.devices=2
trainer.accelerator=cpu ...`. Lightning re-runs the command for rank 1 with the same Hydra run dir; the
ranks split the length-grouped batches; only rank 0 evaluates and checkpoints.

Which samples each rank trained on comes from the debug record SGFT_LAB_RECORD_SAMPLES=1 turns on
(training.sample_recorder: debug/train_samples.rank<R>.jsonl, one line per epoch)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import TINY, run_sgft

pytest.importorskip("torch")
pytest.importorskip("lightning.pytorch")


def _samples(run_dir: Path, rank: int) -> dict[int, list[int]]:
    """{epoch: sample indices} that ``rank`` trained on."""
    lines = (run_dir / "debug" / f"train_samples.rank{rank}.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(r["rank"] == rank and r["world_size"] == 2 for r in records)
    return {r["epoch"]: r["sample_index"] for r in records}


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_to_end(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SGFT_LAB_RECORD_SAMPLES", "1")  # rank 1 is started with this environment too
    run_sgft(["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.threads=1", *TINY],
                 tmp_path, timeout=240)
    (res_file,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    res = json.loads(res_file.read_text())
    run_dir = Path(res["run"]["run_dir"])
    assert len(res["details"]["history"]) == 2
    predictions = sorted(f.name for f in (run_dir / "predictions").iterdir())
    assert predictions == ["epoch_000.jsonl", "epoch_001.jsonl", "test.jsonl"]  # val per epoch, test once
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # Both ranks trained, each on half of the batches: steps per epoch = ceil(ceil(n / 8) / 2), where one
    # process would take ceil(n / 8) (and a rank that never joined would hang the other).
    n = res["data"]["n_train_samples"]
    per_epoch = math.ceil(math.ceil(n / 8) / 2)
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("train_tokens_per_s")]
    assert [int(r["step"]) for r in rows] == [per_epoch - 1, 2 * per_epoch - 1]
    assert all(float(r["train_tokens_per_s"]) > 0 for r in rows)
    assert all(0 <= float(r["train_padding_fraction"]) < 0.5 for r in rows)  # length-grouped batches
    assert len(list((run_dir.parent).iterdir())) == 1  # rank 1 wrote into the same run dir, not a new one
    # The ranks split every epoch: disjoint sample sets that together are the whole training set. (With an
    # odd number of batches the sampler would repeat one to even the ranks out: not so at this size.)
    assert math.ceil(n / 8) % 2 == 0, f"{n} samples: an odd number of batches, pick another benchmark.n_train"
    ranks = [_samples(run_dir, 0), _samples(run_dir, 1)]
    assert sorted(ranks[0]) == sorted(ranks[1]) == [0, 1]
    for epoch in (0, 1):
        mine, theirs = ranks[0][epoch], ranks[1][epoch]
        assert len(set(mine)) == len(mine) and len(set(theirs)) == len(theirs)  # no sample twice in a rank
        assert not set(mine) & set(theirs), f"epoch {epoch}: both ranks trained on {set(mine) & set(theirs)}"
        assert set(mine) | set(theirs) == set(range(n)), f"epoch {epoch}: samples no rank trained on"
    assert ranks[0][0] != ranks[0][1]  # each epoch in its own order
