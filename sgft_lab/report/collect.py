"""Collect runs (results.json + the config.yaml beside it) and flatten their result entries.

One :class:`Entry` = one number a table cell aggregates: a run's evaluated system (the method's own
``student``, or another system it reports: SGFT's response model alone, an FDD round ...) on the test split at
one selection of its epoch, with the protocol that produced it (paper | clean) and its strict-rule twin.
Everything comes from the results file's ``entries`` (schema ``SCHEMA_VERSION``); nothing here depends on
which method wrote them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..run import check_results  # the results.json schema (sgft_lab/run.py writes and checks it)

SELECTIONS = ("auto", "best_test_epoch", "dev_selected", "last_epoch")
# selection=auto: the number each run's protocol reports (paper: the best test epoch, as Fine-tune-CoT reports
# its open students; clean: the test read once at the best validation epoch).
AUTO = {"paper": "best_test_epoch", "clean": "dev_selected"}


@dataclass
class Run:
    results: dict[str, Any]
    config: dict[str, Any]  # the run's saved config.yaml ({} if absent)
    path: Path  # the results.json file
    mtime: float


@dataclass
class Entry:
    """One measured accuracy (a fraction) that a table cell aggregates over seeds."""

    method: str  # the run's method
    student: str  # preset name ("guide->response" when the run has a response model)
    benchmark: str
    seed: int
    accuracy: float | None  # at the selection; None when the run has no such number
    n: int | None = None  # test questions behind the accuracy (for the bootstrap)
    task: str | None = None  # scoring key (an embedded task's real counterpart)
    embedded: bool = False
    student_model: str | None = None
    response_model: str | None = None
    parameters: int | None = None
    D: int | None = None  # rationales per question (teacher-trained Fine-tune-CoT methods)
    n_shot: int | None = None
    single_evaluation: bool = (
        False  # evaluated once (no epochs to choose from): the same under every protocol
    )
    teacher: str | None = None  # None: the method uses no teacher
    cost_usd: float | None = None  # the run's teacher cost (the whole run)
    teacher_calls: int | None = None  # calls the run made (cache hits excluded)
    cache_hits: int | None = None
    experiment: str | None = None
    tier: str | None = None
    metric: str | None = None  # ftcot unless the method scores otherwise (FDD PoT: fdd_numeric)
    by: tuple = ()  # values of the --by config keys
    run_dir: str = ""
    mtime: float = 0.0
    system: str = "student"  # what was evaluated (results.json entry's system)
    round: int | None = None  # FDD's round
    protocol: str = "clean"  # paper | clean: how the run trained, selected and read test (config `protocol`)
    selection: str | None = None  # which epoch's number (best_test_epoch, dev_selected, ... or single)
    strict_accuracy: float | None = None  # the same rows under the strict rule (None: not recorded)
    outcomes: str | None = None  # per question "1"/"0" (results entries' outcomes; None: not recorded)
    questions: str | None = None  # fingerprint of the question ids behind ``outcomes``

    @property
    def label(self) -> str:
        """The table row's name: the method, its other systems after a colon, rounds after 'round'."""
        return row_label(self.method, self.system, self.round)


def row_label(method: str, system: str = "student", round: int | None = None) -> str:
    return method + ("" if system == "student" else f":{system}") + ("" if round is None else f" round {round}")


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Every results.json at or under the given run / sweep directories (or results.json files)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == "results.json":
            found.append(p)
        elif p.is_dir():
            found.extend(q for q in sorted(p.rglob("results.json")) if _is_run_results(q))
        else:
            raise FileNotFoundError(f"{p}: no such run or sweep directory")
    return sorted(set(found))


