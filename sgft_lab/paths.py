"""One function maps a run's identity to every artifact path (cf. reasoning-teacher's src/paths.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    run_dir: Path

    @property
    def config(self) -> Path:  # resolved config, secrets redacted
        return self.run_dir / "config.yaml"

    @property
    def results(self) -> Path:
        return self.run_dir / "results.json"

    @property
    def metrics_csv(self) -> Path:
        return self.run_dir / "metrics.csv"

    @property
    def predictions_dir(self) -> Path:
        return self.run_dir / "predictions"

    def predictions(self, epoch: int) -> Path:
        return self.predictions_dir / f"epoch_{epoch:03d}.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def teacher_dir(self) -> Path:  # the run's teacher samples and filter report
        return self.run_dir / "teacher"

    @property
    def data_dir(self) -> Path:  # the datasets the student was trained on
        return self.run_dir / "data"

    @property
    def student_dir(self) -> Path:  # tokenizer of a tiny student, final adapter / weights
        return self.run_dir / "student"


def run_paths(run_dir: str | Path) -> RunPaths:
    return RunPaths(Path(run_dir))


def teacher_cache_path(cache_dir: str | Path) -> Path:
    """The shared teacher cache (one SQLite file for every run and teacher)."""
    return Path(cache_dir) / "teacher_cache.sqlite"


def run_name(method: str, benchmark: str, student: str, seed: int) -> str:
    """Human-readable run identity (also the W&B run name)."""
    return f"{method}-{benchmark}-{student}-s{seed}"
