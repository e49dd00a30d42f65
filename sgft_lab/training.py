"""Fit a student with Lightning: loggers, checkpoints, resume, generation-based evaluation, throughput.

Shared by every method (Fine-tune-CoT students, SGFT guide models, FDD rounds). A run killed at any
point (even ``kill -9``) resumes from ``checkpoints/last.ckpt`` when the same command is rerun: checkpoints
are written to a temporary file and renamed, so a kill mid-write leaves the previous one intact.
On CPU the resumed run ends exactly where an uninterrupted one does (tests/test_resume.py): the checkpoint
holds, besides Lightning's model, optimizer, schedule and loop state, the training loader's position
(data/datamodules.ResumableLoader), the random states (``resume_callback``), the epoch's running loss
(students/module.py) and throughput counters; metrics.csv keeps the rows logged before the checkpoint and
the resumed steps log the rest, once (``_set_aside_metrics``).

Scale (conf/trainer/*.yaml): one device, or several through Lightning's strategies -- ``ddp`` (Lightning
re-executes ``python -m sgft_lab ...`` once per extra device, with the same Hydra run dir), ``deepspeed``
(ZeRO stage 2 when the package is installed) and ``fsdp`` (training only, see ``build_strategy``); several
nodes with ``trainer.num_nodes`` under SLURM (srun) or torchrun (experiments/benchmarks/README.md).
Every rank trains; only global rank 0 evaluates, writes predictions, logs and checkpoints.

Speed and memory (trainer.*): length-grouped batches (``group_by_length``), the chunked LM-head loss
(``loss_chunk_size``, students/loss.py), ``gradient_checkpointing``, ``compile``, ``optimizer`` (8-bit and
paged AdamW from bitsandbytes), ``precision`` (e.g. bf16-mixed). Each epoch logs ``train_tokens_per_s``
(real, non-pad tokens over all ranks), ``train_padding_fraction`` and ``peak_memory_gib`` to metrics.csv;
``fit`` returns them in FitOutcome for results.json.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .benchmarks.record import Example
from .config import Adapter, Config, TrainerConfig
from .data.datamodules import CoTDataModule, Pair
from .evaluation import EvalSpec, make_callback
from .paths import RunPaths

SHARDED_STRATEGIES = ("fsdp", "deepspeed_stage_3", "deepspeed_stage_3_offload")


@dataclass
class FitOutcome:
    resumed_from_checkpoint: str | None
    epochs_run: int
    train_time_s: float
    n_train_pairs: int
    # Throughput of the epochs run in this process (all ranks together); None when no epoch ran.
    tokens_per_s: float | None = None  # real (non-pad) tokens per second of training
    padding_fraction: float | None = None  # padded positions / all positions in the training batches
    peak_memory_gib: float | None = None  # CUDA max_memory_allocated (rank 0); on CPU the peak RSS
    peak_memory_kind: str | None = None  # cuda_max_allocated | cpu_max_rss
    train_tokens: int = 0  # real tokens trained on (this process' epochs)
    global_rank: int = 0
    world_size: int = 1
    resumed_at_step: int | None = None  # the checkpoint's optimizer step this process went on from
    train_steps: int = 0  # optimizer steps this process ran (a resumed run: only the remaining ones)

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    def speed(self) -> dict[str, Any]:
        """The throughput fields, for results.json."""
        return {"tokens_per_s": self.tokens_per_s, "padding_fraction": self.padding_fraction,
                "peak_memory_gib": self.peak_memory_gib, "peak_memory_kind": self.peak_memory_kind,
                "train_tokens": self.train_tokens, "world_size": self.world_size,
                "train_steps": self.train_steps, "resumed_at_step": self.resumed_at_step}


def _quiet_lightning() -> None:
    """Lightning logs through its own handler; stop the same lines repeating through Hydra's root logger."""
    import logging
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = False
    warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*")  # rank 0 alone evaluates, by design


def default_loggers(paths: RunPaths) -> list:
    """A stage trained outside a run's lifecycle: its own metrics.csv only."""
    from lightning.pytorch.loggers import CSVLogger

    return [CSVLogger(save_dir=str(paths.run_dir), name="", version="")]


