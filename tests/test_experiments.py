"""Experiment presets (both tiers), launchers, the Optuna search, W&B grouping, embedded-tier smoke runs."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

from conftest import CONF, TINY, compose, run_sgft

from sgft_lab.config import validate
from sgft_lab.answers import FTCOT_TASKS

PRESETS = sorted(
    str(p.relative_to(CONF / "experiment").with_suffix(""))
    for d in ("fine_tune_cot", "fdd")
    for p in (CONF / "experiment" / d).glob("*.yaml")
)
REAL_TASKS = set(FTCOT_TASKS)  # the 12 Fine-tune-CoT tasks
# Tiny settings for smoke runs (on top of tier=embedded).
SMOKE = [o for o in TINY if not o.startswith("print_table")] + ["student.max_new_tokens=24"]


def _values(v) -> list[str]:
    return [x.strip() for x in str(v).split(",")]


def test_presets_found():
    assert {
        "fine_tune_cot/main",
        "fine_tune_cot/t5",
        "fine_tune_cot/flan_t5",
        "fine_tune_cot/gpt2",
        "fine_tune_cot/diverse_d_curve",
        "fine_tune_cot/data_size",
        "fdd/rounds",
    } <= set(PRESETS)


@pytest.mark.parametrize("tier", [None, "embedded"])
@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_each_sweep_value_validates(name, tier):
    """Compose the preset as `python -m sgft_lab -m +experiment=NAME [tier=embedded]` would, then validate one
    job per sweep value (each parameter varied alone): every group option exists and the schema accepts it."""
    base = [f"+experiment={name}"] + ([f"tier={tier}"] if tier else [])
    hc = compose(base, hydra_cfg=True)
    assert hc.experiment == name and str(hc.hydra.mode) == "RunMode.MULTIRUN"
    params = {k: _values(v) for k, v in hc.hydra.sweeper.params.items()}
    assert params, "a table preset is a sweep"
    n_jobs = 1
    for vals in params.values():
        n_jobs *= len(vals)
    first = [f"{k}={v[0]}" for k, v in params.items()]
    for key, vals in params.items():
        for v in vals:
            job = [o for o in first if not o.startswith(f"{key}=")] + [f"{key}={v}"]
            cfg = validate(compose(base + job))
            assert cfg.experiment == name and cfg.tier == tier
            if tier == "embedded":
                assert cfg.benchmark.source == "embedded" and cfg.student.name in ("tiny", "tiny_small")
                assert cfg.benchmark.n_shot is None  # ignored by the generators: it would only duplicate runs
                assert (cfg.trainer.accelerator, cfg.trainer.threads, cfg.teacher.name) == (
                    "cpu",
                    1,
                    "reference",
                )
            else:
                assert cfg.trainer.accelerator == "gpu" and cfg.benchmark.source != "embedded"
                assert cfg.student.name not in ("tiny", "tiny_small")
                if cfg.teacher.name == "replay":  # one replay file per task
                    assert cfg.teacher.replay_files[0].endswith(f"/{cfg.benchmark.name}.jsonl")
    if tier == "embedded":
        assert n_jobs <= 30, f"{name} at tier=embedded launches {n_jobs} jobs: keep the CPU demo small"
    elif name.startswith("fine_tune_cot/") and name not in (
        "fine_tune_cot/diverse_d_curve",
        "fine_tune_cot/data_size",
    ):
        assert set(params["benchmark"]) == REAL_TASKS  # the paper's 12 tasks


def test_diverse_d_follows_the_paper_per_task():
    def d(*ov):
        return validate(compose(["+experiment=fine_tune_cot/main", *ov])).method.diverse_samples

    assert d("method=diverse_reasoning", "benchmark=multiarith") == 64
    assert d("method=diverse_reasoning", "benchmark=svamp") == 64
    assert d("method=diverse_reasoning", "benchmark=date_understanding") == 8
    assert d("method=fine_tune_cot", "benchmark=multiarith") == 1  # Fine-tune-CoT keeps D = 1
    assert d("method=diverse_reasoning", "benchmark=multiarith", "tier=embedded") == 4


def test_launcher_and_search_presets_compose():
    import importlib

    for launcher, field, want in (("joblib", "n_jobs", 2), ("submitit_slurm", "max_num_timeout", 3)):
        hc = compose([f"hydra/launcher={launcher}"], hydra_cfg=True)
        lc = hc.hydra.launcher
        module, cls = lc._target_.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), cls)
        assert lc[field] == want
    hc = compose(["+hparams_search=optuna"], hydra_cfg=True)
    sw = hc.hydra.sweeper
    assert sw._target_.endswith("OptunaSweeper") and sw.direction == "maximize"
    assert set(sw.params) == {"trainer.lr", "student.lora_r"}


def test_requeued_slurm_job_gets_the_same_run_dir():
    """submitit pickles the launcher's config after the sweep dir was resolved; OmegaConf keeps the resolved
    `${now:...}` in its cache through pickling (and Hydra's load_sweep_config copies that cache), so a
    requeued job writes to -- and resumes from checkpoints/last.ckpt in -- the same folder."""
    import time

    from hydra.core.utils import setup_globals

    setup_globals()  # registers ${now:}
    hc = compose(["hydra/launcher=submitit_slurm"], hydra_cfg=True)
    first = str(hc.hydra.sweep.dir)
    time.sleep(0.01)
    assert str(pickle.loads(pickle.dumps(hc)).hydra.sweep.dir) == first
    assert str(compose([], hydra_cfg=True).hydra.sweep.dir) != first  # a fresh launch gets a new one
    assert "${hydra.job.num}" in hc.hydra.sweep._get_node("subdir")._value()


# --- runs ---------------------------------------------------------------------------------------------------
def _wandb_records(path: Path) -> list:
    """Records of an offline W&B run file (`run-<id>.wandb`: a ':W&B' header, then LevelDB-log records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL / FIRST start a record, MIDDLE / LAST extend it
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


@pytest.mark.slow
def test_main_embedded_smoke_report_and_wandb(tmp_path: Path):
    """`-m +experiment=fine_tune_cot/main tier=embedded` (cut to 2 methods x 1 task), with W&B offline: the
    sweep completes, the report prints intervals and stand-in paper numbers, the W&B runs are grouped by
    experiment with job type = method and hold one prediction table per evaluation."""
    p = run_sgft(
        [
            "-m",
            "+experiment=fine_tune_cot/main",
            "tier=embedded",
            "method=vanilla_ft,fine_tune_cot",
            "student=tiny_small",
            "benchmark=embedded_coin_flip",
            "logger=wandb",
            "logger.log_artifacts=true",
            *SMOKE,
        ],
        tmp_path,
    )
    assert "Launching 2 jobs" in p.stdout + p.stderr
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    results = [json.loads(f.read_text()) for f in sorted(sweep.rglob("results.json"))]
    assert sorted(r["method"] for r in results) == ["fine_tune_cot", "vanilla_ft"]
    assert all(r["experiment"] == "fine_tune_cot/main" and r["tier"] == "embedded" for r in results)
    rep = run_sgft([str(sweep)], tmp_path, module="sgft_lab.report")
    assert re.search(
        r"\| fine_tune_cot \| tiny_small \| [\d.]+K \| 1 \| 1 \| [\d.]+ \[[\d.]+, [\d.]+\] · p† 77\.33",
        rep.stdout,
    ), rep.stdout
    for r in results:
        (wb,) = Path(r["run_dir"]).glob("wandb/offline-run-*/run-*.wandb")
        records = _wandb_records(wb)
        (run,) = [x.run for x in records if x.WhichOneof("record_type") == "run"]
        assert (run.run_group, run.job_type) == ("fine_tune_cot/main", r["method"])
        assert {"embedded_coin_flip", "tiny_small"} <= set(run.tags)
        arts = {x.artifact.type: x.artifact for x in records if x.WhichOneof("record_type") == "artifact"}
        ident = f"{r['method']}-embedded_coin_flip-tiny_small-s0"
        assert arts["model"].name == f"student-{ident}"
        assert "last.ckpt" in {e.path for e in arts["model"].manifest.contents}
        kind = "teacher-data" if r["method"] == "fine_tune_cot" else "train-data"
        assert arts["dataset"].name == f"{kind}-{ident}"
        assert "train.jsonl" in {e.path for e in arts["dataset"].manifest.contents}
        tables = sorted(wb.parent.glob("files/media/table/predictions_*.table.json"))
        assert len(tables) == len(r["history"]) == 2  # one per evaluation (2 epochs)
        t = json.loads(tables[0].read_text())
        assert t["columns"][:3] == ["epoch", "split", "id"] and len(t["data"]) == r["n_val"] + r["n_test"]


@pytest.mark.slow
def test_fdd_rounds_embedded_smoke(tmp_path: Path):
    run_sgft(
        [
            "-m",
            "+experiment=fdd/rounds",
            "tier=embedded",
            "method=fdd",
            "student=tiny",
            "method.fdd.rounds=1",
            "method.fdd.epochs_per_round=1",
            "method.fdd.eval_every_n_epochs=null",
            "benchmark.n_train=24",
            *SMOKE,
        ],
        tmp_path,
    )
    (res,) = [json.loads(f.read_text()) for f in (tmp_path / "outputs" / "multirun").rglob("results.json")]
    assert res["experiment"] == "fdd/rounds" and len(res["per_round"]) == 2
    rep = run_sgft(
        [str(tmp_path / "outputs"), "--protocol", "last_epoch"], tmp_path, module="sgft_lab.report"
    )
    assert "| fdd round 0 | tiny |" in rep.stdout and "| fdd round 1 | tiny |" in rep.stdout


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_in_parallel(tmp_path: Path):
    p = run_sgft(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "method=vanilla_ft",
            "benchmark=embedded_coin_flip",
            "seed=0,1",
            *SMOKE,
            "trainer.max_epochs=1",
        ],
        tmp_path,
    )
    assert "Joblib.Parallel(n_jobs=2" in p.stdout + p.stderr
    results = [json.loads(f.read_text()) for f in (tmp_path / "outputs").rglob("results.json")]
    assert sorted(r["seed"] for r in results) == [0, 1]
    assert len({r["run_dir"] for r in results}) == 2


@pytest.mark.slow
def test_optuna_search_maximises_validation_accuracy(tmp_path: Path):
    run_sgft(
        [
            "-m",
            "+hparams_search=optuna",
            "hydra.sweeper.n_trials=2",
            "student.adapter=lora",
            "method=vanilla_ft",
            "benchmark=embedded_coin_flip",
            *SMOKE,
            "trainer.max_epochs=1",
        ],
        tmp_path,
    )
    (best,) = (tmp_path / "outputs" / "multirun").rglob("optimization_results.yaml")
    text = best.read_text()
    assert "trainer.lr" in text and "student.lora_r" in text
    results = [json.loads(f.read_text()) for f in (tmp_path / "outputs").rglob("results.json")]
    assert len(results) == 2 and all(r["adapter"] == "lora" for r in results)
    vals = [r["metrics"]["dev_selected"]["val_accuracy"] for r in results]
    assert re.search(r"best_value: ([\d.]+)", text) and float(
        re.search(r"best_value: ([\d.]+)", text)[1]
    ) == max(vals)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("sgft_*.yaml")))
def test_sgft_presets_compose_at_the_embedded_tier(name):
    c = validate(compose([f"experiment={name}", "tier=embedded"]))
    assert c.method.name == "sgft" and c.student.name_or_path is None  # tiny guide
    assert c.method.response is not None and c.method.response.name_or_path is None  # tiny response model
