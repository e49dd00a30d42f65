"""The analysis notebooks (jupytext percent-format scripts) run on the results fixture and draw their PNGs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "results"
FIGURES = {
    "fine_tune_cot_figures.py": ["accuracy_vs_student_size.png", "accuracy_vs_D.png"],
    "sgft_figures.py": ["sgft_grid_heatmap.png", "sgft_systems.png"],
    "fdd_figures.py": ["fdd_accuracy_per_round.png", "fdd_dataset_per_round.png"],
    "effects_figures.py": [],  # the fixture holds no effects sweep: tests/test_effects.py runs it on one
}


def test_every_notebook_is_checked():
    assert {p.name for p in (REPO / "notebooks").glob("*.py")} == set(FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_executes_on_the_fixture(name, tmp_path):
    env = dict(
        os.environ,
        SGFT_LAB_RESULTS=str(FIXTURE),
        SGFT_LAB_FIGURES=str(tmp_path / "fig"),
        MPLBACKEND="Agg",
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    p = subprocess.run(
        [sys.executable, str(REPO / "notebooks" / name)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for png in FIGURES[name]:
        f = tmp_path / "fig" / png
        assert f.exists(), f"{name} did not write {png}\n{p.stdout[-2000:]}"
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_is_jupytext_percent_format(name):
    jupytext = pytest.importorskip(
        "jupytext", reason="jupytext (the dev extra) pairs the scripts with .ipynb"
    )
    nb = jupytext.read(REPO / "notebooks" / name)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("markdown") >= 2 and kinds.count("code") >= 3
