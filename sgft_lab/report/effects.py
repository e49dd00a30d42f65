"""The papers' effects on the embedded tier (experiments/effects/README.md).

From the runs of the ``conf/experiment/effects/`` presets (any directories holding their results.json files),
each effect's arms -- mean test accuracy over seeds with a 95% bootstrap interval (report.bootstrap_ci) -- and
the differences that state the effect, with their intervals: paired (report.bootstrap_paired_diff_ci) where
both arms recorded per-question outcomes on the same questions for the same seeds -- the presets' arms share
seeds and test questions -- else each arm resampled independently (report.bootstrap_diff_ci; runs written
before entries kept outcomes). The table says which.

- ``effects/ft_cot_difficulty``: Fine-tune-CoT minus vanilla fine-tuning, per difficulty (reasoning steps);
- ``effects/diverse_reasoning``: D rationales per question minus D = 1;
- ``effects/fdd``: FDD's round r minus the no-feedback control's round r, in domain and on each OOD set;
- ``effects/sgft``: the response model with the guide's guidance minus the same model alone (its best of
  zero-shot and zero-shot-CoT), for the response model the guide was trained with and for the transfer model.

    python -m sgft_lab.report.effects outputs/multirun [more dirs]     # Markdown, one section per effect
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .collect import Entry, entries, load_runs
from .table import bootstrap_ci, bootstrap_diff_ci, bootstrap_paired_diff_ci


@dataclass
class Arm:
    """One condition: per-seed test accuracies (fractions) and their question counts."""

    label: str
    values: list[float]
    ns: list[int | None]
    seeds: list[int] = field(default_factory=list)
    outcomes: list[tuple[str | None, str | None]] = field(default_factory=list)  # (outcomes, questions) per seed

    def ci(self) -> tuple[float, float, float]:
        lo, hi = bootstrap_ci(self.values, self.ns)
        return sum(self.values) / len(self.values), lo, hi


@dataclass
class Comparison:
    """``a`` minus ``b``: the effect, with its interval."""

    label: str
    a: Arm
    b: Arm

    def pairs(self) -> list[tuple[str, str]] | None:
        """Per seed, both arms' outcomes on the same questions; None when any seed lacks them (no pairing)."""
        a = dict(zip(self.a.seeds, self.a.outcomes))
        b = dict(zip(self.b.seeds, self.b.outcomes))
        if not a or set(a) != set(b) or len(a) != len(self.a.seeds) or len(b) != len(self.b.seeds):
            return None
        if any(a[s][0] is None or b[s][0] is None or a[s][1] != b[s][1] for s in a):
            return None
        return [(a[s][0], b[s][0]) for s in sorted(a)]

    @property
    def paired(self) -> bool:
        return self.pairs() is not None

    def diff(self) -> tuple[float, float, float]:
        """A - B and its 95% interval: paired where both arms share seeds and questions, else independent."""
        pairs = self.pairs()
        if pairs is not None:
            return bootstrap_paired_diff_ci([x for x, _ in pairs], [y for _, y in pairs])
        return bootstrap_diff_ci(self.a.values, self.a.ns, self.b.values, self.b.ns)


def _arms(es: Iterable[Entry], key) -> dict:
    out: dict = {}
    for e in es:
        k = key(e)
        if k is None or e.accuracy is None:
            continue
        arm = out.setdefault(k, Arm(str(k), [], []))
        arm.values.append(e.accuracy)
        arm.ns.append(e.n)
        arm.seeds.append(e.seed)
        arm.outcomes.append((e.outcomes, e.questions))
    return out


def ft_cot_difficulty(es: Sequence[Entry]) -> list[Comparison]:
    arms = _arms(es, lambda e: (e.method, e.by[0]) if e.system == "student" else None)
    return [Comparison(f"difficulty {d}: fine_tune_cot - vanilla_ft", arms[("fine_tune_cot", d)],
                       arms[("vanilla_ft", d)])
            for d in sorted({d for _, d in arms}) if ("fine_tune_cot", d) in arms and ("vanilla_ft", d) in arms]


