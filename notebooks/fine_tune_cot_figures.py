# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fine-tune-CoT figures
#
# Accuracy vs student size per method (the paper's tables as curves) and accuracy vs D (diverse reasoning),
# from the `results.json` files of any run / sweep directories. Published numbers (package data of
# `sgft_lab.report`) are drawn as hollow markers where a cell has one; stand-ins (embedded tasks, tiny
# students) are drawn dashed and labelled so.
#
# Inputs: `SGFT_LAB_RESULTS` (directories, separated by `:`; default `outputs`), `SGFT_LAB_FIGURES` (where the
# PNGs go; default `figures`), `SGFT_LAB_SELECTION` (default `auto`: the paper protocol's best test epoch,
# the clean protocol's best validation epoch).
# Open it as a notebook with jupytext (`jupytext --to ipynb notebooks/fine_tune_cot_figures.py`) or run it:
# `SGFT_LAB_RESULTS=outputs/multirun python notebooks/fine_tune_cot_figures.py`.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgft_lab.report import PaperNumbers, build_table, entries, load_runs  # noqa: E402

RESULTS = os.environ.get("SGFT_LAB_RESULTS", "outputs").split(os.pathsep)
FIGURES = Path(os.environ.get("SGFT_LAB_FIGURES", "figures"))
SELECTION = os.environ.get("SGFT_LAB_SELECTION", "auto")
FIGURES.mkdir(parents=True, exist_ok=True)
paper = PaperNumbers.load()
runs = [
    r
    for r in load_runs(RESULTS)
    if r.results["run"]["method"]
    in ("zero_shot", "zero_shot_cot", "few_shot_cot", "vanilla_ft", "fine_tune_cot", "diverse_reasoning")
]
print(f"{len(runs)} Fine-tune-CoT-family runs under {RESULTS}")

# %% [markdown]
# ## The table behind the figures
# One cell per method x student x benchmark: mean over seeds with a 95% bootstrap interval.

# %%
table = build_table(entries(runs, SELECTION), selection=SELECTION, paper=paper)
for row in table.rows:
    print(row.method, row.student, row.size, f"D={row.D}", {b: f"{c.mean:.1f}" for b, c in row.cells.items()})

# %% [markdown]
# ## Accuracy vs student size, per method (one panel per benchmark)
# Rows of the D-curve and data-size ablations are left out (one D per method, all training questions).

# %%
full = [
    r
    for r in table.rows
    if r.n_shot is None
    and (
        r.D is None or r.method == "fine_tune_cot" and r.D == 1 or r.method == "diverse_reasoning" and r.D > 1
    )
]
benchmarks = [b for b in table.benchmarks if any(b in r.cells for r in full)]


def header(b: str) -> str:
    for r in full:
        c = r.cells.get(b)
        if c is not None and c.paper is not None and c.paper.stand_in:
            return f"{b} (stand-in: {paper.label(c.paper.benchmark)})"
    return paper.label(b) if b in paper.benchmarks else b


if full:
    n = len(benchmarks)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), squeeze=False)
    methods = list(dict.fromkeys(r.method for r in full))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, b in zip(axes[0], benchmarks):
        for m in methods:
            rows = sorted(
                (r for r in full if r.method == m and b in r.cells and r.parameters),
                key=lambda r: r.parameters,
            )
            if not rows:
                continue
            xs = [r.parameters for r in rows]
            cs = [r.cells[b] for r in rows]
            ax.errorbar(
                xs,
                [c.mean for c in cs],
                yerr=[[c.mean - c.low for c in cs], [c.high - c.mean for c in cs]],
                marker="o",
                color=colors[m],
                label=m,
                capsize=3,
            )
            pts = [(x, c.paper) for x, c in zip(xs, cs) if c.paper is not None]
            if pts:
                ax.plot(
                    [x for x, _ in pts],
                    [p.value for _, p in pts],
                    marker="s",
                    mfc="none",
                    color=colors[m],
                    ls="--" if any(p.stand_in for _, p in pts) else ":",
                    alpha=0.7,
                )
        ax.set_xscale("log")
        ax.set_title(header(b), fontsize=9)
        ax.set_xlabel("student parameters")
        ax.set_ylabel(f"test accuracy % ({SELECTION})")
        ax.set_ylim(-2, 102)
    axes[0][0].legend(fontsize=7, title="ours (filled) / paper (hollow)", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "accuracy_vs_student_size.png", dpi=120)
    print("wrote", FIGURES / "accuracy_vs_student_size.png")

# %% [markdown]
# ## Accuracy vs D (diverse reasoning)
# Every Fine-tune-CoT / diverse-reasoning row with a D; one line per student and benchmark. The paper prints
# D = 1 and the tables' D only (hollow markers).

# %%
with_d = [r for r in table.rows if r.D is not None and r.n_shot is None]
series = {(r.student, b) for r in with_d for b in r.cells}
if len({r.D for r in with_d}) > 1:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (student, b) in enumerate(sorted(series)):
        rows = sorted((r for r in with_d if r.student == student and b in r.cells), key=lambda r: r.D)
        if len(rows) < 2:
            continue
        cs = [r.cells[b] for r in rows]
        ax.errorbar(
            [r.D for r in rows],
            [c.mean for c in cs],
            yerr=[[c.mean - c.low for c in cs], [c.high - c.mean for c in cs]],
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=f"{student} / {b}",
        )
        pts = [(r.D, c.paper.value) for r, c in zip(rows, cs) if c.paper is not None]
        if pts:
            ax.plot(*zip(*pts), "s", mfc="none", color=f"C{i}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("D (teacher rationales per training question)")
    ax.set_ylabel(f"test accuracy % ({SELECTION})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "accuracy_vs_D.png", dpi=120)
    print("wrote", FIGURES / "accuracy_vs_D.png")
