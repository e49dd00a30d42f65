"""The real benchmarks (config group ``benchmark`` with source local | hub), with Fine-tune-CoT's exact
preprocessing and splits (methods.md 1.1, 1.2, 2.7).

    load_real(cfg, data_dir) -> Splits

1. Read every raw row of the benchmark in Fine-tune-CoT's unified index order (sources.py), from files laid
   out as ../shared/data (data dir: argument, else ``cfg.data_dir``, else $SGFT_LAB_DATA_DIR) or from the hub.
2. Render every row into an Example (preprocess.py); all rows, in file order, so the Date choice shuffle draws
   the same RandomState(0) stream as the original.
3. Split: ``fine_tune_cot`` / ``fine_tune_cot_template`` read the shipped index files; ``random`` is the
   seeded 70/30 of `generate_split.py` (``cfg.train_fraction``, ``cfg.data_seed``).
4. Carve validation from train (``cfg.val_fraction``, seeded), then subsample ``cfg.n_shot`` training
   questions (seeded). Test is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, DataFileMissing
from . import preprocess as pp
from . import sources as src
from .record import Example, Splits
from .sources import MissingTrainData, Part
from .splits import carve_val, random_split, read_split_file, split_file, subsample

if TYPE_CHECKING:
    from ..config import BenchmarkConfig

SPLITS = ("fine_tune_cot", "fine_tune_cot_template", "random")
AQUA_TRAIN_HINT = (
    "supply AQuA-RAT's train.json (97,467 problems, JSON Lines, from github.com/deepmind/AQuA) "
    "as aqua/train.json in the data dir"
)


@dataclass(frozen=True)
class Spec:
    """How one benchmark is read and rendered."""

    key: str  # Fine-tune-CoT task key (= scoring key; asdiv/mawps: their own)
    parts: tuple[Part, ...]
    parse: Callable[..., Example | None]
    shuffle_seed: int | None = None  # Date: one RandomState stream over the choices, in file order
    ftcot_split: bool = True  # has official Fine-tune-CoT split files
    template_split: bool = False
    hub_id: str | None = None
    hub_config: str | None = None
    hub_splits: tuple[str, ...] = ()
    hub_adapter: Callable[[dict], dict] = src.same
    # The hub splits, concatenated, list the rows in the raw files' order, so the official split indices
    # apply to hub rows too (inferred from how those hub datasets were built; not checked offline).
    hub_order_matches: bool = False


SPECS: dict[str, Spec] = {
    s.key: s
    for s in [
        Spec("single_eq", (Part("singleeq/questions.json", "json_list"),), pp.single_eq),
        Spec("addsub", (Part("addsub/AddSub.json", "json_list"),), pp.addsub),
        Spec(
            "multiarith",
            (Part("multiarith/MultiArith.json", "json_list"),),
            pp.multiarith,
            template_split=True,
            hub_id="ChilleD/MultiArith",
            hub_splits=("train", "test"),
            hub_adapter=src.multiarith_from_hub,
        ),
        Spec(
            "gsm8k",
            (Part("gsm8k/train.jsonl", "jsonl"), Part("gsm8k/test.jsonl", "jsonl")),
            pp.gsm8k,
            hub_id="openai/gsm8k",
            hub_config="main",
            hub_splits=("train", "test"),
            hub_order_matches=True,
        ),
        Spec(
            "aqua",
            (
                Part("aqua/train.json", "jsonl", absent_rows=97_467, obtain=AQUA_TRAIN_HINT),
                Part("aqua/test.json", "jsonl"),
            ),
            pp.aqua,
            hub_id="deepmind/aqua_rat",
            hub_config="raw",
            hub_splits=("train", "test"),
            hub_order_matches=True,
        ),
        Spec(
            "svamp",
            (Part("svamp/SVAMP.json", "json_list"),),
            pp.svamp,
            hub_id="ChilleD/SVAMP",
            hub_splits=("train", "test"),
        ),
        Spec(
            "date_understanding",
            (Part("date_understanding/task.json", "examples"),),
            pp.bigbench_choice,
            shuffle_seed=0,
            template_split=True,
            hub_id="tasksource/bigbench",
            hub_config="date_understanding",
            hub_splits=("train", "validation"),
            hub_adapter=src.bigbench_from_hub,
        ),
        Spec(
            "tracking_shuffled_objects",
            (Part("tracking_shuffled_objects/task.json", "examples"),),
            pp.bigbench_choice,
            hub_id="tasksource/bigbench",
            hub_config="tracking_shuffled_objects",
            hub_splits=("train", "validation"),
            hub_adapter=src.bigbench_from_hub,
        ),
        Spec(
            "last_letter_concatenation",
            (Part("last_letters/last_letters.json", "examples"),),
            pp.kojima_plain("text"),
            hub_id="ChilleD/LastLetterConcat",
            hub_splits=("train", "test"),
        ),
        Spec("coin_flip", (Part("coin_flip/coin_flip.json", "examples"),), pp.kojima_plain("yes_no")),
        Spec(
            "commonsense_qa",
            (
                Part("commonsenseqa/train_rand_split.jsonl", "jsonl"),
                Part("commonsenseqa/dev_rand_split.jsonl", "jsonl"),
            ),
            pp.commonsense_qa,
            hub_id="tau/commonsense_qa",
            hub_splits=("train", "validation"),
            hub_adapter=src.csqa_from_hub,
            hub_order_matches=True,
        ),
        Spec(
            "strategy_qa",
            (Part("strategyqa/task.json", "examples"),),
            pp.strategy_qa,
            hub_id="tasksource/bigbench",
            hub_config="strategyqa",
            hub_splits=("train", "validation"),
            hub_adapter=src.bigbench_from_hub,
        ),
        # Not Fine-tune-CoT tasks (FDD's out-of-domain sets): random splits only.
        Spec(
            "asdiv",
            (Part("asdiv/ASDiv.xml", "asdiv_xml"),),
            pp.asdiv,
            ftcot_split=False,
            hub_id="EleutherAI/asdiv",
            hub_config="asdiv",
            hub_splits=("validation",),
            hub_adapter=src.asdiv_from_hub,
        ),
        # MAWPS: all 1,921 problems = fold0 train + fold0 dev of the SVAMP repository's 5-fold CV files.
        Spec(
            "mawps",
            (Part("mawps/cv_mawps/fold0/train.csv", "csv"), Part("mawps/cv_mawps/fold0/dev.csv", "csv")),
            pp.mawps,
            ftcot_split=False,
        ),
    ]
}

KNOWN = tuple(SPECS)
FTCOT_TASKS = tuple(k for k, s in SPECS.items() if s.ftcot_split)


def get_spec(cfg_or_key: BenchmarkConfig | str) -> Spec:
    """The benchmark of a config (its name, else its task) or of a key; unknown -> error listing them."""
    if isinstance(cfg_or_key, str):
        if cfg_or_key in SPECS:
            return SPECS[cfg_or_key]
        raise DataError(f"unknown benchmark {cfg_or_key!r}; known: {', '.join(KNOWN)}")
    for key in (cfg_or_key.name, cfg_or_key.task):
        if key in SPECS:
            return SPECS[key]
    raise DataError(
        f"unknown benchmark {cfg_or_key.name!r} (task {cfg_or_key.task!r}); known: {', '.join(KNOWN)}"
    )


# Where the data lives when nothing says: ./data (the project's own folder), then ../shared/data (a checkout
# with the shared data folder beside it, as on the machines this project is developed and tested on).
DEFAULT_DATA_DIRS = ("data", "../shared/data")


def resolve_data_dir(data_dir: str | os.PathLike | None, cfg: BenchmarkConfig) -> Path:
    """Argument, else cfg.data_dir, else $SGFT_LAB_DATA_DIR, else the first of DEFAULT_DATA_DIRS that exists."""
    d = data_dir or cfg.data_dir or os.environ.get("SGFT_LAB_DATA_DIR")
    d = d or next((p for p in DEFAULT_DATA_DIRS if Path(p).is_dir()), None)
    if not d:
        raise DataError(
            f"benchmark {cfg.name!r} needs a data dir (the layout of ../shared/data): pass "
            "paths.data_dir=DIR (or --data-dir DIR), set benchmark.data_dir, or export "
            f"SGFT_LAB_DATA_DIR=DIR (none of {', '.join(DEFAULT_DATA_DIRS)} exists here)"
        )
    p = Path(d).expanduser()
    if not p.is_dir():
        raise DataFileMissing(
            f"data dir {p} does not exist (from the argument, benchmark.data_dir or SGFT_LAB_DATA_DIR)"
        )
    return p


@dataclass
class Pools:
    """All rendered examples plus the split's train/test sample indices, before val carving and n-shot."""

    task: str
    examples: dict[int, Example]
    train: list[int]
    test: list[int]
    missing_train: str | None = None  # set (with train empty) when the train file is absent
    notes: list[str] = field(default_factory=list)
    n_split_train: int = 0  # train size the split defines (AQuA: 10,000 even when its file is absent)


