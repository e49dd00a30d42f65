"""Train/test splits: Fine-tune-CoT's shipped index files, seeded random splits, a validation split carved
from train, and n-shot subsampling (all with numpy RandomState, as `src/data/split.py` and
`src/data/generate_split.py` of reasoning-teacher)."""

from __future__ import annotations

from pathlib import Path

SPLIT_DIR = "fine_tune_cot_splits/split"


def split_file(data_dir: Path, task: str, kind: str = "default") -> Path:
    return data_dir / SPLIT_DIR / f"{task}__{kind}.json"


def read_split_file(path: Path) -> tuple[list[int], list[int]]:
    """``{"train": [...], "test": [...]}`` of disjoint sample indices; a missing or malformed file is a DataError
    naming it (and the line, for bad JSON or bytes that are not UTF-8)."""
    from ..errors import DataError, DataFileMissing
    from .sources import _load_json

    if not path.is_file():
        raise DataFileMissing(
            f"{path}: Fine-tune-CoT split file not found (copy data/split/ of "
            "itsnamgyu/reasoning-teacher to <data dir>/fine_tune_cot_splits/split/)"
        )
    d = _load_json(path, str(path))
    out = []
    for key in ("train", "test"):
        v = d.get(key) if isinstance(d, dict) else None
        if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise DataError(f"{path}: field {key!r}: missing or not a list of integers")
        out.append(v)
    train, test = out
    overlap = set(train) & set(test)
    if overlap:
        raise DataError(f"{path}: train and test share {len(overlap)} indices, e.g. {min(overlap)}")
    return train, test


def random_split(indices: list[int], train_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Fine-tune-CoT's `get_random_train_test_indices`: permute with RandomState(seed), the first
    round(n * train_fraction) are train; both halves sorted."""
    import numpy as np

    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"benchmark.train_fraction must be in (0, 1), got {train_fraction}")
    perm = np.random.RandomState(seed).permutation(sorted(indices)).tolist()
    n_train = round(len(perm) * train_fraction)
    return sorted(perm[:n_train]), sorted(perm[n_train:])


def carve_val(train: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out round(len(train) * val_fraction) training indices as validation (seeded), so model selection
    never touches test (our choice; methods.md 1.4 `dev_selected`). Returns (train, val), both sorted."""
    import numpy as np

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"benchmark.val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(len(train) * val_fraction)
    if n_val == 0:
        return sorted(train), []
    perm = np.random.RandomState(seed).permutation(sorted(train)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def subsample(indices: list[int], n: int, seed: int) -> list[int]:
    """Fine-tune-CoT's `subsample_indices` (the 8/32/128-shot ablations): permute the indices with
    RandomState(seed), keep the first n, sort. Smaller n give subsets of larger n. (The official code permutes
    the split file's list as stored; every official split file stores it sorted, so sorting first changes
    nothing there and makes the result independent of the caller's order.)"""
    import numpy as np

    if n < 1:
        raise ValueError(f"benchmark.n_shot must be >= 1, got {n}")
    if n > len(indices):
        raise ValueError(
            f"benchmark.n_shot={n} exceeds the {len(indices)} training questions of the split"
        )
    perm = np.random.RandomState(seed).permutation(sorted(indices)).tolist()
    return sorted(perm[:n])
