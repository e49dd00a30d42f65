"""Fit a student with Lightning: loggers, checkpoints, resume, generation-based evaluation.

Shared by every method (Fine-tune-CoT students, SGFT guide models, FDD rounds). A run killed at any
point resumes from ``checkpoints/last.ckpt`` when the same command is rerun.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .benchmarks.record import Example
from .config import Config
from .data.datamodules import CoTDataModule, Pair
from .evaluation import EvalSpec, make_callback
from .paths import RunPaths, run_name


@dataclass
class FitOutcome:
    resumed_from_checkpoint: str | None
    epochs_run: int
    train_time_s: float
    n_train_pairs: int


def _quiet_lightning() -> None:
    """Lightning logs through its own handler; stop the same lines repeating through Hydra's root logger."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def build_loggers(cfg: Config, paths: RunPaths, job_type: str):
    """CSV always (metrics.csv in the run dir); W&B when logger.wandb is set, offline without a key."""
    from lightning.pytorch.loggers import CSVLogger

    loggers = [CSVLogger(save_dir=str(paths.run_dir), name="", version="")]
    if cfg.logger.wandb:
        from lightning.pytorch.loggers import WandbLogger

        from .config import redact

        offline = cfg.logger.offline
        if offline is None:
            offline = not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online"
            if offline and os.environ.get("WANDB_MODE") != "offline":
                print("wandb: no WANDB_API_KEY set, logging offline (upload later with `wandb sync`).")
        from dataclasses import asdict

        loggers.append(WandbLogger(
            project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group or cfg.experiment,
            job_type=job_type, tags=list(cfg.logger.tags) + [cfg.benchmark.name, cfg.student.name],
            name=run_name(cfg.method.name, cfg.benchmark.name, cfg.student.name, cfg.seed),
            save_dir=str(paths.run_dir), offline=offline, config=redact(asdict(cfg)),
        ))
    return loggers


def fit(cfg: Config, student, train_pairs: Sequence[Pair], eval_sets: dict[str, Sequence[Example]],
        spec: EvalSpec, paths: RunPaths, *, job_type: str | None = None, datamodule=None,
        eval_callback=None, callbacks: Sequence = ()) -> FitOutcome:
    """Train ``student`` on ``train_pairs``; evaluate on ``eval_sets`` after every epoch.

    ``datamodule`` (a CoTDataModule over the same pairs, e.g. FDD's per-round one) replaces the default;
    ``eval_callback`` replaces the per-epoch evaluator (e.g. FDD's executed program-of-thought scoring).
    ``callbacks``: extra Lightning callbacks (e.g. SGFT's LISA layer sampling, students/lisa.py).
    """
    import time

    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint

    from .students.module import StudentModule

    _quiet_lightning()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    tc = cfg.trainer
    dm = datamodule if datamodule is not None else CoTDataModule(
        student, train_pairs, eval_sets.get("val", []), eval_sets.get("test", []), batch_size=tc.batch_size,
        num_workers=tc.num_workers, seed=cfg.seed)
    module = StudentModule(student, tc)
    callbacks = [eval_callback if eval_callback is not None else make_callback(
        eval_sets, spec, paths, tc.eval_every_n_epochs, progress=tc.enable_progress_bar), *callbacks]
    if tc.save_checkpoints:
        # Only `last.ckpt`, rewritten each epoch: enough to resume, and LoRA checkpoints hold adapters only.
        callbacks.append(ModelCheckpoint(dirpath=str(paths.checkpoints_dir), save_last=True, save_top_k=0,
                                         every_n_epochs=1, save_on_train_epoch_end=True))
    trainer = pl.Trainer(
        accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy, precision=tc.precision,
        max_epochs=tc.max_epochs, gradient_clip_val=tc.gradient_clip_val,
        accumulate_grad_batches=tc.accumulate_grad_batches, log_every_n_steps=tc.log_every_n_steps,
        logger=build_loggers(cfg, paths, job_type or cfg.method.name), callbacks=callbacks,
        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=tc.enable_progress_bar,
        enable_model_summary=False, default_root_dir=str(paths.run_dir), deterministic=False,
    )
    last = paths.checkpoints_dir / "last.ckpt"
    ckpt = str(last) if last.exists() else None
    if ckpt:
        print(f"resuming from checkpoint {ckpt}")
    t0 = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    for lg in trainer.loggers:
        lg.finalize("success")
    return FitOutcome(resumed_from_checkpoint=ckpt, epochs_run=trainer.current_epoch,
                      train_time_s=time.time() - t0, n_train_pairs=len(dm.train_pairs))
