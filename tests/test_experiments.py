"""Experiment presets (both tiers), launchers, the Optuna search, W&B grouping, embedded-tier smoke runs."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

from conftest import CONF, TINY, compose, results_of, run_sgft
from conftest import wandb_records as _wandb_records

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


def sweep_jobs(hc) -> list[list[str]]:
    """The jobs the sweeper launches for a composed preset: the grid of its sweep params, mapped to the tier's
    stand-ins and de-duplicated under a tier (sgft_lab.tiers.map_jobs, as the tier sweeper does)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sgft_lab.tiers import map_jobs

    params = [f"{k}={v}" for k, v in hc.hydra.sweeper.params.items()]
    (jobs,) = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    return map_jobs(jobs, hc.tier.stand_ins) if hc.get("tier") else jobs


@pytest.mark.parametrize("tier", [None, "embedded"])
@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_and_each_sweep_value_validates(name, tier):
    """Compose the preset as `python -m sgft_lab -m +experiment=NAME [tier=embedded]` would, then validate one
    job per distinct sweep value: every group option exists, the schema accepts it, the tier maps it."""
    base = [f"+experiment={name}"] + ([f"tier={tier}"] if tier else [])
    hc = compose(base, hydra_cfg=True)
    assert hc.experiment == name and str(hc.hydra.mode) == "RunMode.MULTIRUN"
    jobs = sweep_jobs(hc)
    assert jobs, "a table preset is a sweep"
    seen: set[str] = set()
    for job in jobs:
        if set(job) <= seen:
            continue
        seen |= set(job)
        cfg = validate(compose(base + job, hydra_cfg=True))
        assert cfg.experiment == name and (cfg.tier.name if cfg.tier else None) == tier
        if tier == "embedded":
            assert cfg.benchmark.source == "embedded" and cfg.student.name in ("tiny", "tiny_small")
            assert (cfg.trainer.accelerator, cfg.trainer.threads, cfg.teacher.name) == ("cpu", 1, "reference")
            assert (cfg.benchmark.n_train, cfg.trainer.max_epochs) == (100, 3)  # the tier's sizes
            assert type(cfg.method)().name == cfg.method.name  # the method keeps its option
        else:
            assert cfg.trainer.accelerator == "gpu" and cfg.benchmark.source != "embedded"
            assert cfg.student.name not in ("tiny", "tiny_small")
            if cfg.teacher.name == "replay":  # one replay file per task
                assert cfg.teacher.replay_files[0].endswith(f"/{cfg.benchmark.name}.jsonl")
    if tier == "embedded":
        # the appendix lr x batch grid keeps its 72 settings per cell (its CPU corner is in the preset's header)
        limit = 432 if name == "fine_tune_cot/lr_batch" else 30
        assert len(jobs) <= limit, f"{name} at tier=embedded launches {len(jobs)} jobs: keep the CPU demo small"
        assert len({tuple(j) for j in jobs}) == len(jobs)  # each distinct job once
    elif name in ("fine_tune_cot/main", "fine_tune_cot/t5", "fine_tune_cot/flan_t5", "fine_tune_cot/gpt2"):
        assert {dict(a.split("=", 1) for a in j)["benchmark"] for j in jobs} == REAL_TASKS  # the 12 tasks


def test_the_tier_maps_a_paper_grid_to_its_embedded_grid():
    """fine_tune_cot/main: 5 methods x 9 students x 12 tasks = 540 runs; at tier=embedded the students map to
    the two tiny Llamas and the tasks to the three embedded ones: 5 x 2 x 3 = 30 distinct jobs."""
    real = sweep_jobs(compose(["+experiment=fine_tune_cot/main"], hydra_cfg=True))
    tiny = sweep_jobs(compose(["+experiment=fine_tune_cot/main", "tier=embedded"], hydra_cfg=True))
    assert len(real) == 540 and len(tiny) == 30
    pick = {(d["student"], d["benchmark"]) for d in (dict(a.split("=", 1) for a in j) for j in tiny)}
    assert pick == {(s, b) for s in ("tiny_small", "tiny")
                    for b in ("embedded_arithmetic", "embedded_coin_flip", "embedded_last_letter")}
    # A command-line value still wins over the tier's sizes, and the preset's real-scale settings are gone.
    c = validate(compose(["+experiment=fdd/rounds", "tier=embedded", "method=fdd", "student=flan-t5-large",
                          "method.rounds=1", "benchmark.n_train=40"], hydra_cfg=True))
    assert (c.method.rounds, c.benchmark.n_train, c.student.name, c.benchmark.name) == (
        1, 40, "tiny", "embedded_arithmetic")
    assert (c.method.epochs_per_round, c.trainer.lr, c.student.max_input_tokens) == (2, 2e-3, 512)