def load_pools(
    cfg: BenchmarkConfig,
    data_dir: str | os.PathLike | None = None,
    *,
    data_files: Any = None,
    require_train: bool = True,
) -> Pools:
    """Read, render and split a benchmark (no val carving, no n-shot).

    With ``require_train=False`` a missing train file (AQuA) leaves train empty and says so in
    ``missing_train``; with True it raises MissingTrainData naming the file to supply.
    """
    spec = get_spec(cfg)
    split = cfg.split
    if split not in SPLITS:
        raise DataError(f"benchmark.split={split!r} is not one of {SPLITS}")
    if split.startswith("fine_tune_cot") and not spec.ftcot_split:
        raise DataError(f"{spec.key} has no Fine-tune-CoT split; use benchmark.split=random")
    if split == "fine_tune_cot_template" and not spec.template_split:
        have = [k for k, s in SPECS.items() if s.template_split]
        raise DataError(f"{spec.key} has no template split; only {', '.join(have)} do")
    if cfg.source not in ("local", "hub"):
        raise DataError(f"benchmark.source={cfg.source!r}: real benchmarks load from 'local' or 'hub'")
    root = resolve_data_dir(data_dir, cfg) if cfg.source == "local" or split != "random" else None

    notes: list[str] = []
    missing: str | None = None
    if cfg.source == "hub":
        rows = _hub_rows(spec, cfg, data_files)
        notes.append(f"rows from the hub ({cfg.hub_id or spec.hub_id})")
    else:
        assert root is not None
        rows, missing = _local_rows(spec, root)

    rng = None
    if spec.shuffle_seed is not None:
        import numpy as np

        rng = np.random.RandomState(spec.shuffle_seed)
    examples: dict[int, Example] = {}
    for row in rows:  # every row in file order (the Date shuffle stream depends on it)
        ex = spec.parse(row, spec.key, rng=rng)
        if ex is not None:
            examples[row.index] = ex
    skipped = len(rows) - len(examples)
    if skipped:
        notes.append(f"{skipped} of {len(rows)} problems skipped (answer is not a single number)")

    if split == "random":
        if missing:
            raise MissingTrainData(missing)
        train, test = random_split(list(examples), cfg.train_fraction, cfg.data_seed)
        n_split_train = len(train)
        notes.append(f"random split: train_fraction {cfg.train_fraction}, seed {cfg.data_seed}")
    else:
        assert root is not None
        path = split_file(root, spec.key, "template" if split == "fine_tune_cot_template" else "default")
        train, test = read_split_file(path)
        n_split_train = len(train)
        _check_indices(path, "test", test, examples)
        if missing:
            if require_train:
                raise MissingTrainData(missing)
            train = []
        else:
            _check_indices(path, "train", train, examples)
    return Pools(spec.key, examples, train, test, missing, notes, n_split_train)


