"""The end of a sweep: one line per job (status, test accuracy, run dir) and the report command to run next.

A Hydra callback (``hydra.callbacks.sweep_summary`` in conf/config.yaml), so it works with every launcher:
each job records its outcome in ``<sweep dir>/.jobs/<job#>.json`` when it ends (in the process that ran it,
which for the joblib or SLURM launchers is not this one); when the sweep ends the records are printed as one
table. A sweep with a failed job ends in an exception before Hydra's ``on_multirun_end``; the sweeper
(hydra_plugins/sgft_lab_sweeper) prints the same table then.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

JOBS_DIR = ".jobs"
# The current job's run dir and headline, set by run.execute and read by on_job_end in the same process.
LAST: dict[str, Any] = {}


class SweepSummary(Callback):
    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        from .io import write_json

        hc = config.hydra
        if hc.mode != RunMode.MULTIRUN:
            LAST.clear()
            return
        record = {"num": int(hc.job.num), "status": "ok" if job_return.status == JobStatus.COMPLETED else "FAILED",
                  "overrides": list(job_return.overrides or []), **LAST}
        if job_return.status != JobStatus.COMPLETED:
            from .teachers.secrets import redact_text

            error = str(job_return._return_value).strip().splitlines()
            record["error"] = redact_text(error[0] if error else type(job_return._return_value).__name__)
        write_json(Path(hc.sweep.dir) / JOBS_DIR / f"{int(hc.job.num)}.json", record)
        LAST.clear()

    def on_multirun_end(self, config, **kwargs) -> None:
        print_summary(Path(config.hydra.sweep.dir))


def job_records(sweep_dir: Path) -> list[dict]:
    """The jobs' records, in job order."""
    files = sorted((Path(sweep_dir) / JOBS_DIR).glob("*.json"), key=lambda f: int(f.stem))
    return [json.loads(f.read_text(encoding="utf-8")) for f in files]


def relative(path: str, root: Path) -> str:
    """``path`` below ``root`` as a relative path (the table's rows stay short), else as it is."""
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def print_summary(sweep_dir: Path) -> None:
    """One row per job and the report command (nothing when no job recorded anything)."""
    from rich.console import Console
    from rich.table import Table

    sweep_dir = Path(sweep_dir)
    records = job_records(sweep_dir)
    if not records:
        return
    failed = sum(r["status"] != "ok" for r in records)
    t = Table(title=f"sweep: {len(records)} jobs, {len(records) - failed} ok, {failed} failed")
    for col in ("job", "status", "test accuracy", "run dir / error"):
        t.add_column(col, justify="right" if col == "test accuracy" else "left", overflow="fold")
    shared = set.intersection(*(set(r["overrides"]) for r in records)) if len(records) > 1 else set()
    for r in records:
        acc = r.get("accuracy")
        own = " ".join(o for o in r["overrides"] if o not in shared)  # what this job sweeps
        where = relative(r["run_dir"], sweep_dir) if r.get("run_dir") else own
        if r["status"] != "ok":
            where = f"{where}: {r.get('error', '')}"
        t.add_row(f"#{r['num']}", r["status"], "" if acc is None else f"{100 * acc:.2f}%", where)
    console = Console(emoji=False, highlight=False)
    console.print(t)
    console.print(f"report: python -m sgft_lab.report {sweep_dir}", soft_wrap=True)
