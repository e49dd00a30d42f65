"""Paper-style result tables from run and sweep directories (``python -m sgft_lab.report DIR ...``).

    runs = load_runs(["outputs/multirun/2026-..."])          # results.json + config.yaml of every run
    rows = entries(runs, selection="auto")    # one accuracy per (run, system, round) on test, as its protocol reports
    table = build_table(rows, selection="auto", paper=PaperNumbers.load())
    print(to_markdown(table))                               # or to_csv / to_latex; frame(rows) -> pandas

The published numbers are package data (``paper_numbers.json``, sources inside); see paper.py for how a
measured cell is matched with its published counterpart or a marked stand-in.
"""

from .collect import SELECTIONS, Entry, Run, entries, find_results, load_runs
from .paper import PaperCell, PaperNumbers
from .table import Cell, Row, Table, bootstrap_ci, bootstrap_diff_ci, build_table, to_csv, to_latex, to_markdown


def frame(items):
    """Entries as a pandas DataFrame (one row per entry; accuracy in %), for notebooks."""
    from dataclasses import asdict

    import pandas as pd

    df = pd.DataFrame([{**asdict(e), "label": e.label} for e in items])
    if not df.empty:
        df["accuracy_pct"] = df["accuracy"] * 100
    return df


__all__ = [
    "SELECTIONS",
    "Cell",
    "Entry",
    "PaperCell",
    "PaperNumbers",
    "Row",
    "Run",
    "Table",
    "bootstrap_ci",
    "bootstrap_diff_ci",
    "build_table",
    "entries",
    "find_results",
    "frame",
    "load_runs",
    "to_csv",
    "to_latex",
    "to_markdown",
]
