"""Collect runs (results.json + the config.yaml beside it) and flatten them into report entries.

One entry = one number a table cell aggregates: (method row, student, benchmark, seed) -> test accuracy under
one protocol. Most runs give one entry; an SGFT run gives one per reported system (guide + response, the
response model alone, CoT fine-tuning), an FDD run one per round.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

PROTOCOLS = ("best_test_epoch", "dev_selected", "last_epoch")


@dataclass
class Run:
    results: dict[str, Any]
    config: dict[str, Any]  # the run's saved config.yaml ({} if absent)
    path: Path  # the results.json file
    mtime: float


@dataclass
class Entry:
    """One measured accuracy (a fraction) that a table cell aggregates over seeds."""

    method: str  # row method: fine_tune_cot, diverse_reasoning, sgft, sgft:cot_ft_x1, fdd round 2 ...
    student: str  # preset name (SGFT: "guide->response")
    benchmark: str
    seed: int
    accuracy: float | None  # under the protocol; None when the run has no such number
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
    extra: dict[str, Any] = field(default_factory=dict)


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
        if not isinstance(res, dict) or "method" not in res:
            raise ValueError(f"{f}: not a sgft_lab results.json (no 'method' field)")
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


def select(metrics: dict | None, protocol: str) -> float | None:
    """Test accuracy under ``protocol`` from a metrics dict of evaluation.summarize (None if absent)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; one of {PROTOCOLS}")
    m = (metrics or {}).get(protocol)
    return m.get("accuracy") if isinstance(m, dict) else None


def entries(runs: Iterable[Run], protocol: str = "best_test_epoch", by: Iterable[str] = ()) -> list[Entry]:
    """Flatten runs into entries under one protocol (never mixed: a run without it gives accuracy None)."""
    by = tuple(by)
    out: list[Entry] = []
    for run in runs:
        r, c = run.results, run.config
        base = _base(run, by)
        method = r["method"]
        if method == "sgft":
            out.extend(_sgft_entries(r, base, protocol))
        elif method in ("fdd", "fdd_pot") and r.get("round_details"):
            metric = r.get("metric")
            for d in r["round_details"]:
                out.append(
                    Entry(
                        method=f"{method} round {d['round']}",
                        accuracy=select(d.get("metrics"), protocol),
                        metric=metric,
                        **base,
                    )
                )
        else:
            e = Entry(method=method, accuracy=select(r.get("metrics"), protocol), **base)
            mcfg = c.get("method", {})
            if method in ("fine_tune_cot", "diverse_reasoning") and mcfg.get("use_teacher", True):
                e.D = int(mcfg.get("diverse_samples", 1))
            out.append(e)
    return out


def _base(run: Run, by: tuple[str, ...]) -> dict[str, Any]:
    r, c = run.results, run.config
    bcfg = c.get("benchmark", {})
    acc = (r.get("teacher_accounting") or {}).get("total") or {}
    params = (r.get("student_parameters") or {}).get("total")
    n = r.get("n_test")
    if n is None and r.get("history"):
        n = r["history"][-1].get("n_test")
    return dict(
        student=r.get("student", "?"),
        benchmark=r.get("benchmark", "?"),
        seed=int(r.get("seed", 0)),
        n=n,
        task=r.get("task"),
        embedded=bcfg.get("source") == "embedded"
        if bcfg
        else str(r.get("benchmark", "")).startswith("embedded_"),
        student_model=r.get("student_model"),
        parameters=params,
        n_shot=bcfg.get("n_shot"),
        teacher=r.get("teacher"),
        cost_usd=acc.get("cost_usd"),
        teacher_calls=r.get("teacher_calls"),
        cache_hits=r.get("cache_hits"),
        experiment=r.get("experiment"),
        tier=r.get("tier", c.get("tier")),
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


def _sgft_entries(r: dict, base: dict, protocol: str) -> list[Entry]:
    """SGFT: the guide + response system, the response model alone, with the teacher's SG, CoT fine-tuning."""
    m = r.get("metrics", {})
    resp = r.get("response") or {}
    guide = r.get("guide") or {}
    params = guide.get("parameters")
    params = params.get("total") if isinstance(params, dict) else params
    base = dict(
        base,
        student=f"{r.get('student')}->{resp.get('name', '?')}",
        response_model=resp.get("model"),
        parameters=params if params is not None else base["parameters"],
    )
    out = [Entry(method="sgft", accuracy=m.get("guided", m.get("accuracy")), single_evaluation=True, **base)]
    for kind, v in (m.get("response_alone") or {}).items():
        out.append(Entry(method=f"sgft:response_{kind}", accuracy=v, single_evaluation=True, **base))
    if m.get("guided_teacher_sg") is not None:
        out.append(
            Entry(method="sgft:teacher_sg", accuracy=m["guided_teacher_sg"], single_evaluation=True, **base)
        )
    for scale, cot in (r.get("cot_ft") or {}).items():
        out.append(
            Entry(method=f"sgft:cot_ft_{scale}", accuracy=select(cot.get("metrics"), protocol), **base)
        )
    return out


def warn(msg: str) -> None:
    print(f"sgft_lab.report: {msg}", file=sys.stderr)
