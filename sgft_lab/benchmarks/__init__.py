"""Benchmarks (config group ``benchmark``): embedded generated tasks and the real datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .record import Example, Splits  # noqa: F401

if TYPE_CHECKING:
    from ..config import BenchmarkConfig


def load_benchmark(cfg: "BenchmarkConfig", data_dir: str | None = None, require_train: bool = True,
                   protocol: str = "clean") -> Splits:
    """Load train/val/test for a benchmark config (nothing is written anywhere). ``require_train=False``:
    a benchmark without its train file still loads (the prompting baselines train nothing).

    ``protocol``: clean carves a seeded validation split out of train (real benchmarks) or keeps the
    generated one (embedded); paper trains on the whole train split and has no validation split, as
    Fine-tune-CoT's code does."""
    if cfg.source == "embedded":
        from dataclasses import replace

        from .embedded import load_embedded

        splits = load_embedded(cfg)
        return replace(splits, val=[]) if protocol == "paper" else splits
    from .loaders import load_real

    return load_real(cfg, data_dir, require_train=require_train, protocol=protocol)