def test_diverse_d_follows_the_paper_per_task():
    def d(*ov):
        return validate(compose(["+experiment=fine_tune_cot/main", *ov], hydra_cfg=True)).method.diverse_samples

    assert d("method=diverse_reasoning", "benchmark=multiarith") == 64
    assert d("method=diverse_reasoning", "benchmark=svamp") == 64
    assert d("method=diverse_reasoning", "benchmark=date_understanding") == 8
    assert d("method=fine_tune_cot", "benchmark=multiarith") == 1  # Fine-tune-CoT keeps D = 1
    assert d("method=diverse_reasoning", "benchmark=multiarith", "method.diverse_samples=4") == 4
    assert d("method=diverse_reasoning", "benchmark=multiarith", "tier=embedded") == 8  # embedded_arithmetic


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
    from sgft_lab.paths import HydraJob, run_dir_for

    cfg = validate(compose(["hydra/launcher=submitit_slurm"]))
    assert run_dir_for(cfg, HydraJob(sweep_dir=first, job_num=3)).parts[-1] == "3"  # the job number names it


# --- runs ---------------------------------------------------------------------------------------------------
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
    results = results_of(sweep)
    assert sorted(r["run"]["method"] for r in results) == ["fine_tune_cot", "vanilla_ft"]
    assert all(r["run"]["experiment"] == "fine_tune_cot/main" and r["run"]["tier"] == "embedded" for r in results)
    rep = run_sgft([str(sweep)], tmp_path, module="sgft_lab.report")
    assert re.search(
        r"\| fine_tune_cot \| paper \| tiny_small \| [\d.]+K \| 1 \| 1 \| [\d.]+ \[[\d.]+, [\d.]+\] · p† 77\.33",
        rep.stdout,
    ), rep.stdout
    for r in results:
        method = r["run"]["method"]
        (wb,) = Path(r["run"]["run_dir"]).glob("wandb/offline-run-*/run-*.wandb")
        records = _wandb_records(wb)
        (run,) = [x.run for x in records if x.WhichOneof("record_type") == "run"]
        assert (run.run_group, run.job_type) == ("fine_tune_cot/main", method)
        assert {"embedded_coin_flip", "tiny_small"} <= set(run.tags)
        arts = {x.artifact.type: x.artifact for x in records if x.WhichOneof("record_type") == "artifact"}
        ident = f"{method}-embedded_coin_flip-tiny_small-s0"
        assert arts["model"].name == f"student-{ident}"
        assert "last.ckpt" in {e.path for e in arts["model"].manifest.contents}
        kind = "teacher-data" if method == "fine_tune_cot" else "train-data"
        assert arts["dataset"].name == f"{kind}-{ident}"
        assert "train.jsonl" in {e.path for e in arts["dataset"].manifest.contents}
        tables = sorted(wb.parent.glob("files/media/table/predictions_*.table.json"))
        assert len(tables) == len(r["details"]["history"]) == 2  # one per evaluation (2 epochs)
        t = json.loads(tables[0].read_text())
        # the preset's protocol is paper: test after every epoch, no validation split
        assert t["columns"][:3] == ["epoch", "split", "id"] and len(t["data"]) == 8
        assert {row[1] for row in t["data"]} == {"test"}


