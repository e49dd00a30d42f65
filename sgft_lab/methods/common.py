"""Pieces every method's run() shares: run setup, the student build, results writing."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import Config, redact
from ..io import atomic_write_text, write_json
from ..paths import RunPaths, run_paths, teacher_cache_path


class RunContext:
    """Paths, clock and the saved config of one run."""

    def __init__(self, cfg: Config, run_dir: str | Path):
        self.cfg = cfg
        self.paths: RunPaths = run_paths(run_dir)
        self.t0 = time.time()

    def save_config(self) -> None:
        """Resolved config, secrets redacted. Called after the data has loaded (nothing written before).

        The run dir is the run's identity; if it already holds a run of a *different* config (e.g. a
        preset file was edited), stop rather than resume someone else's checkpoint.
        """
        from omegaconf import OmegaConf

        text = OmegaConf.to_yaml(OmegaConf.create(redact(asdict(self.cfg))))
        if self.paths.config.exists():
            old = OmegaConf.to_container(OmegaConf.load(self.paths.config))
            new = OmegaConf.to_container(OmegaConf.create(text))
            if _identity(old) != _identity(new):
                raise RuntimeError(
                    f"{self.paths.run_dir} holds a run with a different config (compare {self.paths.config}); "
                    "delete that folder or set paths.output_dir to start afresh.")
        atomic_write_text(self.paths.config, text)
        atomic_write_text(self.paths.run_dir / "overrides.txt", "\n".join(_hydra_overrides()) + "\n")

    def teacher_cache(self):
        from ..teachers.cache import TeacherCache

        return TeacherCache(teacher_cache_path(self.cfg.paths.cache_dir))

    def write_results(self, **fields: Any) -> dict:
        cfg = self.cfg
        results = {
            "method": cfg.method.name, "benchmark": cfg.benchmark.name, "task": cfg.benchmark.task,
            "student": cfg.student.name, "student_model": cfg.student.name_or_path or cfg.student.name,
            "adapter": cfg.student.adapter, "teacher": cfg.teacher.name if cfg.method.use_teacher else None,
            "seed": cfg.seed, "experiment": cfg.experiment, "tier": cfg.tier, **fields,
            "wall_time_s": round(time.time() - self.t0, 2), "run_dir": str(self.paths.run_dir),
        }
        if _global_rank() == 0:  # under DDP every rank runs the method; one writes
            write_json(self.paths.results, redact(results))
        return results


def _global_rank() -> int:
    import os

    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:  # not under Hydra (e.g. called from a notebook)
        return []


def _identity(cfg: dict) -> dict:
    """The config fields that define a run (not where it writes or how it displays progress)."""
    c = {k: v for k, v in cfg.items() if k not in ("paths", "logger", "print_table")}
    c["trainer"] = {k: v for k, v in c.get("trainer", {}).items()
                    if k not in ("enable_progress_bar", "eval_batch_size", "num_workers", "threads")}
    return c


def log_summary(cfg: Config, results: dict, accounting=None) -> None:
    """Final numbers into the W&B run's summary, artifacts if asked, then close the run.

    Summary names read well in a sweep's parallel-coordinates and grouped-bar panels: one key per protocol,
    ``test_accuracy/<protocol>`` (last_epoch, dev_selected, best_test_epoch), ``val_accuracy/dev_selected``,
    ``epoch/<protocol>``, the data and teacher counts, and ``teacher/<stage>/<field>`` (cost_usd, calls...).
    The hyper-parameters (trainer.lr, student.lora_r, method.diverse_samples...) are the run's W&B config.
    The CSV log needs nothing here: results.json holds the same numbers for local reading.
    """
    if not cfg.logger.wandb:
        return
    import wandb

    if wandb.run is None:
        return
    wandb.run.summary.update(summary_metrics(results, accounting))
    if cfg.logger.log_artifacts:
        log_artifacts(cfg, results)
    wandb.finish()


def summary_metrics(results: dict, accounting=None) -> dict[str, float]:
    """The flat W&B summary of a results dict (see log_summary)."""
    m = results.get("metrics", {})
    flat: dict[str, float] = {}
    for protocol in ("last_epoch", "dev_selected", "best_test_epoch"):
        p = m.get(protocol)
        if isinstance(p, dict):
            flat[f"test_accuracy/{protocol}"] = p["accuracy"]
            flat[f"epoch/{protocol}"] = p["epoch"]
            if "val_accuracy" in p:
                flat[f"val_accuracy/{protocol}"] = p["val_accuracy"]
    for k in ("n_train_questions", "n_train_samples", "n_test", "teacher_calls", "cache_hits", "wall_time_s",
              "train_time_s"):
        if isinstance(results.get(k), (int, float)):
            flat[k] = results[k]
    if accounting is not None:
        flat.update(accounting.to_metrics())
    return flat


def log_artifacts(cfg: Config, results: dict) -> list[str]:
    """The trained student (checkpoints/last.ckpt -- adapters only for LoRA -- and the student dir with its
    tokenizer) and the teacher data (teacher samples, filter report, the training pairs; `train-data` when the
    method uses no teacher) as W&B artifacts (logger.log_artifacts=true). Returns the artifact names."""
    import wandb

    paths = run_paths(results["run_dir"])
    ident = f"{cfg.method.name}-{cfg.benchmark.name}-{cfg.student.name}-s{cfg.seed}"
    names = []
    model = wandb.Artifact(f"student-{ident}", type="model", metadata={"student": cfg.student.name,
                           "adapter": cfg.student.adapter, "metrics": results.get("metrics", {})})
    last = paths.checkpoints_dir / "last.ckpt"
    if last.exists():
        model.add_file(str(last), name="last.ckpt")
    if paths.student_dir.is_dir() and any(paths.student_dir.iterdir()):
        model.add_dir(str(paths.student_dir), name="student")
    if model.manifest.entries:
        wandb.run.log_artifact(model)
        names.append(model.name)
    kind = "teacher-data" if results.get("teacher") else "train-data"  # vanilla_ft: the gold pairs only
    data = wandb.Artifact(f"{kind}-{ident}", type="dataset",
                          metadata={"teacher": results.get("teacher"), "filter": results.get("filter")})
    if paths.teacher_dir.is_dir() and any(paths.teacher_dir.iterdir()):
        data.add_dir(str(paths.teacher_dir), name="teacher")
    if (paths.data_dir / "train.jsonl").exists():
        data.add_file(str(paths.data_dir / "train.jsonl"), name="train.jsonl")
    if data.manifest.entries:
        wandb.run.log_artifact(data)
        names.append(data.name)
    return names


def seed_everything(seed: int) -> None:
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)


def print_results_table(results: dict) -> None:
    """A short human-readable table at the end of a run."""
    from rich.console import Console
    from rich.table import Table

    if _global_rank() != 0:
        return
    m = results.get("metrics", {})
    t = Table(title=f"{results['method']} on {results['benchmark']} (student {results['student']}, seed {results['seed']})")
    t.add_column("metric")
    t.add_column("value", justify="right")

    def pct(x):
        return f"{100 * x:.2f}%"

    if "accuracy" in m:
        t.add_row("test accuracy (final epoch)", pct(m["accuracy"]))
    if "dev_selected" in m:
        d = m["dev_selected"]
        t.add_row(f"test accuracy (best val epoch {d['epoch']})", pct(d["accuracy"]))
    if "best_test_epoch" in m:
        b = m["best_test_epoch"]
        t.add_row(f"best test epoch {b['epoch']} (paper protocol)", pct(b["accuracy"]))
    for k in ("n_train_questions", "n_train_samples", "teacher_calls", "cache_hits"):
        if k in results:
            t.add_row(k, str(results[k]))
    if "filter" in results:
        f = results["filter"]
        t.add_row("teacher samples kept by the filter", f"{f['kept']}/{f['total']}")
    t.add_row("wall time", f"{results['wall_time_s']:.1f} s")
    Console().print(t)