def _is_run_results(p: Path) -> bool:
    # Sub-stages (an FDD round, an SGFT guide) write their own files but never a results.json of their
    # own; a results.json always belongs to a run, but skip anything inside a W&B folder.
    return "wandb" not in p.parts


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Read every results.json (and its config.yaml) under ``paths``; bad files fail with their path."""
    import yaml

    runs = []
    for f in find_results(paths):
        try:
            res = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(res, dict) or "run" not in res and "method" not in res:
            raise ValueError(f"{f}: not a sgft_lab results.json (no 'run' field)")
        check_results(res, str(f))
        cfg_file = f.with_name("config.yaml")
        cfg = {}
        if cfg_file.exists():
            try:
                cfg = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                mark = getattr(e, "problem_mark", None)
                raise ValueError(f"{cfg_file}:{(mark.line + 1) if mark else '?'}: not valid YAML") from None
        runs.append(Run(res, cfg, f, f.stat().st_mtime))
    return runs


def entries(runs: Iterable[Run], selection: str = "auto", by: Iterable[str] = (), split: str = "test") -> list[Entry]:
    """One entry per (run, system, round) on the test split at ``selection`` (``auto``: the one the run's
    protocol reports); a system evaluated once counts under every selection; a system without the selection's
    number gives accuracy None (never another selection's).

    ``split="val"`` (tuning runs): the val entries instead. A val read that names the run's own benchmark (FDD's
    ``method.read_val``) is its in-domain val number; the run's other val entries are then its own selection
    split (FDD's per-round dev split of its data), not the benchmark's, and are left out."""
    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; one of {SELECTIONS}")
    if split not in ("test", "val"):
        raise ValueError(f"unknown split {split!r}; one of test, val")
    by = tuple(by)
    out: list[Entry] = []
    for run in runs:
        base = _base(run, by)
        groups: dict[tuple, list[dict]] = {}
        mine = [e for e in run.results.get("entries", []) if e["split"] == split]
        own = base["benchmark"]
        if split == "val" and any(e.get("benchmark") == own for e in mine):
            mine = [{**e, "benchmark": None} if e.get("benchmark") == own else e
                    for e in mine if e.get("benchmark") is not None]
        for e in mine:
            groups.setdefault((e["system"], e.get("round"), e["protocol"], e.get("benchmark")), []).append(e)
        for (system, rnd, protocol, other), es in groups.items():
            want = AUTO[protocol] if selection == "auto" else selection
            e = next((x for x in es if x["selection"] == want), None) or \
                next((x for x in es if x["selection"] == "single"), None)
            where = {} if other is None else {"benchmark": other, "task": _task(other),
                                              "embedded": other.startswith("embedded_")}
            out.append(Entry(accuracy=None if e is None else e["accuracy"], n=es[0]["n"] if e is None else e["n"],
                             single_evaluation=e is not None and e["selection"] == "single",
                             metric=es[0].get("metric"), system=system, round=rnd, protocol=protocol,
                             selection=want if e is None else e["selection"],
                             strict_accuracy=None if e is None else e.get("strict_accuracy"),
                             outcomes=None if e is None else e.get("outcomes"),
                             questions=None if e is None else e.get("questions"),
                             **{**base, **where}))
    return out


def _task(benchmark: str) -> str | None:
    """The scoring task of an out-of-domain benchmark an entry names (None for an embedded one)."""
    from ..benchmarks.loaders import SPECS

    spec = SPECS.get(benchmark)
    return spec.key if spec is not None else None


def _base(run: Run, by: tuple[str, ...]) -> dict[str, Any]:
    r, c = run.results, run.config
    ident = r["run"]
    models = r.get("models") or {}
    student, response = models.get("student") or {}, models.get("response") or {}
    acc = ((r.get("teacher") or {}).get("accounting") or {}).get("total") or {}
    bcfg = c.get("benchmark", {})
    params = (student.get("parameters") or {}).get("total")
    name = ident.get("student", "?")
    return dict(
        method=ident.get("method", "?"),
        student=f"{name}->{response.get('name', '?')}" if response else name,
        benchmark=ident.get("benchmark", "?"),
        seed=int(ident.get("seed", 0)),
        task=ident.get("task"),
        embedded=bcfg.get("source") == "embedded" if bcfg else str(ident.get("benchmark", "")).startswith("embedded_"),
        student_model=ident.get("student_model"),
        response_model=response.get("model"),
        parameters=params,
        D=(r.get("data") or {}).get("rationales_per_question"),
        n_shot=bcfg.get("n_shot"),
        teacher=ident.get("teacher"),
        cost_usd=acc.get("cost_usd"),
        teacher_calls=(r.get("teacher") or {}).get("calls"),
        cache_hits=(r.get("teacher") or {}).get("cache_hits"),
        experiment=ident.get("experiment"),
        tier=ident.get("tier"),
        by=tuple(_dotted(c, k) for k in by),
        run_dir=str(run.path.parent),
        mtime=run.mtime,
    )


def _dotted(cfg: dict, key: str) -> Any:
    cur: Any = cfg
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def warn(msg: str) -> None:
    print(f"sgft_lab.report: {msg}", file=sys.stderr)
