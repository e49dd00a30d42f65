"""The end of a sweep (sgft_lab/sweep.py): one record and one table row per job, the report command last; a
failed job is listed with its one-line error and the sweep exits 2. A single run ends by printing its run dir."""

from __future__ import annotations

import json

from conftest import TINY, run_sgft


def test_a_sweep_ends_with_one_line_per_job_and_the_report_command(tmp_path):
    p = run_sgft(["-m", "method=vanilla_ft,fdd_pot", "benchmark=embedded_coin_flip", *TINY,
                  "trainer.max_epochs=1"], tmp_path, check=False)
    assert p.returncode == 2  # fdd_pot refuses coin flip (answers are not numbers): that job failed
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    records = [json.loads(f.read_text()) for f in sorted((sweep / ".jobs").glob("*.json"))]
    assert [(r["num"], r["status"]) for r in records] == [(0, "ok"), (1, "FAILED")]
    (res_file,) = sweep.rglob("results.json")
    res = json.loads(res_file.read_text())
    assert records[0]["run_dir"] == str(res_file.parent) and records[0]["accuracy"] == res["metrics"]["accuracy"]
    assert records[1]["error"].startswith("invalid config at `method`: fdd_pot needs numeric answers")
    out = p.stdout
    assert "sweep: 2 jobs, 1 ok, 1 failed" in out
    assert out.strip().splitlines()[-1] == f"report: python -m sgft_lab.report {sweep}"
    assert p.stderr.strip().splitlines()[-1] == \
        "sgft_lab: a sweep job failed (its error is above); the sweep's other jobs ran"


def test_a_single_run_ends_by_printing_its_run_dir(tmp_path):
    p = run_sgft([*TINY, "method=zero_shot"], tmp_path)
    (res_file,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    assert p.stdout.strip().splitlines()[-1] == f"run dir: {res_file.parent}"
