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
# # FDD figures
#
# Test accuracy per feedback round, one line per student and rationale type (CoT scored with Fine-tune-CoT's
# rule, PoT by executing the program: different metrics, so different panels), mean over seeds with a 95%
# bootstrap interval; and the size of the distillation set per round. FDD has no published numbers
# (methods.md 4.4).
#
# Inputs: `SGFT_LAB_RESULTS` (directories, `:`-separated; default `outputs`), `SGFT_LAB_FIGURES` (default
# `figures`), `SGFT_LAB_SELECTION` (default `auto`: each round's model as selected on the round's own dev
# split, the one that gives the next round's feedback). Run: `SGFT_LAB_RESULTS=outputs/multirun python
# notebooks/fdd_figures.py`.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgft_lab.report import build_table, entries, load_runs  # noqa: E402

RESULTS = os.environ.get("SGFT_LAB_RESULTS", "outputs").split(os.pathsep)
FIGURES = Path(os.environ.get("SGFT_LAB_FIGURES", "figures"))
SELECTION = os.environ.get("SGFT_LAB_SELECTION", "auto")
FIGURES.mkdir(parents=True, exist_ok=True)
runs = [r for r in load_runs(RESULTS) if r.results["run"]["method"] in ("fdd", "fdd_pot")]
print(f"{len(runs)} FDD runs under {RESULTS}")
table = build_table(entries(runs, SELECTION), selection=SELECTION)

# %% [markdown]
# ## Accuracy per round

# %%
if table.rows:
    kinds = sorted({r.method for r in table.rows})
    benches = table.benchmarks
    fig, axes = plt.subplots(
        len(benches), len(kinds), figsize=(4.8 * len(kinds), 3.6 * len(benches)), squeeze=False
    )
    for i, b in enumerate(benches):
        for j, kind in enumerate(kinds):
            ax = axes[i][j]
            rows = [r for r in table.rows if r.method == kind and r.round is not None and b in r.cells]
            # one line per student and system (the method's own, the no-feedback control, mixed's CoT read)
            for k, (student, system) in enumerate(sorted({(r.student, r.system) for r in rows})):
                mine = sorted((r for r in rows if (r.student, r.system) == (student, system)), key=lambda r: r.round)
                xs = [r.round for r in mine]
                cs = [r.cells[b] for r in mine]
                ax.errorbar(
                    xs,
                    [c.mean for c in cs],
                    yerr=[[c.mean - c.low for c in cs], [c.high - c.mean for c in cs]],
                    marker="o",
                    capsize=3,
                    color=f"C{k}",
                    label=student if system == "student" else f"{student} ({system})",
                )
            metric = next((r.metric for r in rows if r.metric), "")
            ax.set_title(f"{kind} on {b} ({metric})", fontsize=9)
            ax.set_xlabel("round (0 = teacher's initial set)")
            ax.set_ylabel(f"test accuracy % ({SELECTION})")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "fdd_accuracy_per_round.png", dpi=120)
    print("wrote", FIGURES / "fdd_accuracy_per_round.png")

# %% [markdown]
# ## The distillation set per round (problems in the pool, kept new problems)

# %%
if runs:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for k, run in enumerate(runs):
        per = run.results["details"].get("rounds") or []
        ident = run.results["run"]
        label = f"{ident['method']} / {ident['student']} / s{ident['seed']}"
        ax.plot(
            [p["round"] for p in per],
            [p["dataset_problems"] for p in per],
            marker="o",
            color=f"C{k}",
            label=label,
        )
    ax.set_xlabel("round")
    ax.set_ylabel("problems in the pool")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(FIGURES / "fdd_dataset_per_round.png", dpi=120)
    print("wrote", FIGURES / "fdd_dataset_per_round.png")