def _strategy_name(tc: TrainerConfig) -> str:
    return str(tc.strategy).lower()


def build_strategy(tc: TrainerConfig, student) -> Any:
    """The Lightning strategy ``trainer.strategy`` names, configured by ``trainer.strategy_kwargs``.

    - ``deepspeed*``: needs the deepspeed package (clear error otherwise). ZeRO stage 2 (the preset) keeps
      whole weights on every rank, so rank 0 can evaluate by generation.
    - ``fsdp``: FSDPStrategy wrapping the model's own block classes (transformers' ``_no_split_modules``)
      with ``use_orig_params=True`` (LoRA: frozen and trainable weights share flat parameters). Weights are
      sharded, so rank 0 alone cannot generate: per-epoch evaluation is refused (``fit``); QLoRA is refused.
    - anything else (``auto``, ``ddp``, ``ddp_spawn``, ...): the name, or its strategy class with the kwargs.
    """
    import importlib.util

    name = _strategy_name(tc)
    kw = dict(tc.strategy_kwargs)
    if name.startswith("deepspeed"):
        if importlib.util.find_spec("deepspeed") is None:
            raise ValueError(f"trainer.strategy={tc.strategy} needs the deepspeed package, which is not "
                             "installed (pip install deepspeed, on a CUDA machine); or use trainer=ddp")
        if not kw:
            return name
        from lightning.pytorch.strategies import DeepSpeedStrategy

        stage = {"deepspeed_stage_1": 1, "deepspeed_stage_2": 2, "deepspeed_stage_3": 3}.get(name, 2)
        return DeepSpeedStrategy(**{"stage": stage, **kw})
    if name == "fsdp":
        if student.cfg.adapter is Adapter.qlora:
            raise ValueError("trainer.strategy=fsdp does not shard 4-bit (QLoRA) students here; use "
                             "trainer=ddp (one QLoRA copy per GPU) or student.adapter=lora")
        from lightning.pytorch.strategies import FSDPStrategy

        policy = kw.pop("auto_wrap_policy", "auto")
        if policy == "auto" or isinstance(policy, (list, tuple)):
            names = set(getattr(_hf_model(student.model), "_no_split_modules", None) or []) \
                if policy == "auto" else set(policy)
            classes = {type(m) for m in student.model.modules() if type(m).__name__ in names}
            if not classes:
                raise ValueError(f"trainer.strategy=fsdp: no block classes {sorted(names)} found in the "
                                 "student; set trainer.strategy_kwargs.auto_wrap_policy=[BlockClassName]")
            policy = classes
        kw.setdefault("use_orig_params", True)
        kw.setdefault("state_dict_type", "full")
        return FSDPStrategy(auto_wrap_policy=policy, **kw)
    if not kw:
        return tc.strategy
    if name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(start_method={"ddp": "popen", "ddp_spawn": "spawn"}.get(name, "fork"), **kw)
    raise ValueError(f"trainer.strategy_kwargs is only understood for ddp, fsdp and deepspeed strategies, "
                     f"not trainer.strategy={tc.strategy!r}")


def _hf_model(model):
    from .students.loss import unwrap

    return unwrap(model)