def diverse_reasoning(es: Sequence[Entry]) -> list[Comparison]:
    arms = _arms(es, lambda e: e.D if e.system == "student" else None)
    return [Comparison(f"D={d} - D=1", arms[d], arms[1]) for d in sorted(arms) if d != 1 and 1 in arms]


def fdd(es: Sequence[Entry]) -> list[Comparison]:
    arms = _arms(es, lambda e: (e.benchmark, e.round, e.system))
    out = []
    for bench, rnd in sorted({(b, r) for b, r, _ in arms}, key=lambda x: (x[0] != es[0].benchmark, x)):
        if (bench, rnd, "student") in arms and (bench, rnd, "no_feedback") in arms:
            out.append(Comparison(f"{bench} round {rnd}: FDD - control", arms[(bench, rnd, "student")],
                                  arms[(bench, rnd, "no_feedback")]))
    return out


def sgft(es: Sequence[Entry]) -> list[Comparison]:
    arms = _arms(es, lambda e: e.system)
    out = []
    for guided, prefix in (("student", "response"), ("transfer_student", "transfer_response")):
        alone = [arms[k] for k in (f"{prefix}_zero_shot", f"{prefix}_zero_shot_cot") if k in arms]
        if guided in arms and alone:
            best = max(alone, key=lambda a: sum(a.values) / len(a.values))
            out.append(Comparison(f"{guided} - {best.label}", arms[guided], best))
    return out


EFFECTS = {  # preset -> (how its comparisons are made, the config keys its rows are split by)
    "effects/ft_cot_difficulty": (ft_cot_difficulty, ("benchmark.difficulty",)),
    "effects/diverse_reasoning": (diverse_reasoning, ()),
    "effects/fdd": (fdd, ()),
    "effects/sgft": (sgft, ()),
}


def effect_comparisons(dirs: Sequence[str], split: str = "test") -> dict[str, list[Comparison]]:
    """Each effect preset found under ``dirs`` -> its comparisons (the clean protocol's entry) on ``split``:
    test, or val (the split the designs were tuned on; collect.entries says which val entries count)."""
    runs = load_runs(dirs)
    out = {}
    for name, (compare, by) in EFFECTS.items():
        mine = [r for r in runs if r.results["run"].get("experiment") == name]
        if mine and (found := compare(entries(mine, "auto", by, split=split))):
            out[name] = found
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def to_markdown(found: dict[str, list[Comparison]]) -> str:
    lines = []
    for name, comps in found.items():
        lines += [f"### {name}", "", "| comparison | A (95% CI) | B (95% CI) | A - B (95% CI) | interval | seeds |",
                  "|---|---|---|---|---|---|"]
        for c in comps:
            (am, alo, ahi), (bm, blo, bhi), (d, dlo, dhi) = c.a.ci(), c.b.ci(), c.diff()
            lines.append(f"| {c.label} | {_pct(am)} [{_pct(alo)}, {_pct(ahi)}] | {_pct(bm)} [{_pct(blo)}, "
                         f"{_pct(bhi)}] | {d * 100:+.1f} [{dlo * 100:+.1f}, {dhi * 100:+.1f}] | "
                         f"{'paired' if c.paired else 'independent'} | {len(c.a.values)} / {len(c.b.values)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sgft_lab.report.effects", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", help="run or sweep directories of the effects presets")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="val: the tuning split (FDD's method.read_val reads, SGFT's method.eval_split=val runs)")
    a = p.parse_args(argv)
    try:
        found = effect_comparisons(a.dirs, a.split)
    except (OSError, ValueError) as e:  # a missing dir, a broken results.json: one line, as sgft_lab.report
        print(f"sgft_lab.report.effects: {e}", file=sys.stderr)
        return 2
    if not found:
        print(f"no {a.split} comparison of an effects preset ({', '.join(EFFECTS)}) under {' '.join(a.dirs)}",
              file=sys.stderr)
        return 1
    print(to_markdown(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
