"""Benchmarks (config group ``benchmark``): embedded generated tasks and the real datasets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .record import Example, Splits  # noqa: F401

if TYPE_CHECKING:
    from ..config import BenchmarkConfig


def load_benchmark(cfg: "BenchmarkConfig", data_dir: str | None = None, require_train: bool = True) -> Splits:
    """Load train/val/test for a benchmark config (nothing is written anywhere). ``require_train=False``:
    a benchmark without its train file still loads (the prompting baselines train nothing)."""
    if cfg.source == "embedded":
        from .embedded import load_embedded

        return load_embedded(cfg)
    from .loaders import load_real

    return load_real(cfg, data_dir, require_train=require_train)