def carve(pools: Pools, cfg: BenchmarkConfig, protocol: str = "clean") -> Splits:
    """The training set, then validation by protocol.

    n-shot: Fine-tune-CoT's ``subsample_indices(train, n, 0)`` over the whole official train split, the same
    subset under both protocols. paper: no validation split (the official code trains on all of train and
    evaluates test every epoch). clean: ``val_fraction`` of the train split carved out (seeded) -- from the
    questions outside the n-shot subset when there is one, so the subset stays the official one.
    """
    full = pools.train
    train = subsample(full, cfg.n_shot, 0) if cfg.n_shot is not None and not pools.missing_train else full
    val: list[int] = []
    if protocol == "clean":
        if train is full:
            train, val = carve_val(full, cfg.val_fraction, cfg.data_seed)
        else:
            rest = sorted(set(full) - set(train))
            n_val = min(len(rest), round(len(full) * cfg.val_fraction))
            val = subsample(rest, n_val, cfg.data_seed) if n_val else []
    ex = pools.examples
    return Splits(pools.task, [ex[i] for i in train], [ex[i] for i in val], [ex[i] for i in pools.test])


def load_real(
    cfg: BenchmarkConfig,
    data_dir: str | os.PathLike | None = None,
    *,
    data_files: Any = None,
    require_train: bool = True,
    protocol: str = "clean",
) -> Splits:
    """Train/val/test Examples of a real benchmark (see the module docstring). Nothing is written anywhere.

    ``data_files`` (or ``benchmark.hub_data_files``) goes to ``datasets.load_dataset`` for source=hub, e.g.
    hub_id="json" with files in the hub's format. ``require_train=False`` lets test-only use (prompting
    baselines) load AQuA without its train file; train and val are then empty.
    """
    return carve(load_pools(cfg, data_dir, data_files=data_files, require_train=require_train), cfg, protocol)


