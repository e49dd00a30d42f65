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
# # The papers' effects on the embedded tier
#
# One figure per effect preset (`conf/experiment/effects/`, experiments/effects/README.md): each comparison's
# two arms as mean test accuracy over seeds with 95% bootstrap intervals, and the difference with its interval
# (`sgft_lab.report.effects`, the same numbers as `python -m sgft_lab.report.effects DIRS`).
#
# Inputs: `SGFT_LAB_RESULTS` (directories separated by `:`, default `outputs/multirun`), `SGFT_LAB_FIGURES`
# (default `figures`). Run it (`SGFT_LAB_RESULTS=... python notebooks/effects_figures.py`) or open it with
# jupytext.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sgft_lab.report.effects import effect_comparisons, to_markdown  # noqa: E402

RESULTS = os.environ.get("SGFT_LAB_RESULTS", "outputs/multirun").split(os.pathsep)
FIGURES = Path(os.environ.get("SGFT_LAB_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
found = effect_comparisons(RESULTS)
print(f"effect presets found under {RESULTS}: {sorted(found) or 'none'}")

# %% [markdown]
# ## The rows of experiments/effects/README.md
# Each comparison: arm A and arm B (mean over seeds, 95% interval) and A - B with its interval.

# %%
print(to_markdown(found))

# %% [markdown]
# ## One panel per effect: arm A (filled) against arm B (hollow), and A - B

# %%
for name, comps in found.items():
    if not comps:
        continue
    fig, (ax, dx) = plt.subplots(1, 2, figsize=(11, 0.5 + 0.45 * len(comps)), sharey=True)
    for i, c in enumerate(comps):
        for arm, style in ((c.a, "o"), (c.b, "s")):
            m, lo, hi = (100 * v for v in arm.ci())
            ax.errorbar(m, i + (0.12 if arm is c.a else -0.12), xerr=[[m - lo], [hi - m]], fmt=style,
                        mfc="C0" if arm is c.a else "none", color="C0" if arm is c.a else "C1", capsize=3)
        d, lo, hi = (100 * v for v in c.diff())
        dx.errorbar(d, i, xerr=[[d - lo], [hi - d]], fmt="D", color="C2" if lo > 0 else "C3", capsize=3)
    ax.set_yticks(range(len(comps)), [c.label for c in comps], fontsize=8)
    ax.invert_yaxis()  # the first comparison on top
    ax.set_xlabel("test accuracy (%), mean over seeds, 95% CI")
    dx.axvline(0, color="grey", lw=0.8)
    dx.set_xlabel("A - B (points), 95% CI")
    fig.suptitle(name)
    fig.tight_layout()
    out = FIGURES / f"{name.replace('/', '_')}.png"
    fig.savefig(out, dpi=120)
    print("wrote", out)
