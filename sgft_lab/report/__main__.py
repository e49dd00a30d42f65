"""`python -m sgft_lab.report DIR [DIR...] [--format md|csv|tex] [--out FILE] [--selection S]`"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .collect import SELECTIONS, entries, load_runs
from .paper import PaperNumbers
from .table import RENDERERS, build_table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sgft_lab.report",
        description="Collect results.json files from run / sweep directories into a paper-style table: rows "
        "method x student, columns benchmarks, mean over seeds with a 95%% bootstrap interval, the "
        "published number and the difference beside each cell, and the teacher cost per cell.",
    )
    ap.add_argument(
        "dirs", nargs="+", help="run or sweep directories (searched recursively for results.json)"
    )
    ap.add_argument("--format", choices=sorted(RENDERERS), default="md")
    ap.add_argument("--out", help="write here instead of printing")
    ap.add_argument(
        "--selection",
        choices=SELECTIONS,
        default="auto",
        help="which test accuracy of a run: auto (default) = the one its protocol reports (protocol paper: the "
        "best test epoch, Fine-tune-CoT's selection for its open students, so the difference to the paper "
        "compares like with like; protocol clean: the test read once at the best validation epoch, the one to "
        "quote for a new claim); or one selection for every run",
    )
    ap.add_argument(
        "--by",
        action="append",
        default=[],
        metavar="KEY",
        help="also split rows by this config key (dotted, e.g. trainer.lr); repeatable",
    )
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument(
        "--paper", help="paper numbers JSON (default: the packaged sgft_lab/report/paper_numbers.json)"
    )
    ap.add_argument("--no-paper", action="store_true", help="leave the published numbers out")
    a = ap.parse_args(argv)
    try:
        runs = load_runs(a.dirs)
        if not runs:
            print(f"sgft_lab.report: no results.json under {' '.join(a.dirs)}", file=sys.stderr)
            return 1
        paper = None if a.no_paper else PaperNumbers.load(a.paper)
        table = build_table(
            entries(runs, a.selection, a.by),
            selection=a.selection,
            paper=paper,
            n_boot=a.n_boot,
            seed=a.seed,
            by=a.by,
        )
    except (OSError, ValueError) as e:
        print(f"sgft_lab.report: {e}", file=sys.stderr)
        return 2
    text = RENDERERS[a.format](table)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text, encoding="utf-8")
        print(f"sgft_lab.report: {len(runs)} runs -> {a.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