@pytest.mark.slow
def test_fdd_rounds_embedded_smoke(tmp_path: Path):
    run_sgft(
        [
            "-m",
            "+experiment=fdd/rounds",
            "tier=embedded",
            "method=fdd",
            "student=tiny",
            "method.rounds=1",
            "method.epochs_per_round=1",
            "method.eval_every_n_epochs=null",
            "benchmark.n_train=24",
            *SMOKE,
        ],
        tmp_path,
    )
    (res,) = results_of(tmp_path / "outputs" / "multirun")
    assert res["run"]["experiment"] == "fdd/rounds" and len(res["details"]["rounds"]) == 2
    rep = run_sgft(
        [str(tmp_path / "outputs")], tmp_path, module="sgft_lab.report"
    )
    assert "| fdd round 0 | clean | tiny |" in rep.stdout and "| fdd round 1 | clean | tiny |" in rep.stdout


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
    results = results_of(tmp_path / "outputs")
    assert sorted(r["run"]["seed"] for r in results) == [0, 1]
    assert len({r["run"]["run_dir"] for r in results}) == 2


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
    results = results_of(tmp_path / "outputs")
    assert len(results) == 2 and all(r["run"]["adapter"] == "lora" for r in results)
    vals = [r["metrics"]["dev_selected"]["val_accuracy"] for r in results]
    assert re.search(r"best_value: ([\d.]+)", text) and float(
        re.search(r"best_value: ([\d.]+)", text)[1]
    ) == max(vals)


@pytest.mark.parametrize("name", sorted(f"sgft/{p.stem}" for p in (CONF / "experiment" / "sgft").glob("*.yaml")))
def test_sgft_presets_compose_at_the_embedded_tier(name):
    c = validate(compose([f"+experiment={name}", "tier=embedded"], hydra_cfg=True))
    assert c.method.name == "sgft" and c.student.name_or_path is None  # tiny guide
    assert c.method.response is not None and c.method.response.name_or_path is None  # tiny response model


def test_ablation_presets_sweep_what_the_paper_varied():
    """The teacher ablation is one axis of teachers (at the embedded tier each becomes a reference teacher of its
    quality); the inference-length ablation decodes at 128 and 1,024; the lr x batch grid is the appendix's."""
    def cfgs(name, *extra):
        hc = compose([f"+experiment={name}", *extra], hydra_cfg=True)
        return [validate(compose([f"+experiment={name}", *extra, *job], hydra_cfg=True)) for job in sweep_jobs(hc)]

    real = cfgs("fine_tune_cot/teacher_ablation")
    assert sorted({c.teacher.model for c in real}) == ["davinci", "text-davinci-001", "text-davinci-002",
                                                       "text-davinci-003"]
    assert {c.teacher.replay_files[0].rsplit("/", 2)[-2] for c in real} == {c.teacher.model for c in real}
    tiny = cfgs("fine_tune_cot/teacher_ablation", "tier=embedded")
    rates = {c.teacher.model: c.teacher.error_rate for c in tiny}
    assert {c.teacher.name for c in tiny} == {"reference"}
    assert rates["davinci"] > rates["text-davinci-001"] > rates["text-davinci-002"] > rates["text-davinci-003"]
    lengths = cfgs("fine_tune_cot/inference_length")
    assert {c.student.max_length for c in lengths} == {128, 1024}
    assert not any(c.student.truncate_early for c in lengths)
    grid = sweep_jobs(compose(["+experiment=fine_tune_cot/lr_batch"], hydra_cfg=True))
    axes = {k: {dict(a.split("=", 1) for a in j)[k] for j in grid} for k in ("trainer.lr", "trainer.batch_size")}
    assert len(axes["trainer.lr"]) == 6 and axes["trainer.batch_size"] == {"1", "2", "4", "8", "16", "32"}
    assert {(c.method.rationale_max_tokens, c.student.max_label_tokens) for c in cfgs("fine_tune_cot/ft_cot_long")} \
        == {(512, 512)}


ALL_PRESETS = sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                     for p in (CONF / "experiment").rglob("*.yaml"))


@pytest.mark.shared
@pytest.mark.parametrize("name", ALL_PRESETS)
def test_every_preset_passes_a_dry_run_at_real_scale(name, tmp_path, shared_dir):
    """The first job of each preset at its own (real) scale: composes, validates, loads the real data and
    writes its plan without a teacher request, weights or training (missing teacher files are listed)."""
    from sgft_lab.run import execute

    hc = compose([f"+experiment={name}"], hydra_cfg=True)
    job = sweep_jobs(hc)[0] if str(hc.hydra.mode) == "RunMode.MULTIRUN" else []
    over = [f"+experiment={name}", *job, "dry_run=true",
            f"paths.data_dir={shared_dir / 'data'}", f"paths.output_dir={tmp_path}"]
    plan = execute(validate(compose(over)), run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "plan.json").is_file() and plan["n_test"] > 0
    assert plan["n_train"] > 0 or plan["epochs"] == 0
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "cache").exists()