def throughput_callback(family: str):
    """A callback measuring each training epoch (from its start to its last batch, evaluation excluded):
    real (non-pad) tokens/s summed over ranks, padding fraction, peak memory; logged, and kept in
    ``.totals``."""
    import lightning.pytorch as pl
    import torch

    def _sync(device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    class ThroughputMonitor(pl.Callback):
        def __init__(self):
            self.totals = {"tokens": 0.0, "positions": 0.0, "seconds": 0.0, "peak_gib": None, "kind": None}
            self._before = (0.0, 0)  # this epoch's counts from before a mid-epoch resume (padding fraction)
            self._loaded = None

        def on_fit_start(self, trainer, pl_module):
            if pl_module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(pl_module.device)

        def _begin(self, pl_module) -> None:
            _sync(pl_module.device)
            self._real = torch.zeros((), dtype=torch.float64, device=pl_module.device)
            self._positions = 0
            self._before = (0.0, 0)
            self._t0 = time.perf_counter()

        def state_dict(self):
            if not hasattr(self, "_real"):
                return {}
            return {"real": self._before[0] + float(self._real), "positions": self._before[1] + self._positions}

        def load_state_dict(self, state):
            self._loaded = state

        def on_train_start(self, trainer, pl_module):
            self._begin(pl_module)  # a mid-epoch resume enters the epoch without on_train_epoch_start
            # The saved counts are rank 0's: exact for one process; under DDP the resumed epoch counts from here.
            if self._loaded and trainer.world_size == 1:
                self._before = (self._loaded["real"], self._loaded["positions"])
            self._loaded = None

        def on_train_epoch_start(self, trainer, pl_module):
            self._begin(pl_module)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            mask = batch["attention_mask"]
            real, positions = mask.sum(), mask.numel()
            if family == "encoder_decoder":
                labels = batch["labels"]
                real, positions = real + (labels != -100).sum(), positions + labels.numel()
            self._real += real  # stays on the device: no host sync per step
            self._positions += positions

        def on_train_epoch_end(self, trainer, pl_module):
            _sync(pl_module.device)
            seconds = time.perf_counter() - self._t0
            both = torch.stack([self._real, torch.tensor(float(self._positions), dtype=torch.float64,
                                                         device=self._real.device)])
            both = trainer.strategy.reduce(both, reduce_op="sum")
            real, positions = float(both[0]), float(both[1])
            if pl_module.device.type == "cuda":
                peak, kind = torch.cuda.max_memory_allocated(pl_module.device) / 2**30, "cuda_max_allocated"
            else:
                import resource

                peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_max_rss"
            t = self.totals
            t["tokens"] += real
            t["positions"] += positions
            t["seconds"] += seconds
            t["peak_gib"], t["kind"] = peak, kind
            if seconds > 0 and positions > 0:
                epoch_real, epoch_positions = real + self._before[0], positions + self._before[1]
                metrics = {"train_tokens_per_s": real / seconds, "peak_memory_gib": peak,
                           "train_padding_fraction": 1 - epoch_real / epoch_positions}
                pl_module.log_dict(metrics, on_step=False, on_epoch=True, rank_zero_only=True)

    return ThroughputMonitor()


def _atomic_checkpoint_io():
    """Lightning's TorchCheckpointIO, writing to a temporary file renamed into place (kill -9 safe)."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            path = Path(path)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            super().save_checkpoint(checkpoint, tmp, storage_options)
            os.replace(tmp, path)

    return AtomicCheckpointIO()


def checkpoint_callback(tc: TrainerConfig, paths: RunPaths, initial: bool = False):
    """Rewrite ``checkpoints/last.ckpt`` after every epoch and, with ``trainer.checkpoint_every_n_steps``, every
    n optimizer steps within an epoch. ``initial``: also when training starts from scratch -- for adapter
    students, whose freshly drawn adapter weights are on disk nowhere else (a rerun that loads the tiny
    student's saved init instead of drawing it draws other adapter weights).

    Each checkpoint is taken where Lightning resumes correctly from, and only made ``last.ckpt`` once every
    row logged before that point is on disk (a resumed run logs only what comes after it):
    - an epoch's checkpoint is taken in ``on_train_epoch_end`` (after the evaluation) into
      ``last.ckpt.pending`` and renamed to ``last.ckpt`` when the next epoch starts or training ends:
      Lightning logs the epoch's row (losses, throughput, val accuracy) after the ``on_train_epoch_end``
      hooks, so a kill between a ``last.ckpt`` written there and that row lost the row. (Taking it when the
      next epoch starts instead is no better: Lightning 2.6 resumes from there at the previous epoch's batch
      count.)
    - a step checkpoint is written in ``on_train_batch_end`` (the step's row is already written: module.py),
      but never at an epoch's last batch: Lightning resumes from such a checkpoint past the epoch's end,
      skipping the epoch's evaluation and row; the epoch's own checkpoint follows anyway.

    Why not ModelCheckpoint: Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint was written in
    the same step, so ``save_top_k=0, save_last=True`` saved nothing until training ended (nothing to resume
    from after a kill), and top-k files would double the writes.
    """
    import lightning.pytorch as pl

    last = paths.last_checkpoint
    pending = pending_checkpoint(paths)
    every = int(tc.checkpoint_every_n_steps or 0)

    class LastCheckpoint(pl.Callback):
        def __init__(self):
            self.saved_step = -1

        def on_train_start(self, trainer, pl_module):
            if initial and trainer.ckpt_path is None:  # the same on every rank: all of them must call save
                trainer.save_checkpoint(str(last))
            self.saved_step = trainer.global_step  # step 0, or the checkpoint this fit resumed from

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step  # optimizer steps: accumulation micro-batches share one
            if every and step % every == 0 and step != self.saved_step \
                    and batch_idx + 1 < trainer.num_training_batches:
                trainer.save_checkpoint(str(last))  # every rank calls it; the strategy writes on rank 0
                self.saved_step = step

        def on_train_epoch_end(self, trainer, pl_module):
            trainer.save_checkpoint(str(pending))
            self.saved_step = trainer.global_step

        def _publish(self, trainer) -> None:
            if trainer.is_global_zero and pending.exists():
                _replace(pending, last)

        def on_train_epoch_start(self, trainer, pl_module):
            self._publish(trainer)

        def on_train_end(self, trainer, pl_module):
            self._publish(trainer)

    return LastCheckpoint()


def pending_checkpoint(paths: RunPaths) -> Path:
    """An epoch's checkpoint before its logged row is on disk (``checkpoint_callback``)."""
    return paths.last_checkpoint.with_name(paths.last_checkpoint.name + ".pending")


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; a checkpoint folder (DeepSpeed, sharded FSDP) takes the old one's place."""
    if src.is_dir() and dst.exists():
        old = dst.with_name(dst.name + ".old")
        _remove(old)
        os.replace(dst, old)
        os.replace(src, dst)
        _remove(old)
    else:
        os.replace(src, dst)


def _rng_states() -> dict:
    """The process' random states, as plain types and tensors (Lightning loads checkpoints weights_only)."""
    import random

    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


METRICS_ASIDE = ".metrics.csv.resume"


def _set_aside_metrics(loggers: Sequence, resuming: bool) -> None:
    """Before a resumed fit starts, move the CSV loggers' metrics.csv aside: Lightning's CSVLogger deletes the
    file it finds when it starts, and ``resume_callback`` puts back the rows from before the checkpoint. An
    earlier aside file (a kill while a resume started) stays when there is no newer metrics.csv. A fit that
    starts afresh drops an aside file: Lightning replaces metrics.csv then."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # every rank writes into the same run dir; rank 0 logs
        return
    for lg in loggers:
        if isinstance(lg, CSVLogger):
            path = Path(lg.log_dir) / "metrics.csv"
            aside = path.with_name(METRICS_ASIDE)
            if not resuming:
                aside.unlink(missing_ok=True)
            elif path.is_file():
                os.replace(path, aside)


def resume_callback():
    """What Lightning's checkpoint lacks for a resumed fit to continue exactly as an uninterrupted one:

    - the random states (torch, CUDA, Python, NumPy: dropout, e.g. LoRA's), saved with every checkpoint and
      restored when training starts again;
    - the training loader's position (``ResumableLoader.state_dict``), restored when training starts again.
      Lightning saves it too, but restores it only when the fit loop builds the loader after the checkpoint
      is loaded -- not when ``configure_optimizers`` built it earlier through
      ``trainer.estimated_stepping_batches`` (any scheduler here), which left a resumed epoch in a fresh order;
    - the metrics.csv rows logged before the checkpoint (``_set_aside_metrics`` moved the file aside): those
      of earlier steps are written back through the logger, the later ones dropped, as the resumed steps log
      them again;
    - the optimizer step it resumed at (``.resumed_at``) and the steps run since (``.steps``).
    """
    import csv

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    class ResumeState(pl.Callback):
        def __init__(self):
            self.resumed_at: int | None = None
            self.start_step = 0
            self.steps = 0
            self._rng = self._loader = self._trainer = None

        def setup(self, trainer, pl_module, stage):
            self._trainer = trainer

        def state_dict(self):  # called as the checkpoint is written
            loader = self._trainer.train_dataloader
            return {"rng": _rng_states(), "loader": loader.state_dict() if hasattr(loader, "state_dict") else None}

        def load_state_dict(self, state):
            self._rng, self._loader = state.get("rng"), state.get("loader")

        def on_load_checkpoint(self, trainer, pl_module, checkpoint):
            self.resumed_at = int(checkpoint["global_step"])
            if trainer.global_rank != 0:
                return
            for lg in trainer.loggers:
                if not isinstance(lg, CSVLogger):
                    continue
                aside = Path(lg.log_dir) / METRICS_ASIDE
                if not aside.is_file():
                    continue
                with aside.open(newline="", encoding="utf-8") as f:
                    rows = [r for r in csv.DictReader(f) if int(r["step"]) < self.resumed_at]
                writer = lg.experiment  # created now, if not yet: there is no metrics.csv for it to delete
                writer.metrics[:0] = [{k: v for k, v in r.items() if v != ""} for r in rows]
                writer.save()
                aside.unlink()

        def on_train_start(self, trainer, pl_module):
            loader = trainer.train_dataloader
            if self._loader is not None and hasattr(loader, "load_state_dict"):
                loader.load_state_dict(self._loader)  # before its first batch is drawn
            if self._rng is not None:
                _set_rng_states(self._rng)  # after everything that ran before training drew from them
            self._rng = self._loader = None
            self.start_step = trainer.global_step

        def on_train_end(self, trainer, pl_module):
            self.steps = trainer.global_step - self.start_step

    return ResumeState()


def sample_recorder(paths: RunPaths):
    """Debug record (``SGFT_LAB_RECORD_SAMPLES=1``): every rank appends the training samples it trained on
    (``sample_index``: positions in the training pairs) to ``debug/train_samples.rank<R>.jsonl``, one line
    per epoch -- e.g. to check that DDP ranks split each epoch (tests/test_ddp.py)."""
    import json

    import lightning.pytorch as pl

    class SampleRecorder(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.seen: list[int] = []

        def on_train_start(self, trainer, pl_module):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if "sample_index" in batch:
                self.seen += batch["sample_index"].tolist()

        def on_train_epoch_end(self, trainer, pl_module):
            path = paths.run_dir / "debug" / f"train_samples.rank{trainer.global_rank}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"epoch": trainer.current_epoch, "rank": trainer.global_rank,
                                    "world_size": trainer.world_size, "sample_index": self.seen}) + "\n")

    return SampleRecorder()


def fit(cfg: Config, student, train_pairs: Sequence[Pair], eval_sets: dict[str, Sequence[Example]],
        spec: EvalSpec | None, paths: RunPaths, *, loggers: Sequence | None = None, datamodule=None,
        callbacks: Sequence = (), keep_best: bool = False,
        task_weights: Sequence[float] | None = None) -> FitOutcome:
    """Train ``student`` on ``train_pairs``; evaluate on ``eval_sets`` as ``spec`` says (its prompts and its
    scorer) after every ``trainer.eval_every_n_epochs``-th epoch and the last; no eval sets, no evaluation.

    ``keep_best``: save the best validation epoch's weights (evaluation.make_callback).
    ``paths``: the stage's folder (checkpoints, predictions, metrics.csv). ``loggers``: the stage's Lightning
    loggers (``RunContext.fit_loggers``; default: a CSV log in ``paths``). ``datamodule`` replaces the default
    CoTDataModule over ``train_pairs``. ``callbacks``: extra Lightning callbacks (e.g. SGFT's LISA layer
    sampling, students/lisa.py). ``task_weights``: a multi-task student's loss weights, one per ``Pair.task``
    (StudentModule; None: the plain loss). Under several processes every rank returns;
    ``FitOutcome.is_global_zero`` tells the one that should write.
    """
    import lightning.pytorch as pl
    import torch

    from .students.module import StudentModule

    _quiet_lightning()
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    # Training draws from a known random state whatever ran before it in this process (a teacher answered from
    # the cache, a student init loaded from disk instead of drawn); a resumed fit then restores the saved one.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    tc = cfg.trainer
    strategy = build_strategy(tc, student)
    sharded = _strategy_name(tc) in SHARDED_STRATEGIES
    evaluate = any(eval_sets.values())
    if evaluate and spec is None:
        raise ValueError("fit: eval_sets given without an EvalSpec")
    if sharded and evaluate:
        raise ValueError(f"trainer.strategy={tc.strategy} shards the weights, so rank 0 cannot evaluate by "
                         "generation after each epoch; use trainer=ddp or trainer=deepspeed (ZeRO-2), or a "
                         "single device")
    dm = datamodule if datamodule is not None else CoTDataModule(
        student, train_pairs, eval_sets.get("val", []), eval_sets.get("test", []), batch_size=tc.batch_size,
        num_workers=tc.num_workers, seed=cfg.seed, group_by_length=tc.group_by_length)
    if isinstance(dm, CoTDataModule) and dm.group_by_length is None:
        dm.group_by_length = tc.group_by_length
    module = StudentModule(student, tc, task_weights=task_weights)
    monitor = throughput_callback(student.family)
    resume = resume_callback()
    callbacks = [monitor, *callbacks]
    if evaluate:
        callbacks.append(make_callback(eval_sets, spec, paths, tc.eval_every_n_epochs,
                                       progress=tc.enable_progress_bar, keep_best=keep_best))
    if tc.save_checkpoints:
        # Only `last.ckpt`, rewritten each epoch: enough to resume, and LoRA checkpoints hold adapters only.
        callbacks.append(checkpoint_callback(tc, paths, initial=student.cfg.adapter is not Adapter.none))
    callbacks.append(resume)
    if os.environ.get("SGFT_LAB_RECORD_SAMPLES"):
        callbacks.append(sample_recorder(paths))
    loggers = list(loggers) if loggers is not None else default_loggers(paths)
    plugins = [] if (sharded or _strategy_name(tc).startswith("deepspeed")) else [_atomic_checkpoint_io()]
    trainer = pl.Trainer(
        accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes, strategy=strategy,
        precision=tc.precision, max_epochs=tc.max_epochs, max_steps=tc.max_steps,
        gradient_clip_val=tc.gradient_clip_val,
        accumulate_grad_batches=tc.accumulate_grad_batches, log_every_n_steps=tc.log_every_n_steps,
        logger=loggers, callbacks=callbacks,
        plugins=plugins,
        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=tc.enable_progress_bar,
        enable_model_summary=False, default_root_dir=str(paths.run_dir), deterministic=tc.deterministic,
        enable_checkpointing=False,  # checkpoint_callback writes last.ckpt itself
    )
    last = paths.last_checkpoint
    if trainer.is_global_zero:  # an epoch's checkpoint whose row may not be on disk: that epoch's end reruns
        _remove(pending_checkpoint(paths))
    ckpt = str(last) if last.exists() else None
    _set_aside_metrics(loggers, resuming=ckpt is not None)
    if ckpt:
        print(f"resuming from checkpoint {ckpt}")
    t0 = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    if resume.resumed_at is not None:
        print(f"resumed at optimizer step {resume.resumed_at}; ran {resume.steps} steps")
    # Ranks leave together: rank 0 may still be writing the last epoch's predictions.
    trainer.strategy.barrier("sgft_lab.fit")
    for lg in trainer.loggers:
        lg.finalize("success")
    t = monitor.totals
    tokens_per_s = t["tokens"] / t["seconds"] if t["seconds"] > 0 and t["tokens"] > 0 else None
    padding = 1 - t["tokens"] / t["positions"] if t["positions"] > 0 else None
    return FitOutcome(
        resumed_from_checkpoint=ckpt, epochs_run=trainer.current_epoch, train_time_s=time.time() - t0,
        n_train_pairs=len(dm.train_pairs),
        tokens_per_s=round(tokens_per_s, 2) if tokens_per_s is not None else None,
        padding_fraction=round(padding, 4) if padding is not None else None,
        peak_memory_gib=round(t["peak_gib"], 3) if t["peak_gib"] is not None else None,
        peak_memory_kind=t["kind"], train_tokens=int(t["tokens"]),
        global_rank=trainer.global_rank, world_size=trainer.world_size,
        resumed_at_step=resume.resumed_at, train_steps=resume.steps,
    )


def train_and_evaluate(ctx, student, pairs: Sequence[Pair], paths: RunPaths, spec: EvalSpec, *,
                       cfg: Config | None = None, protocol: str | None = None, select_on: Sequence | None = None,
                       stage: str | None = None, system: str = "student", round: int | None = None,
                       datamodule=None, callbacks: Sequence = (), task_weights: Sequence[float] | None = None
                       ) -> dict:
    """Fine-tune ``student`` on ``pairs`` and evaluate it as the protocol says; record the result entries.

    paper: the test split after every evaluated epoch; the final and the best test epoch are reported (the
      latter is Fine-tune-CoT's selection for its open students: it selects on test).
    clean: the validation split (or ``select_on``: a method's own selection set, e.g. FDD's dev split of the
      round's data) after every evaluated epoch, the best epoch's weights kept (checkpoints/best.pt), then the
      test split read once with them (predictions/test.jsonl). The student ends holding those weights.

    Returns ``{"history", "metrics", "outcome"}``; ``cfg`` replaces the run's config (a stage's own trainer);
    ``task_weights``: a multi-task student's loss weights (``fit``).
    """
    from .errors import DataError
    from .evaluation import accuracy, epoch_history, predict, strict_accuracy, summarize
    from .io import read_jsonl, write_jsonl
    from .run import epoch_entries, rows_entry

    cfg = cfg or ctx.cfg
    protocol = protocol or cfg.protocol
    test = ctx.eval_sets(("test",))["test"]
    if protocol == "paper":
        eval_sets = {"test": test}
    else:
        val = list(select_on) if select_on is not None else ctx.eval_sets(("val",))["val"]
        if not val:
            raise DataError(f"protocol {protocol} selects the model on a validation split, but "
                            f"{cfg.benchmark.name}'s is empty (benchmark.val_fraction / benchmark.n_val)")
        eval_sets = {"val": val}
    outcome = fit(cfg, student, pairs, eval_sets, spec, paths, loggers=ctx.fit_loggers(paths, stage),
                  datamodule=datamodule, callbacks=callbacks, keep_best=protocol != "paper",
                  task_weights=task_weights)
    history = epoch_history(paths)
    common = {"system": system, "round": round, "metric": spec.metric, "protocol": protocol}
    if protocol == "paper":
        entries = epoch_entries(history, **common)
        ctx.add(entries)
        return {"history": history, "metrics": {**summarize(history), "protocol": protocol}, "outcome": outcome,
                "entries": entries}
    best = max(history, key=lambda h: (h["val_accuracy"], -h["epoch"]))
    rows = read_jsonl(paths.test_predictions) if paths.test_predictions.is_file() else []
    if not rows or rows[0].get("epoch") != best["epoch"] or len(rows) != len(test):
        student.load_trainable(paths.best_weights)  # the selected epoch's model; test is read once, here
        rows = predict(student, test, spec, split="test", progress=ctx.progress, epoch=best["epoch"])
        write_jsonl(paths.test_predictions, rows)
    else:
        student.load_trainable(paths.best_weights)  # a finished stage resumed: hand back the selected model
    entries = [rows_entry(rows, selection="dev_selected", epoch=best["epoch"], **common), val_entry(best, **common)]
    ctx.add(entries)
    metrics = {"accuracy": accuracy(rows), "strict_accuracy": strict_accuracy(rows), "protocol": protocol,
               "dev_selected": {"epoch": best["epoch"], "val_accuracy": best["val_accuracy"],
                                "accuracy": accuracy(rows)}}
    return {"history": history, "metrics": metrics, "outcome": outcome, "entries": entries}


def val_entry(best: dict, **common):
    """The validation number the clean protocol selected on, as a result entry."""
    from .run import Entry

    return Entry(common["system"], "val", best["val_accuracy"], best["n_val"], "dev_selected", best["epoch"],
                 common["round"], common["metric"], best.get("val_strict_accuracy"), common["protocol"])

