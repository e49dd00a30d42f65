"""Inspect a real benchmark without training anything (no torch import).

    python -m sgft_lab.data describe --benchmark KEY [--data-dir DIR] [--split NAME] [--n-shot N]

Prints the split sizes (the split's own train count, then train/val after carving validation), one rendered
example, and as its last line a JSON object {"benchmark", "split", "train", "val", "test"} with the carved
counts. The config is conf/benchmark/KEY.yaml (or the same defaults when conf/ is not beside the package).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap



def benchmark_config(key: str):
    """conf/benchmark/<key>.yaml as a BenchmarkConfig (every key the app accepts, embedded ones included); a
    real benchmark without a config file gets its defaults; unknown keys fail listing the known ones."""
    from ..benchmarks.loaders import KNOWN, default_config, get_spec
    from ..config import BenchmarkConfig
    from ..tiers import conf_dir

    path = conf_dir() / "benchmark" / f"{key}.yaml"
    if not path.is_file():
        if key not in KNOWN:
            embedded = sorted(f.stem for f in path.parent.glob("embedded_*.yaml"))
            raise ValueError(f"unknown benchmark {key!r}; known: {', '.join([*KNOWN, *embedded])}")
        get_spec(key)
        return default_config(key)
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    try:
        return BenchmarkConfig(**data)
    except TypeError as e:
        raise ValueError(f"{path}: {e}") from None


def _indent(text: str, limit: int) -> str:
    text = text if len(text) <= limit else text[:limit] + " [...]"
    return textwrap.indent(text, "    ").lstrip()


def describe(args: argparse.Namespace) -> int:
    from ..benchmarks.loaders import carve, load_pools

    cfg = benchmark_config(args.benchmark)
    if cfg.source == "embedded":
        return describe_embedded(args, cfg)
    if args.split:
        cfg.split = args.split
    if args.n_shot is not None:
        cfg.n_shot = args.n_shot
    pools = load_pools(cfg, args.data_dir, require_train=False)
    splits = carve(pools, cfg, args.protocol)
    counts = splits.counts()

    print(f"benchmark {args.benchmark} (task {splits.task}, source {cfg.source}, split {cfg.split})")
    which = "official train" if cfg.split.startswith("fine_tune_cot") else "random-split train"
    if pools.missing_train:
        print(f"{which}: {pools.n_split_train} (not loadable: {pools.missing_train})")
        print("train: 0, val: 0 (methods that train on this benchmark fail until the file is supplied)")
    else:
        if cfg.n_shot is not None:
            print(f"n_shot {cfg.n_shot}: train {pools.n_split_train} -> {counts['train']} "
                  "(Fine-tune-CoT's subsample_indices, seed 0)")
        how = (f"val_fraction {cfg.val_fraction}, data_seed {cfg.data_seed}" if args.protocol == "clean"
               else "protocol paper: the whole train split, no validation")
        print(f"{which}: {pools.n_split_train} -> train {counts['train']} + val {counts['val']} ({how})")
    print(f"test: {counts['test']}")
    for note in pools.notes:
        print(f"note: {note}")
    part = "train" if splits.train else "test"
    ex = (splits.train or splits.test or [None])[0]
    if ex is not None:
        print(f"example {ex.id} ({part}, {ex.answer_type}):")
        print(f"  question: {_indent(ex.question, 800)}")
        print(f"  answer: {ex.answer}")
        if ex.rationale:
            print(f"  rationale: {_indent(ex.rationale, 240)}")
    print(json.dumps({"benchmark": args.benchmark, "split": cfg.split, **counts}))
    return 0


def describe_embedded(args: argparse.Namespace, cfg) -> int:
    """An embedded task: generated, so no data dir; its sizes (``--n-shot`` sets n_train) and one example
    with its solution trace."""
    from ..benchmarks import load_benchmark

    if args.n_shot is not None:
        cfg.n_train = args.n_shot
    splits = load_benchmark(cfg, protocol=args.protocol)
    counts = splits.counts()
    print(f"benchmark {args.benchmark} (embedded generator {cfg.generator}, scored as {splits.task}, "
          f"difficulty {cfg.difficulty_mix or cfg.difficulty}, data_seed {cfg.data_seed})")
    print(f"train {counts['train']}, val {counts['val']}, test {counts['test']}"
          + (" (protocol paper: no validation split)" if args.protocol == "paper" else ""))
    ex = splits.train[0] if splits.train else splits.test[0]
    print(f"example {ex.id} ({ex.answer_type}):")
    print(f"  question: {_indent(ex.question, 800)}")
    print(f"  answer: {ex.answer}")
    if ex.rationale:
        print(f"  rationale: {_indent(ex.rationale, 240)}")
    print(json.dumps({"benchmark": args.benchmark, "split": "embedded", **counts}))
    return 0


def main(argv: list[str] | None = None) -> int:
    from ..benchmarks.loaders import KNOWN, SPLITS

    parser = argparse.ArgumentParser(prog="python -m sgft_lab.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe", help="split sizes and one rendered example of a benchmark")
    d.add_argument("--benchmark", required=True, metavar="KEY",
                   help=f"one of: {', '.join(KNOWN)}, or an embedded task (embedded_arithmetic, ...)")
    d.add_argument(
        "--data-dir",
        default=None,
        help="benchmark files in the layout of ../shared/data (default: $SGFT_LAB_DATA_DIR)",
    )
    d.add_argument("--split", choices=SPLITS, default=None, help="default: the benchmark config's split")
    d.add_argument("--n-shot", type=int, default=None, help="subsample this many training questions")
    d.add_argument("--protocol", choices=("clean", "paper"), default="clean",
                   help="clean: a seeded validation carve (default); paper: the whole train split")
    args = parser.parse_args(argv)
    try:
        return describe(args)
    except (ValueError, FileNotFoundError) as e:  # bad key / data: one clear line, no traceback
        print(f"sgft_lab.data: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
