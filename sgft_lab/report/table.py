"""Paper-style tables: rows method x student (x D, n_shot), columns benchmarks; seeds aggregated.

Cell = mean test accuracy over seeds with a 95% percentile bootstrap interval. The bootstrap is two-level:
resample the seeds, then each resampled seed's test questions (a question resample of a run with accuracy p on
n questions is Binomial(n, p) / n, so results.json alone suffices). With one seed the interval is the test-set
sampling interval only; with several it also carries seed-to-seed variation. It does not undo the optimism of
choosing the best test epoch (the paper protocol's selection), which selects on the same questions.

Every row names its protocol (paper | clean, never merged into one row). Beside the official rule's mean, a
cell keeps the strict rule's (answers.score_strict); the renderers mark the cells where the two differ.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .collect import Entry, row_label, warn
from .paper import PaperCell, PaperNumbers

METHOD_ORDER = (
    "zero_shot",
    "zero_shot_cot",
    "few_shot_cot",
    "vanilla_ft",
    "fine_tune_cot",
    "diverse_reasoning",
    "dss",
)


SELECTION_TEXT = {
    "auto": "each run's protocol's own: paper = best test epoch, clean = test read once at the best validation epoch",
    "best_test_epoch": "the best test epoch, Fine-tune-CoT's selection for its open students",
    "dev_selected": "the best validation epoch; test never chose anything",
    "last_epoch": "the final epoch",
}


@dataclass
class Cell:
    benchmark: str
    seeds: list[int]
    values: list[float]  # accuracy fractions, one per seed
    ns: list[int | None]
    mean: float  # %
    low: float  # % (95% bootstrap)
    high: float
    single_evaluation: bool = False
    selection: str = ""  # the epoch selection behind the values (best_test_epoch, dev_selected, ... single)
    strict: float | None = None  # % under the strict rule (None: a run did not record it)
    paper: PaperCell | None = None
    cost_usd: float | None = None  # teacher cost of the cell's runs (summed over seeds); None: no teacher
    teacher_calls: int | None = None  # calls made by the cell's runs (cache hits excluded)
    cache_hits: int | None = None

    @property
    def diff(self) -> float | None:
        return None if self.paper is None else self.mean - self.paper.value

    @property
    def rules_differ(self) -> bool:
        """The strict rule gives another number than the official one (to two decimals)."""
        return self.strict is not None and round(self.strict, 2) != round(self.mean, 2)


@dataclass
class Row:
    method: str
    student: str
    size: str  # paper size label, or the parameter count
    parameters: int | None
    D: int | None
    n_shot: int | None
    by: tuple
    metric: str | None
    cells: dict[str, Cell] = field(default_factory=dict)
    system: str = "student"
    round: int | None = None
    protocol: str = "clean"  # paper | clean

    @property
    def label(self) -> str:
        return row_label(self.method, self.system, self.round)


@dataclass
class Table:
    selection: str  # auto (each run's protocol's own) | best_test_epoch | dev_selected | last_epoch
    rows: list[Row]
    benchmarks: list[str]  # column order
    n_boot: int
    seed: int
    by: tuple[str, ...] = ()
    paper: PaperNumbers | None = None
    missing: int = 0  # entries without a number at the selection


def _bootstrap_means(values: Sequence[float], ns: Sequence[int | None], n_boot: int, rng):
    """``n_boot`` resampled means over seeds: seeds drawn with replacement, then (when every seed's question
    count is known) each seed's accuracy redrawn as Binomial(n, p) / n."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    if v.size == 0:
        raise ValueError("bootstrap: no values")
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    p = v[idx]
    if all(n is not None and n > 0 for n in ns):
        n = np.asarray(ns, dtype=np.int64)[idx]
        p = rng.binomial(n, np.clip(p, 0.0, 1.0)) / n
    return p.mean(axis=1)


