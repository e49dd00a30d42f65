"""Every artifact path of a run, from its identity (cf. reasoning-teacher's src/paths.py).

``run_dir_for(cfg, hydra)`` maps a run's identity to its folder; ``RunPaths`` names every file under it,
the stages (SGFT's guide, response and CoT-FT baseline) and FDD's rounds included, so no method types a
path of its own. The layout is documented in outputs/README.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunPaths:
    """The files of one run (or of one stage of a run: the same names under the stage's folder)."""

    run_dir: Path

    # --- the run's own record ---------------------------------------------------------------------------
    @property
    def config(self) -> Path:  # resolved config, secrets redacted
        return self.run_dir / "config.yaml"

    @property
    def overrides(self) -> Path:  # the command-line overrides that made this run
        return self.run_dir / "overrides.txt"

    @property
    def results(self) -> Path:
        return self.run_dir / "results.json"

    @property
    def metrics_csv(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def lock(self) -> Path:  # held by the process running in this dir (sgft_lab/runlock.py)
        return self.run_dir / ".lock"

    @property
    def lock_owner(self) -> Path:  # the pid and host of the process holding the lock
        return self.run_dir / ".lock.owner"

    # --- evaluation and training --------------------------------------------------------------------------
    @property
    def predictions_dir(self) -> Path:
        return self.run_dir / "predictions"

    def predictions(self, epoch: int) -> Path:
        return self.predictions_dir / f"epoch_{epoch:03d}.jsonl"

    @property
    def test_predictions(self) -> Path:  # clean protocol: the one test read, at the selected epoch
        return self.read_predictions("test")

    def read_predictions(self, split: str, benchmark: str | None = None, cot: bool = False) -> Path:
        """One read's rows: ``predictions/<split>[_cot][_<benchmark>].jsonl`` (FDD's extra reads: the CoT read
        of a mixed student, the benchmark's val split, each OOD test)."""
        return self.predictions_dir / ("_".join([split] + (["cot"] if cot else []) + ([benchmark] if benchmark
                                                                                       else [])) + ".jsonl")

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / "last.ckpt"

    @property
    def best_weights(self) -> Path:  # the best validation epoch's weights (clean protocol, FDD's dev split)
        return self.checkpoints_dir / "best.pt"

    # --- teacher data -------------------------------------------------------------------------------------
    @property
    def teacher_dir(self) -> Path:  # the run's teacher samples and filter report
        return self.run_dir / "teacher"

    @property
    def teacher_samples(self) -> Path:  # every teacher sample with its filter verdict
        return self.teacher_dir / "samples.jsonl"

    @property
    def filter_report(self) -> Path:
        return self.teacher_dir / "filter_report.json"

    @property
    def guidance(self) -> Path:  # SGFT: the teacher's solution guidance, first attempt and retry
        return self.teacher_dir / "guidance.jsonl"

    # --- what the student trains on ---------------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def train_data(self) -> Path:  # the (input, label) pairs the student is fine-tuned on
        return self.data_dir / "train.jsonl"

    @property
    def few_shot_prompt(self) -> Path:  # few_shot_cot: the exemplar block used
        return self.data_dir / "few_shot_prompt.txt"

    @property
    def student_dir(self) -> Path:  # tokenizer and random init of a tiny student, trained weights
        return self.run_dir / "student"

    @property
    def weights(self) -> Path:  # a stage's trained (trainable) weights, for a later stage to load
        return self.student_dir / "weights.pt"

    # --- stages ------------------------------------------------------------------------------------------
    def stage(self, name: str) -> "RunPaths":
        """A stage with files of its own: SGFT's ``guide`` and ``cot_ft_x{k}``."""
        return RunPaths(self.run_dir / name)

    @property
    def response_dir(self) -> Path:  # SGFT: the response model's answers, one file per system
        return self.run_dir / "response"

    def response_rows(self, system: str) -> Path:
        return self.response_dir / f"{system}.jsonl"

    # --- FDD rounds --------------------------------------------------------------------------------------
    def round(self, r: int) -> "RunPaths":
        return RunPaths(self.run_dir / "rounds" / f"round_{r}")

    @property
    def dataset(self) -> Path:  # FDD: this round's version of the problem pool (marks its data step done)
        return self.run_dir / "dataset.jsonl"

    @property
    def counts(self) -> Path:  # FDD: the round's easy / hard / kept / rejected counts
        return self.run_dir / "counts.json"

    @property
    def feedback(self) -> Path:  # FDD: the previous round's student on the pool (easy / hard)
        return self.run_dir / "feedback.jsonl"

    @property
    def generated(self) -> Path:  # FDD: every new problem the teacher wrote and what became of it
        return self.run_dir / "generated.jsonl"

    @property
    def summary(self) -> Path:  # FDD: the finished round's numbers (marks the round done)
        return self.run_dir / "summary.json"


def run_paths(run_dir: str | Path) -> RunPaths:
    return RunPaths(Path(run_dir))


def teacher_cache_path(cache_dir: str | Path) -> Path:
    """The shared teacher cache (one SQLite file for every run and teacher)."""
    return Path(cache_dir) / "teacher_cache.sqlite"


def response_model_dir(cache_dir: str | Path, identity: dict[str, Any]) -> Path:
    """SGFT, embedded tier: the pre-trained tiny response model, shared by every run with that identity."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(cache_dir) / "sgft_response" / key


def run_name(method: str, benchmark: str, student: str, seed: int) -> str:
    """Human-readable run identity (also the W&B run name)."""
    return f"{method}-{benchmark}-{student}-s{seed}"


@dataclass(frozen=True)
class HydraJob:
    """What Hydra knows about the job: the sweep folder and job number (multirun), the overrides."""

    sweep_dir: str | None = None  # None: a single run
    job_num: int | None = None
    override_dirname: str = ""
    overrides: tuple[str, ...] = ()


def run_dir_for(cfg: Any, job: HydraJob) -> Path:
    """The run's folder, a function of its identity (after the tier is applied):

    single run  ``<output_dir>/runs/<method>/<benchmark>/<student>/<teacher>/seed<S>/<overrides>``
    sweep job   ``<sweep dir>/<method>/<benchmark>/<student>/<teacher>/seed<S>/<job number>``

    A single run's folder is the same for the same command, so a rerun resumes there; ``<overrides>`` is the
    command's other overrides (hashed when long), ``default`` when there are none.
    """
    from .config import override_slug

    ident = Path(cfg.method.name, cfg.benchmark.name, cfg.student.name, cfg.teacher.name, f"seed{cfg.seed}")
    if job.sweep_dir is not None:
        return Path(job.sweep_dir) / ident / str(job.job_num)
    return Path(cfg.paths.output_dir) / "runs" / ident / override_slug(job.override_dirname)