def default_config(key: str) -> BenchmarkConfig:
    """The config conf/benchmark/<key>.yaml holds (for callers without Hydra)."""
    from ..config import BenchmarkConfig

    spec = get_spec(key)
    return BenchmarkConfig(
        name=key,
        task=key,
        source="local",
        generator=None,
        split="fine_tune_cot" if spec.ftcot_split else "random",
        val_fraction=0.1,
        hub_id=spec.hub_id,
        hub_config=spec.hub_config,
    )


# --- rows ---------------------------------------------------------------------------------------------------


def _local_rows(spec: Spec, root: Path) -> tuple[list[pp.Row], str | None]:
    rows: list[pp.Row] = []
    missing = None
    offset = 0
    for part in spec.parts:
        if part.absent_rows is not None and not (root / part.path).is_file():
            missing = f"{spec.key}: {root / part.path} is missing: {part.obtain}"
            offset += part.absent_rows  # keep the unified indices of the parts after it
            continue
        got = src.read_part(root, part, offset)
        rows.extend(got)
        offset += len(got)
    return rows, missing


def _hub_rows(spec: Spec, cfg: BenchmarkConfig, data_files: Any) -> list[pp.Row]:
    hub_id = cfg.hub_id or spec.hub_id
    hub_config = cfg.hub_config if cfg.hub_id else spec.hub_config
    if not hub_id:
        raise DataError(
            f"no hub dataset is known for {spec.key}; set benchmark.hub_id (and hub_config) or use "
            "benchmark.source=local"
        )
    if cfg.split != "random" and not spec.hub_order_matches and not cfg.hub_order_matches:
        raise DataError(
            f"{spec.key}: the hub copy ({hub_id}) is not known to list rows in the raw files' order, "
            "so Fine-tune-CoT's split indices cannot be applied to it; use benchmark.source=local or "
            "benchmark.split=random"
        )
    splits = tuple(cfg.hub_splits or spec.hub_splits)
    return src.hub_rows(
        hub_id,
        hub_config,
        [(s, spec.hub_adapter) for s in splits],
        data_files=data_files if data_files is not None else cfg.hub_data_files,
        cache_dir=cfg.hub_cache_dir,
    )


def _check_indices(path: Path, key: str, indices: list[int], examples: dict[int, Example]) -> None:
    bad = [i for i in indices if i not in examples]
    if bad:
        top = max(examples) if examples else -1
        raise DataError(
            f"{path}: field {key!r}: index {bad[0]} ({len(bad)} in all) has no row in the data "
            f"(rows 0..{top}); wrong data dir or files?"
        )
