"""The papers' effects on the embedded tier (experiments/effects/README.md).

From the runs of the ``conf/experiment/effects/`` presets (any directories holding their results.json files),
each effect's arms -- mean test accuracy over seeds with a 95% bootstrap interval (report.bootstrap_ci) -- and
the differences that state the effect, with their intervals (report.bootstrap_diff_ci):

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
from dataclasses import dataclass

from .collect import Entry, entries, load_runs
from .table import bootstrap_ci, bootstrap_diff_ci


@dataclass
class Arm:
    """One condition: per-seed test accuracies (fractions) and their question counts."""

    label: str
    values: list[float]
    ns: list[int | None]

    def ci(self) -> tuple[float, float, float]:
        lo, hi = bootstrap_ci(self.values, self.ns)
        return sum(self.values) / len(self.values), lo, hi


@dataclass
class Comparison:
    """``a`` minus ``b``: the effect, with its interval."""

    label: str
    a: Arm
    b: Arm

    def diff(self) -> tuple[float, float, float]:
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


def effect_comparisons(dirs: Sequence[str]) -> dict[str, list[Comparison]]:
    """Each effect preset found under ``dirs`` -> its comparisons (test split, the clean protocol's entry)."""
    runs = load_runs(dirs)
    out = {}
    for name, (compare, by) in EFFECTS.items():
        mine = [r for r in runs if r.results["run"].get("experiment") == name]
        if mine:
            out[name] = compare(entries(mine, "auto", by))
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def to_markdown(found: dict[str, list[Comparison]]) -> str:
    lines = []
    for name, comps in found.items():
        lines += [f"### {name}", "", "| comparison | A (95% CI) | B (95% CI) | A - B (95% CI) | seeds |",
                  "|---|---|---|---|---|"]
        for c in comps:
            (am, alo, ahi), (bm, blo, bhi), (d, dlo, dhi) = c.a.ci(), c.b.ci(), c.diff()
            lines.append(f"| {c.label} | {_pct(am)} [{_pct(alo)}, {_pct(ahi)}] | {_pct(bm)} [{_pct(blo)}, "
                         f"{_pct(bhi)}] | {d * 100:+.1f} [{dlo * 100:+.1f}, {dhi * 100:+.1f}] | "
                         f"{len(c.a.values)} / {len(c.b.values)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sgft_lab.report.effects", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+", help="run or sweep directories of the effects presets")
    a = p.parse_args(argv)
    found = effect_comparisons(a.dirs)
    if not found:
        print(f"no run of an effects preset ({', '.join(EFFECTS)}) under {' '.join(a.dirs)}", file=sys.stderr)
        return 1
    print(to_markdown(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