def bootstrap_ci(
    values: Sequence[float], ns: Sequence[int | None], *, n_boot: int = 2000, rng=None, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean over seeds, resampling seeds and then each seed's test questions."""
    import numpy as np

    means = _bootstrap_means(values, ns, n_boot, rng if rng is not None else np.random.default_rng(0))
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_diff_ci(
    a: Sequence[float], a_ns: Sequence[int | None], b: Sequence[float], b_ns: Sequence[int | None], *,
    n_boot: int = 2000, rng=None, level: float = 0.95,
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its percentile interval, each arm resampled as :func:`bootstrap_ci` does
    (seeds, then each seed's test questions), independently: an effect's size with its uncertainty."""
    import numpy as np

    rng = rng if rng is not None else np.random.default_rng(0)
    d = _bootstrap_means(a, a_ns, n_boot, rng) - _bootstrap_means(b, b_ns, n_boot, rng)
    q = (1 - level) / 2
    lo, hi = np.quantile(d, [q, 1 - q])
    return float(np.mean(a) - np.mean(b)), float(lo), float(hi)


def bootstrap_paired_diff_ci(
    a: Sequence[str], b: Sequence[str], *, n_boot: int = 2000, rng=None, level: float = 0.95,
) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its percentile interval for a paired design: ``a[i]`` and ``b[i]`` are the
    per-question outcomes ("1"/"0") of the two systems at seed i on the same questions in the same order.
    Each replicate draws seeds with replacement (the same seed for both systems) and, within each drawn seed,
    questions with replacement (the same questions for both), so what the systems share -- the seed's data and
    round-0 student, the test questions' difficulty -- cancels in the difference instead of widening it."""
    import numpy as np

    if not a or len(a) != len(b) or any(len(x) != len(y) or not x for x, y in zip(a, b)):
        raise ValueError("paired bootstrap: both systems need outcomes on the same questions for every seed")
    rng = rng if rng is not None else np.random.default_rng(0)
    k = len(a)
    # Per seed, a question's paired difference is +1, 0 or -1; a resample of its questions is a multinomial draw.
    means = np.empty((k, n_boot, k))
    point = []
    for s, (x, y) in enumerate(zip(a, b)):
        d = np.frombuffer(x.encode(), np.uint8).astype(int) - np.frombuffer(y.encode(), np.uint8).astype(int)
        n = d.size
        probs = [np.mean(d == 1), np.mean(d == 0), np.mean(d == -1)]
        draws = rng.multinomial(n, probs, size=(n_boot, k))
        means[s] = (draws[..., 0] - draws[..., 2]) / n
        point.append(d.mean())
    seeds = rng.integers(0, k, size=(n_boot, k))
    reps = means[seeds, np.arange(n_boot)[:, None], np.arange(k)[None, :]].mean(axis=1)
    q = (1 - level) / 2
    lo, hi = np.quantile(reps, [q, 1 - q])
    return float(np.mean(point)), float(lo), float(hi)


def build_table(
    entries: Iterable[Entry],
    *,
    selection: str = "auto",
    paper: PaperNumbers | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    by: Sequence[str] = (),
) -> Table:
    import numpy as np

    rows: dict[tuple, Row] = {}
    groups: dict[tuple, dict[str, dict[int, Entry]]] = {}
    missing = 0
    for e in entries:
        if e.accuracy is None:
            missing += 1
            continue
        key = (e.method, e.system, e.round, e.student, e.D, e.n_shot, e.by, e.metric, e.protocol)
        if key not in rows:
            pc = paper.paper_student(e.student, e.student_model) if paper else None
            size = pc[1] if pc else _fmt_params(e.parameters)
            rows[key] = Row(e.method, e.student, size, e.parameters, e.D, e.n_shot, e.by, e.metric,
                            system=e.system, round=e.round, protocol=e.protocol)
        cell = groups.setdefault(key, {}).setdefault(e.benchmark, {})
        old = cell.get(e.seed)
        if old is not None:
            warn(
                f"{e.label} / {e.student} / {e.benchmark} seed {e.seed}: two runs ({old.run_dir} and "
                f"{e.run_dir}); keeping the newer. Separate them with --by KEY (e.g. --by trainer.lr)."
            )
            if old.mtime > e.mtime:
                continue
        cell[e.seed] = e
    benchmarks: set[str] = set()
    for key, cells in groups.items():
        row = rows[key]
        for bench, by_seed in cells.items():
            benchmarks.add(bench)
            es = [by_seed[s] for s in sorted(by_seed)]
            vals = [float(x.accuracy) for x in es]  # type: ignore[arg-type]
            stricts = [x.strict_accuracy for x in es]
            ns = [x.n for x in es]
            rng = np.random.default_rng([seed, zlib.crc32(repr((key, bench)).encode())])
            lo, hi = bootstrap_ci(vals, ns, n_boot=n_boot, rng=rng)
            taught = {x.run_dir: x for x in es if x.teacher is not None}  # one run may give several entries
            ref = es[0]
            pc = (
                paper.lookup(
                    method=ref.method,
                    system=ref.system,
                    student=ref.student,
                    benchmark=bench,
                    task=ref.task,
                    student_model=ref.student_model,
                    embedded=ref.embedded,
                    D=ref.D,
                    n_shot=ref.n_shot,
                    experiment=ref.experiment,
                    response_model=ref.response_model,
                )
                if paper
                else None
            )
            row.cells[bench] = Cell(
                bench,
                [x.seed for x in es],
                vals,
                ns,
                100 * sum(vals) / len(vals),
                100 * lo,
                100 * hi,
                single_evaluation=all(x.single_evaluation for x in es),
                selection="/".join(sorted({x.selection or "" for x in es})),
                strict=None if None in stricts else 100 * sum(stricts) / len(stricts),
                paper=pc,
                cost_usd=sum(x.cost_usd or 0.0 for x in taught.values()) if taught else None,
                teacher_calls=sum(x.teacher_calls or 0 for x in taught.values()) if taught else None,
                cache_hits=sum(x.cache_hits or 0 for x in taught.values()) if taught else None,
            )
    ordered = sorted(rows.values(), key=_row_key)
    return Table(
        selection,
        ordered,
        _order_benchmarks(benchmarks, paper, groups),
        n_boot,
        seed,
        tuple(by),
        paper,
        missing,
    )


def _row_key(r: Row):
    """Paper order of methods, then a method's systems (its own first), student size, rounds in order."""
    rank = METHOD_ORDER.index(r.method) if r.method in METHOD_ORDER else len(METHOD_ORDER)
    system = "" if r.system == "student" else r.system
    size = r.parameters if r.parameters is not None else math.inf
    # --by values: numbers in numeric order, then the rest as text
    by = tuple((0, x, "") if isinstance(x, (int, float)) else (1, 0, str(x)) for x in r.by)
    rnd = -1 if r.round is None else r.round
    return (rank, r.method, system, size, r.student, rnd, r.D or 0, r.n_shot or 0, by, r.protocol)


def _order_benchmarks(benchmarks: set[str], paper: PaperNumbers | None, groups) -> list[str]:
    order = list(paper.benchmarks) if paper else []
    tasks: dict[str, str] = {}
    for cells in groups.values():
        for bench, by_seed in cells.items():
            tasks[bench] = next(iter(by_seed.values())).task or ""

    def key(b: str):
        if b in order:
            return (0, order.index(b), b)
        t = tasks.get(b, "")
        return (1, order.index(t) if t in order else len(order), b)

    return sorted(benchmarks, key=key)


def _fmt_params(n: int | None) -> str:
    if not n:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------
def _header(t: Table, b: str) -> str:
    if t.paper is None:
        return b
    if b in t.paper.benchmarks:
        return t.paper.label(b)
    task = _task_of(t, b)
    return f"{b} (≈{t.paper.label(task)})" if task in t.paper.benchmarks else b


def _task_of(t: Table, bench: str) -> str | None:
    for r in t.rows:
        c = r.cells.get(bench)
        if c and c.paper:
            return c.paper.benchmark
    return None


def _paper_mark(p: PaperCell) -> str:
    return ("†" if p.stand_in else "") + ("‡" if p.secondary else "")


def _row_cols(r: Row, t: Table) -> list[str]:
    cols = [
        r.label + (f" [{r.metric}]" if r.metric and r.metric != "ftcot" else ""),
        r.protocol,
        r.student,
        r.size,
        "-" if r.D is None else str(r.D),
    ]
    if any(x.n_shot is not None for x in t.rows):
        cols.append("all" if r.n_shot is None else str(r.n_shot))
    cols += ["-" if v is None else str(v) for v in r.by]
    seeds = sorted({len(c.seeds) for c in r.cells.values()})
    cols.append(str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}")
    return cols


def _row_head(t: Table) -> list[str]:
    head = ["method", "protocol", "student", "size", "D"]
    if any(x.n_shot is not None for x in t.rows):
        head.append("n_shot")
    return head + list(t.by) + ["seeds"]


def to_markdown(t: Table) -> str:
    lines = [
        f"Test accuracy (%) at selection `{t.selection}` ({SELECTION_TEXT.get(t.selection, t.selection)}): mean "
        f"over seeds [95% bootstrap interval over seeds and test questions, B={t.n_boot}, seed {t.seed}], "
        "official rule; p = published number, Δ = ours − published.",
        "",
    ]
    head = _row_head(t) + [_header(t, b) for b in t.benchmarks]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    marks: set[str] = set()
    for r in t.rows:
        cells = []
        for b in t.benchmarks:
            c = r.cells.get(b)
            if c is None:
                cells.append("")
                continue
            s = f"{c.mean:.2f} [{c.low:.1f}, {c.high:.1f}]" + ("°" if c.single_evaluation else "")
            if c.single_evaluation:
                marks.add("°")
            if c.rules_differ:
                marks.add("§")
                s += f" · strict§ {c.strict:.2f}"
            if c.paper is not None:
                m = _paper_mark(c.paper)
                marks.update(m)
                s += f" · p{m} {c.paper.value:.2f} · Δ {c.diff:+.2f}"
            cells.append(s)
        lines.append("| " + " | ".join(_row_cols(r, t) + cells) + " |")
    lines.append("")
    notes = []
    if "°" in marks:
        notes.append("° evaluated once (no epochs to choose from): the same number at every selection.")
    if "§" in marks:
        notes.append("§ the strict rule (answers.score_strict: the text after the answer prefix, numbers as numbers, "
                     "standalone choice letters, yes/no as words) gives another number than the official "
                     "evaluator; cells without § agree.")
    if "†" in marks:
        notes.append(
            "† stand-in, not a reproduction target: the published number of the real task an embedded task "
            "imitates and/or of the paper student named below (same size rank, or the experiment's "
            "reference student). It locates the run; it does not measure reproduction."
        )
    if "‡" in marks:
        notes.append(
            "‡ secondary source (SGFT, methods.md 3.7: a third-party summary, not checked against the paper)."
        )
    if t.paper is not None:
        notes.append(
            f"Paper numbers: {t.paper.source} ({t.paper.data['fine_tune_cot']['source']}). Fine-tune-CoT's "
            "open-student numbers use the best test epoch (protocol paper, selection best_test_epoch)."
        )
    other = sorted(
        {
            f"{c.selection} vs published {c.paper.protocol}"
            for r in t.rows
            for c in r.cells.values()
            if c.paper is not None and not c.single_evaluation and c.paper.protocol != c.selection
        }
    )
    if other:
        notes.append(
            f"Δ also contains a selection difference where a cell's epoch selection is not the published "
            f"number's ({'; '.join(other)}; csv columns selection, paper_protocol)."
        )
    if t.missing:
        notes.append(
            f"{t.missing} measured entries have no `{t.selection}` number and are left out (not mixed in)."
        )
    lines += [f"- {n}" for n in notes]
    students = sorted(
        {
            f"{r.student} → {c.paper.student} ({c.paper.table})"
            for r in t.rows
            for c in r.cells.values()
            if c.paper is not None and "student" in c.paper.stand_in
        }
    )
    tasks = (
        sorted(
            {
                f"{b} → {t.paper.label(c.paper.benchmark)}"
                for r in t.rows
                for b, c in r.cells.items()
                if c.paper is not None and "task" in c.paper.stand_in
            }
        )
        if t.paper
        else []
    )
    if students or tasks:
        lines.append(
            "- Stand-ins used: "
            + "; ".join(
                x
                for x in (
                    "students " + ", ".join(students) if students else "",
                    "tasks " + ", ".join(tasks) if tasks else "",
                )
                if x
            )
            + "."
        )
    cost_rows = [r for r in t.rows if any(c.teacher_calls is not None for c in r.cells.values())]
    if cost_rows:
        lines += [
            "",
            "Teacher cost per cell (USD, summed over the cell's runs; teacher calls made + cache hits):",
            "",
        ]
        head = _row_head(t)[:-1] + [_header(t, b) for b in t.benchmarks]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in cost_rows:
            cells = []
            for b in t.benchmarks:
                c = r.cells.get(b)
                cells.append(
                    ""
                    if c is None or c.teacher_calls is None
                    else f"${(c.cost_usd or 0.0):.4f} ({c.teacher_calls} + {c.cache_hits or 0})"
                )
            lines.append("| " + " | ".join(_row_cols(r, t)[:-1] + cells) + " |")
    return "\n".join(lines) + "\n"


CSV_FIELDS = [
    "method",
    "student",
    "size",
    "parameters",
    "D",
    "n_shot",
    "metric",
    "benchmark",
    "protocol",
    "selection",
    "n_seeds",
    "seeds",
    "mean",
    "ci_low",
    "ci_high",
    "strict_mean",
    "single_evaluation",
    "n_test",
    "paper",
    "paper_table",
    "paper_student",
    "paper_benchmark",
    "paper_stand_in",
    "paper_secondary",
    "paper_protocol",
    "diff",
    "cost_usd",
    "teacher_calls",
    "cache_hits",
]


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS[:7] + list(t.by) + CSV_FIELDS[7:])
    for r in t.rows:
        for b in t.benchmarks:
            c = r.cells.get(b)
            if c is None:
                continue
            p = c.paper
            w.writerow(
                [
                    r.label,
                    r.student,
                    r.size,
                    r.parameters or "",
                    _blank(r.D),
                    _blank(r.n_shot),
                    r.metric or "",
                    *[_blank(v) for v in r.by],
                    b,
                    r.protocol,
                    c.selection,
                    len(c.seeds),
                    " ".join(map(str, c.seeds)),
                    f"{c.mean:.4f}",
                    f"{c.low:.4f}",
                    f"{c.high:.4f}",
                    "" if c.strict is None else f"{c.strict:.4f}",
                    int(c.single_evaluation),
                    " ".join("" if n is None else str(n) for n in c.ns),
                    "" if p is None else f"{p.value:.2f}",
                    "" if p is None else p.table,
                    "" if p is None else p.student,
                    "" if p is None else p.benchmark,
                    "" if p is None else "+".join(p.stand_in),
                    "" if p is None else int(p.secondary),
                    "" if p is None else p.protocol,
                    "" if c.diff is None else f"{c.diff:.4f}",
                    "" if c.cost_usd is None else f"{c.cost_usd:.6f}",
                    _blank(c.teacher_calls),
                    _blank(c.cache_hits),
                ]
            )
    return buf.getvalue()


def _blank(v) -> str:
    return "" if v is None else str(v)


def _tex(s: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
        ("$", r"\$"),
        ("→", r"$\rightarrow$"),
        ("≈", r"$\approx$"),
        ("->", r"$\rightarrow$"),
    ):
        s = s.replace(a, b)
    return s


def to_latex(t: Table) -> str:
    head = _row_head(t) + [_header(t, b) for b in t.benchmarks]
    n_left = len(_row_head(t))
    out = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{" + "l" * n_left + "r" * len(t.benchmarks) + "}",
        r"\toprule",
        " & ".join(_tex(h) for h in head) + r" \\",
        r"\midrule",
    ]
    for r in t.rows:
        cells = []
        for b in t.benchmarks:
            c = r.cells.get(b)
            if c is None:
                cells.append("--")
                continue
            s = f"${c.mean:.2f}_{{\\,[{c.low:.1f},\\,{c.high:.1f}]}}$"
            if c.rules_differ:
                s += f" [strict {c.strict:.2f}\\S]"
            if c.paper is not None:
                mark = ("^\\dagger" if c.paper.stand_in else "") + ("^\\ddagger" if c.paper.secondary else "")
                s += f" ({c.paper.value:.2f}${mark}$)" if mark else f" ({c.paper.value:.2f})"
            cells.append(s)
        out.append(" & ".join([_tex(x) for x in _row_cols(r, t)] + cells) + r" \\")
    out += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{Test accuracy (\%), selection "
        + _tex(t.selection)
        + r": mean over seeds with a 95\% bootstrap "
        r"interval (seeds and test questions), official rule; published numbers in parentheses ($\dagger$: "
        r"stand-in, $\ddagger$: secondary source); \S: the strict rule's number where it differs.}",
        r"\end{table}",
    ]
    return "\n".join(out) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "tex": to_latex}
