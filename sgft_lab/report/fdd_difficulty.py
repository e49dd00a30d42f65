"""FDD runs on an embedded benchmark, round by round and by difficulty (experiments/effects/README.md, effect 2).

For each FDD run under the given directories whose benchmark is embedded (each question's difficulty = its
number of operations, people or words), one table, a row per round:

- the split's accuracy at each difficulty (the round's clean read: test, or val with ``method.read_val``);
- the feedback's solve rate (round r-1's student, which decided round r's new problems) on the drawn pool
  problems, by difficulty for the benchmark's training problems, ``new`` for problems added in earlier rounds.
  Above round r-1's rate on the split at the same difficulty, the feedback reads
  memorisation (the student solves problems it trained on, not their kind), so FDD asks harder variants of
  kinds it has not learned;
- the new problems kept, by kind (FDD: harder / similar; the control: similar only).

    python -m sgft_lab.report.fdd_difficulty <sweep dirs> [--split val]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_jsonl
from ..paths import RunPaths
from .collect import Run, load_runs

NEW = "new"  # the pool problems an earlier round added (no benchmark difficulty)


@dataclass
class Round:
    """One round of one run: (correct, n) per difficulty on the split and on the feedback; kept new problems."""

    round: int
    split: dict[int, tuple[int, int]] = field(default_factory=dict)
    pool: dict[int | str, tuple[int, int]] = field(default_factory=dict)  # the feedback this round read
    kept: Counter = field(default_factory=Counter)


def _tally(rows: Sequence[dict], key) -> dict:
    out: dict = {}
    for row in rows:
        k = key(row)
        c, n = out.get(k, (0, 0))
        out[k] = (c + bool(row["correct"]), n + 1)
    return dict(sorted(out.items(), key=lambda kv: (isinstance(kv[0], str), kv[0])))


def difficulties(run: Run) -> tuple[dict[str, int], dict[str, int]]:
    """(question id -> difficulty) of the run's benchmark: its training problems, and its val + test questions.
    Raises ValueError when the benchmark is not embedded (no difficulty per question)."""
    from ..benchmarks import load_benchmark
    from ..config import BenchmarkConfig

    b = run.config.get("benchmark") or {}
    if b.get("source") != "embedded":
        raise ValueError(f"{run.path.parent}: benchmark {b.get('name')!r} is not embedded (no difficulty per "
                         f"question)")
    s = load_benchmark(BenchmarkConfig(**b))
    return ({x.id: int(x.meta["difficulty"]) for x in s.train},
            {x.id: int(x.meta["difficulty"]) for x in [*s.val, *s.test]})


def run_rounds(run: Run, split: str = "test") -> list[Round]:
    """Each round's figures, from the round's saved files (rounds/round_r/)."""
    train, evals = difficulties(run)
    bench = run.config["benchmark"]["name"]
    paths = RunPaths(run.path.parent)
    out = []
    for r in range(len(run.results["details"]["rounds"])):
        rp = paths.round(r)
        pred = rp.read_predictions("val", bench) if split == "val" else rp.test_predictions
        if not pred.is_file():
            hint = " (a val read needs method.read_val=true)" if split == "val" else " (the round's files are gone)"
            raise ValueError(f"{pred}: no {split} read of round {r}{hint}")
        rnd = Round(r, split=_tally(read_jsonl(pred), lambda x: evals[x["id"]]))
        if rp.feedback.is_file():  # rounds >= 1
            rows = [x for x in read_jsonl(rp.feedback) if x.get("correct") is not None]  # the control: none
            rnd.pool = _tally(rows, lambda x: train.get(x["id"], NEW))
        if rp.generated.is_file():
            rnd.kept = Counter(c["kind"] for c in read_jsonl(rp.generated) if c["status"] == "kept")
        out.append(rnd)
    return out


def _pct(tally: dict) -> str:
    return " · ".join(f"{k}: {100 * c / n:.0f}% of {n}" for k, (c, n) in tally.items()) or "-"


def table(run: Run, rounds: list[Round], split: str) -> str:
    d = run.results["details"]
    head = (f"### seed {run.results['run'].get('seed')}, {'FDD' if d.get('feedback', True) else 'no-feedback control'}"
            f": {run.path.parent}")
    lines = [head, "", f"| round | {split} | {split} by difficulty | feedback: pool solved by round r-1's student | new kept |",
             "|---|---|---|---|---|"]
    for x in rounds:
        c, n = map(sum, zip(*x.split.values())) if x.split else (0, 0)
        acc = f"{100 * c / n:.1f}" if n else "-"
        kept = ", ".join(f"{k} {v}" for k, v in sorted(x.kept.items())) or "-"
        lines.append(f"| {x.round} | {acc} | {_pct(x.split)} | {_pct(x.pool)} | {kept} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sgft_lab.report.fdd_difficulty", description=__doc__.split("\n")[0])
    ap.add_argument("dirs", nargs="+", help="run or sweep directories (FDD runs on embedded benchmarks)")
    ap.add_argument("--split", choices=("test", "val"), default="test")
    args = ap.parse_args(argv)
    try:
        runs = [r for r in load_runs(args.dirs) if (r.results.get("details") or {}).get("rounds")]
        if not runs:
            raise ValueError(f"no FDD run (results.json with rounds) under {' '.join(args.dirs)}")
        runs.sort(key=lambda r: (r.results["run"].get("seed"), not r.results["details"].get("feedback", True)))
        print("\n\n".join(table(r, run_rounds(r, args.split), args.split) for r in runs))
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
