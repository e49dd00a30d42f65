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
# # SGFT figures
#
# The guide x response grid as a heatmap (the paper's model-combination table, methods.md 3.5) and, per
# response model, SGFT against the response model alone and CoT fine-tuning. Each cell is the mean over
# seeds; SGFT's guided answers are evaluated once (no epoch choice). The paper's numbers (methods.md 3.7) are
# secondary and only exist for ChatGLM3-6B / Qwen2-7B / Llama on GSM8K and CommonsenseQA.
#
# Inputs: `SGFT_LAB_RESULTS` (directories, `:`-separated; default `outputs`), `SGFT_LAB_FIGURES` (default
# `figures`). Run: `SGFT_LAB_RESULTS=outputs/multirun python notebooks/sgft_figures.py`.

# %%
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sgft_lab.report import entries, frame, load_runs  # noqa: E402

RESULTS = os.environ.get("SGFT_LAB_RESULTS", "outputs").split(os.pathsep)
FIGURES = Path(os.environ.get("SGFT_LAB_FIGURES", "figures"))
FIGURES.mkdir(parents=True, exist_ok=True)
runs = [r for r in load_runs(RESULTS) if r.results["run"]["method"] == "sgft"]
df = frame(entries(runs, "last_epoch"))
print(f"{len(runs)} SGFT runs under {RESULTS}")
if not df.empty:
    df["guide"] = df["student"].str.split("->").str[0]
    df["response"] = df["student"].str.split("->").str[1]

# %% [markdown]
# ## Guide x response heatmap (SGFT accuracy, one panel per benchmark)

# %%
grid = df[df["system"] == "student"] if not df.empty else df  # SGFT itself: the response model + the guide's SG
if not grid.empty:
    benches = sorted(grid["benchmark"].unique())
    fig, axes = plt.subplots(1, len(benches), figsize=(4.5 * len(benches), 3.8), squeeze=False)
    for ax, b in zip(axes[0], benches):
        piv = grid[grid["benchmark"] == b].pivot_table(
            index="guide", columns="response", values="accuracy_pct", aggfunc="mean"
        )
        im = ax.imshow(piv.values, cmap="viridis", vmin=0, vmax=max(1.0, float(np.nanmax(piv.values))))
        ax.set_xticks(range(len(piv.columns)), piv.columns, rotation=30, ha="right")
        ax.set_yticks(range(len(piv.index)), piv.index)
        ax.set_xlabel("response model")
        ax.set_ylabel("guide (SG fine-tuned)")
        for i in range(piv.shape[0]):
            for j in range(piv.shape[1]):
                v = piv.values[i, j]
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="w", fontsize=9)
        ax.set_title(f"SGFT accuracy % on {b}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(FIGURES / "sgft_grid_heatmap.png", dpi=120)
    print("wrote", FIGURES / "sgft_grid_heatmap.png")

# %% [markdown]
# ## SGFT vs the response model alone and CoT fine-tuning

# %%
if not df.empty:
    per = df.groupby(["response", "label"], as_index=False)["accuracy_pct"].mean()
    systems = list(dict.fromkeys(per["label"]))
    responses = sorted(per["response"].unique())
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(responses) * max(1, len(systems)) / 3, 3.6))
    w = 0.8 / max(1, len(systems))
    for k, s in enumerate(systems):
        vals = [per[(per["response"] == r) & (per["label"] == s)]["accuracy_pct"].mean() for r in responses]
        ax.bar(np.arange(len(responses)) + k * w, vals, w, label=s)
    ax.set_xticks(np.arange(len(responses)) + 0.4 - w / 2, responses)
    ax.set_xlabel("response model")
    ax.set_ylabel("test accuracy % (mean over guides, seeds, benchmarks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(FIGURES / "sgft_systems.png", dpi=120)
    print("wrote", FIGURES / "sgft_systems.png")
