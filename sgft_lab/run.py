"""The run lifecycle, once for every method: prepare -> ``method.run(ctx)`` -> finish.

    prepare   load the data, make the run dir, save config.yaml and overrides.txt, seed, threads, loggers
    run       the method's science only: it asks ``ctx`` for the teacher, the cache, the loggers and the
              paths, and records what it measured as result entries
    finish    (in a ``finally``) results.json, the W&B summary and artifacts, the results table; the cache,
              the teacher and every logger are closed whether the method returned or raised

One result schema (``SCHEMA_VERSION``): ``results.json`` holds the run identity, the headline ``metrics``,
``entries`` -- one record per evaluated system ``{system, round, split, epoch, selection, accuracy, n,
metric}`` -- the teacher accounting, speed and the method's ``details``. The report reads ``entries`` only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .config import PROTOCOLS, Config, ConfigError, redact, to_plain
from .teachers.secrets import redact_text
from .io import atomic_write_text, write_json
from .paths import HydraJob, RunPaths, run_dir_for, run_name, teacher_cache_path

SCHEMA_VERSION = 2
SELECTIONS = ("last_epoch", "dev_selected", "best_test_epoch", "single")
SELECTION_LABELS = {
    "last_epoch": "final epoch",
    "dev_selected": "best validation epoch",
    "best_test_epoch": "best test epoch (paper protocol; selects on test)",
    "single": "evaluated once",
}


@dataclass
class Entry:
    """One evaluated number: ``system`` (what was evaluated, in the papers' terms: ``student`` is the method's
    own trained or prompted system) at ``round`` (FDD), on ``split``, at ``epoch`` chosen by ``selection``."""

    system: str
    split: str
    accuracy: float
    n: int
    selection: str = "single"  # last_epoch | dev_selected | best_test_epoch | single (no epochs to choose)
    epoch: int | None = None
    round: int | None = None
    metric: str = "ftcot"  # the scoring rule (ftcot: Fine-tune-CoT's evaluator; fdd_numeric: executed PoT)
    strict_accuracy: float | None = None  # the strict rule's accuracy on the same rows (answers.score_strict)
    protocol: str = "clean"  # the protocol that produced the number (config `protocol`)
    benchmark: str | None = None  # another benchmark's test split (FDD's out-of-domain tests); None: the run's
    # Per question, in the split's order: "1" correct, "0" not (None: not kept, e.g. a per-epoch number), and
    # a fingerprint of the question ids read, so two systems' outcomes on the same questions can be paired
    # (report.table.bootstrap_paired_diff_ci)
    outcomes: str | None = None
    questions: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def question_fingerprint(ids: Sequence[str]) -> str:
    """12 hex digits naming an ordered list of question ids (equal lists, equal fingerprints)."""
    import hashlib

    return hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]


def round_(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def model_info(student) -> dict:
    """Name, checkpoint and parameter counts of a built student (results.json ``models``)."""
    from .students.build import count_parameters

    trainable, total = count_parameters(student.model)
    return {"name": student.cfg.name, "model": student.cfg.name_or_path or student.cfg.name,
            "adapter": student.cfg.adapter.value, "parameters": {"trainable": trainable, "total": total}}


def epoch_entries(history: Sequence[dict], *, system: str = "student", round: int | None = None,
                  metric: str = "ftcot", protocol: str = "paper") -> list[Entry]:
    """The selections of methods.md 1.4 (never mixed) that a per-epoch history supports, test and val: with
    test evaluated every epoch (protocol paper) the final and the best test epoch; with val too, also the
    best validation epoch."""
    from .evaluation import summarize

    s = summarize(history)
    out = []
    for selection in ("last_epoch", "dev_selected", "best_test_epoch"):
        if selection not in s:
            continue
        sel = s[selection]
        h = next(x for x in history if x["epoch"] == sel["epoch"])
        for split in ("test", "val"):
            if f"{split}_accuracy" in h:
                out.append(Entry(system, split, h[f"{split}_accuracy"], h[f"n_{split}"], selection, sel["epoch"],
                                 round, metric, h.get(f"{split}_strict_accuracy"), protocol))
    return out


def rows_entry(rows: Sequence[dict], *, system: str = "student", split: str = "test", round: int | None = None,
               metric: str = "ftcot", protocol: str = "clean", selection: str = "single",
               epoch: int | None = None) -> Entry:
    """One evaluation of ``rows`` (evaluation.score_rows): evaluated once (no epochs to choose from), or the
    test read of the clean protocol at the selected ``epoch``."""
    from .evaluation import accuracy, strict_accuracy

    return Entry(system, split, accuracy(rows), len(rows), selection, epoch, round, metric, strict_accuracy(rows),
                 protocol, outcomes="".join("1" if r["correct"] else "0" for r in rows),
                 questions=question_fingerprint([str(r["id"]) for r in rows]))


class RunContext:
    """What a method gets: config, data, paths, the teacher and its cache, loggers, and the result record."""

    def __init__(self, cfg: Config, paths: RunPaths, splits, job: HydraJob | None = None):
        self.cfg = cfg
        self.paths = paths
        self.splits = splits
        self.job = job or HydraJob()
        self.t0 = time.time()
        self.entries: list[Entry] = []
        self.metrics: dict[str, Any] = {}  # the headline (as summarize gives it, or {"accuracy": x})
        self.details: dict[str, Any] = {}  # the method's own record (filter reports, per-stage info ...)
        self.data: dict[str, Any] = {}  # n_train_questions, n_train_samples, rationales_per_question ...
        self.models: dict[str, Any] = {}  # "student" / "response": name, model, parameters
        self.speed: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.resumed_from_checkpoint: str | None = None
        from .teachers.engine import TeacherAccounting

        self.accounting = TeacherAccounting()
        self._teacher = None
        self._cache = None
        self._wandb = None
        self.lock = None  # the run dir's lock (runlock.acquire in prepare; released by finish)
        self._lap = time.time()

    # --- data ----------------------------------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self.splits.task

    def eval_sets(self, splits: Sequence[str] = ("val", "test")) -> dict[str, list]:
        """The evaluation questions (capped by trainer.max_eval_examples)."""
        cap = self.cfg.trainer.max_eval_examples
        out = {}
        for name in splits:
            xs = list(getattr(self.splits, name))
            out[name] = xs if cap is None else xs[:cap]
        return out

    @property
    def progress(self) -> bool:
        return self.cfg.trainer.enable_progress_bar

    # --- the teacher ---------------------------------------------------------------------------------------
    def teacher(self, examples: Sequence = (), kinds: Sequence = ()):
        """The configured teacher, built once (``kinds``: prompt kinds the reference teacher must answer)."""
        if self._teacher is None:
            from .teachers import build_teacher

            known = list(examples) or [*self.splits.train, *self.splits.val, *self.splits.test]
            self._teacher = build_teacher(self.cfg.teacher, known, kinds=kinds)
        return self._teacher

    def cache(self):
        """The shared teacher cache, opened once and closed by ``finish``."""
        if self._cache is None:
            from .teachers.cache import TeacherCache

            self._cache = TeacherCache(teacher_cache_path(self.cfg.paths.cache_dir))
        return self._cache

    def generate(self, prompts: Sequence[str], params, stage: str, teacher=None) -> list:
        """``params.n`` teacher completions per prompt, through the cache, accounted under ``stage``."""
        from .teachers.engine import generate

        batch = getattr(self.cfg.method, "teacher_batch_size", 64)
        return generate(teacher or self.teacher(), self.cache(), list(prompts), params,
                        accounting=self.accounting, stage=stage, batch_size=batch, progress=self.progress)

    # --- loggers -------------------------------------------------------------------------------------------
    def fit_loggers(self, paths: RunPaths, stage: str | None = None) -> list:
        """Loggers for one training stage: its own metrics.csv, and the run's W&B run (metrics prefixed with
        the stage's name when there are several stages)."""
        from lightning.pytorch.loggers import CSVLogger

        loggers = [CSVLogger(save_dir=str(paths.run_dir), name="", version="")]
        run = self.wandb()
        if run is not None:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(experiment=run, prefix=stage or "", save_dir=str(self.paths.run_dir)))
        return loggers

    def wandb(self):
        """The run's one W&B run (logger.wandb), started on first use on global rank 0; None otherwise."""
        if not self.cfg.logger.wandb or global_rank() != 0:
            return None
        if self._wandb is None:
            self._wandb = start_wandb(self.cfg, self.paths)
        return self._wandb

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Run-level metrics, one row per ``step`` (e.g. per FDD round), to the run's metrics.csv -- a step an
        earlier process logged is replaced, never repeated -- and to its W&B run."""
        import csv
        import io

        path = self.paths.metrics_csv
        rows = list(csv.DictReader(path.open(newline="", encoding="utf-8"))) if path.is_file() else []
        rows = [r for r in rows if r.get("step") != str(step)] + [{"step": step, **metrics}]
        rows.sort(key=lambda r: int(r["step"]))
        columns = list(dict.fromkeys(k for r in rows for k in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, out.getvalue())
        run = self.wandb()
        if run is not None:
            run.log({k: v for k, v in metrics.items() if v is not None} | {"step": step})

    # --- results -------------------------------------------------------------------------------------------
    def add(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)

    def record_headline(self, stage: dict, outcome, student=None) -> None:
        """A training stage (training.train_and_evaluate's result) as the run's headline: its metrics and
        history, the training speed, the resume point and the student."""
        self.metrics = stage["metrics"]
        self.details["history"] = stage["history"]
        self.speed = {**outcome.speed(), "train_time_s": round_(outcome.train_time_s)}
        self.resumed_from_checkpoint = outcome.resumed_from_checkpoint
        if student is not None:
            self.models["student"] = model_info(student)

    def require_samples(self, pairs: Sequence, report: dict, what: str) -> None:
        """A filter that kept nothing ends the run here, with the counts and what to change."""
        if pairs:
            return
        from .errors import FilterError

        reasons = {k: v for k, v in report.items() if k.startswith("rejected") and v}
        top = ", ".join(f"{k.removeprefix('rejected_')} {v}" for k, v in
                        sorted(reasons.items(), key=lambda kv: -kv[1])[:3]) or "none recorded"
        raise FilterError(
            f"{what} kept 0 of {report.get('total', report.get('questions', '?'))} teacher samples "
            f"(rejections: {top}); nothing to train on. See {self.paths.teacher_dir}; try a stronger teacher "
            "(teacher.model=...), more samples per question, or check the teacher's answers against the "
            "benchmark's answer format")

    def lap(self, name: str) -> None:
        """Record the wall time since the previous lap under ``name`` (results.json ``timings_s``)."""
        now = time.time()
        self.timings[name] = round(now - self._lap, 2)
        self._lap = now

    def identity(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"method": cfg.method.name, "benchmark": cfg.benchmark.name, "task": cfg.benchmark.task,
                "student": cfg.student.name, "student_model": cfg.student.name_or_path or cfg.student.name,
                "adapter": cfg.student.adapter.value,
                "teacher": cfg.teacher.name if cfg.method.uses_teacher() else None,
                "seed": cfg.seed, "experiment": cfg.experiment, "tier": cfg.tier.name if cfg.tier else None,
                "overrides": list(self.job.overrides), "run_dir": str(self.paths.run_dir)}

    def results(self) -> dict[str, Any]:
        totals = self.accounting.to_dict()
        return redact({
            "schema_version": SCHEMA_VERSION,
            "run": self.identity(),
            "metrics": self.metrics,
            "entries": [e.to_dict() for e in self.entries],
            "data": self.data,
            "models": self.models,
            "teacher": {"calls": totals["total"]["teacher_calls"], "cache_hits": totals["total"]["cache_hits"],
                        "accounting": totals},
            "speed": self.speed,
            "timings_s": self.timings,
            "resumed_from_checkpoint": self.resumed_from_checkpoint,
            "wall_time_s": round(time.time() - self.t0, 2),
            "environment": environment(),
            "details": self.details,
        })


# --------------------------------------------------------------------------------------------------------
# prepare / finish


def prepare(cfg: Config, job: HydraJob, run_dir: str | os.PathLike | None = None, check=None) -> RunContext:
    """Load the data and let the method ``check`` it (nothing is written before both pass), make the run dir,
    save the config, seed. ``run_dir`` replaces the identity's folder (notebooks, tests)."""
    from .benchmarks import load_benchmark

    quiet_libraries()
    splits = load_benchmark(cfg.benchmark, cfg.paths.data_dir, require_train=cfg.method.uses_training(),
                            protocol=cfg.protocol)
    if check is not None:
        check(cfg, splits)
    from . import runlock

    paths = RunPaths(run_dir_for(cfg, job) if run_dir is None else Path(run_dir))
    lock = runlock.acquire(paths, global_rank())  # one process per run dir, until finish()
    try:
        save_config(cfg, paths, job)
    except BaseException:
        runlock.release(lock)
        raise
    seed_everything(cfg.seed)
    import torch

    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    if cfg.protocol == "paper" and torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls, as Fine-tune-CoT's custom_train.py sets
    ctx = RunContext(cfg, paths, splits, job)
    ctx.lock = lock
    return ctx


# Library loggers whose warnings say nothing a run can act on: bitsandbytes looking for optional CPU kernels on
# the Hub (offline here, and the pure-PyTorch fallback is used), at every import.
NOISY_LOGGERS = ("kernels", "bitsandbytes.backends.cpu.ops")


def quiet_libraries() -> None:
    """Silence library noise in a run's output: transformers' per-save / per-load progress bars ("Writing model
    shards", "Loading weights") and the loggers above; the project's own bars and errors stay."""
    import logging

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is a dependency; a broken install shows elsewhere
        pass
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def finish(ctx: RunContext, ok: bool) -> dict | None:
    """results.json, W&B summary and artifacts and the table when the method succeeded; always close the
    cache, the teacher and the loggers (a W&B run that raised is marked failed)."""
    results = None
    try:
        if ok:
            results = ctx.results()
            if global_rank() == 0:  # under DDP every rank runs the method; one writes
                write_json(ctx.paths.results, results)
            run = ctx.wandb()
            if run is not None:
                run.summary.update(summary_metrics(results))
                if ctx.cfg.logger.log_artifacts:
                    log_artifacts(ctx, results)
            if ctx.cfg.print_table:
                print_results_table(results)
    finally:
        if ctx._cache is not None:
            ctx._cache.close()
        close = getattr(ctx._teacher, "close", None)
        if callable(close):
            close()
        if ctx._wandb is not None:
            ctx._wandb.finish(exit_code=0 if ok else 1)
            ctx._wandb = None
        from . import runlock

        runlock.release(ctx.lock)
        ctx.lock = None
        if global_rank() == 0:
            print(f"run dir: {ctx.paths.run_dir}", flush=True)
    return results


def execute(cfg: Config, job: HydraJob | None = None, run_dir: str | os.PathLike | None = None) -> dict:
    """prepare -> the method -> finish (in a finally); returns results.json's content. ``dry_run``: the
    plan only (sgft_lab/plan.py): nothing is prepared, nothing is paid for."""
    from .methods import get_method

    if cfg.dry_run:
        from .plan import make_plan, print_plan

        plan = make_plan(cfg, job or HydraJob(), run_dir)
        print_plan(plan)
        return plan
    from .sweep import LAST

    method = get_method(cfg.method.name)
    ctx = prepare(cfg, job or HydraJob(), run_dir, check=getattr(method, "check", None))
    LAST["run_dir"] = str(ctx.paths.run_dir)
    ok = False
    try:
        method.run(ctx)
        ok = True
    finally:
        results = finish(ctx, ok)
    LAST["accuracy"] = (results or {}).get("metrics", {}).get("accuracy")
    return results or {}


def save_config(cfg: Config, paths: RunPaths, job: HydraJob) -> None:
    """config.yaml (secrets redacted) and overrides.txt. The run dir is the run's identity: if it already
    holds a run of a *different* config (a preset file was edited), stop rather than resume another run."""
    from omegaconf import OmegaConf

    text = OmegaConf.to_yaml(OmegaConf.create(redact(to_plain(cfg))))
    if paths.config.exists():
        old = OmegaConf.to_container(OmegaConf.load(paths.config))
        new = OmegaConf.to_container(OmegaConf.create(text))
        if _identity(old) != _identity(new):
            raise ConfigError(f"{paths.run_dir} holds a run with a different config (compare {paths.config}); "
                              "delete that folder or set paths.output_dir to start afresh")
    atomic_write_text(paths.config, text)
    atomic_write_text(paths.overrides, "\n".join(redact_text(o) for o in job.overrides) + "\n")


def _identity(cfg: dict) -> dict:
    """The config fields that define a run (not where it writes or how it displays progress)."""
    c = {k: v for k, v in cfg.items() if k not in ("paths", "logger", "print_table", "dry_run")}
    c["trainer"] = {k: v for k, v in c.get("trainer", {}).items()
                    if k not in ("enable_progress_bar", "eval_batch_size", "num_workers", "threads")}
    return c


def environment() -> dict[str, Any]:
    """What produced the numbers: library versions and the hardware (CPU model, its vector extensions and
    the threads used, or the GPU and CUDA), so a number that another machine does not reproduce can be traced."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def v(pkg: str) -> str | None:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return None

    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    env.update({pkg: v(pkg) for pkg in ("torch", "transformers", "peft", "lightning", "bitsandbytes", "sgft-lab")})
    flags, model = set(), platform.processor() or None
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    env.update(cpu=model, cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
               cpu_vector_isa=[f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags],
               # the kernels torch actually uses (ATEN_CPU_CAPABILITY can lower it): their rounding differs, and
               # greedy decoding amplifies that (README: 67.50% with AVX512 kernels, 62.00% with AVX2 ones)
               torch_cpu_capability=torch.backends.cpu.get_cpu_capability())
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(), cuda=torch.version.cuda,
                   float32_matmul_precision=torch.get_float32_matmul_precision())
    return env


def seed_everything(seed: int) -> None:
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)


def global_rank() -> int:
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


# --------------------------------------------------------------------------------------------------------
# W&B


def start_wandb(cfg: Config, paths: RunPaths):
    """One W&B run for the whole run (every training stage logs into it), offline without a key."""
    import wandb

    offline = cfg.logger.offline
    if offline is None:
        offline = not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "online"
        if offline and os.environ.get("WANDB_MODE") != "offline":
            print("wandb: no WANDB_API_KEY set, logging offline (upload later with `wandb sync`).")
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    # W&B records the command line (sys.argv) in the run's metadata: it sees it with credentials masked
    # (teacher.base_url=http://user:KEY@...), then the real one is put back.
    argv = sys.argv
    sys.argv = [redact_text(a) for a in argv]
    try:
        return wandb.init(
            project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group or cfg.experiment,
            job_type=cfg.method.name, tags=list(cfg.logger.tags) + [cfg.benchmark.name, cfg.student.name],
            name=run_name(cfg.method.name, cfg.benchmark.name, cfg.student.name, cfg.seed),
            dir=str(paths.run_dir), mode="offline" if offline else "online", config=redact(to_plain(cfg)),
            reinit="finish_previous",
        )
    finally:
        sys.argv = argv


def summary_metrics(results: dict) -> dict[str, float]:
    """The W&B summary of a results dict: ``accuracy`` (the headline), then one key per test entry,
    ``test_accuracy/<system>[/round_r]/<selection>`` (and ``val_accuracy/...``), the data counts and the
    teacher accounting (``teacher/<stage>/<field>``)."""
    from .teachers.engine import StageStats

    flat: dict[str, float] = {}
    m = results.get("metrics") or {}
    if isinstance(m.get("accuracy"), (int, float)):
        flat["accuracy"] = m["accuracy"]
    for e in results.get("entries", []):
        where = e["system"] + (f"/round_{e['round']}" if e.get("round") is not None else "") + \
            (f"/{e['benchmark']}" if e.get("benchmark") else "")
        flat[f"{e['split']}_accuracy/{where}/{e['selection']}"] = e["accuracy"]
        if e.get("epoch") is not None:
            flat[f"epoch/{where}/{e['selection']}"] = e["epoch"]
    for k, v in (results.get("data") or {}).items():
        if isinstance(v, (int, float)):
            flat[k] = v
    t = results.get("teacher") or {}
    flat["teacher_calls"], flat["cache_hits"] = t.get("calls", 0), t.get("cache_hits", 0)
    acc = t.get("accounting") or {}
    for name, stage in [("total", acc.get("total")), *(acc.get("stages") or {}).items()]:
        for k, v in (stage or {}).items():
            if isinstance(v, (int, float)) and k in StageStats.__dataclass_fields__:
                flat[f"teacher/{name}/{k}"] = v
    flat["wall_time_s"] = results.get("wall_time_s", 0.0)
    return flat


def log_artifacts(ctx: RunContext, results: dict) -> list[str]:
    """The trained student (checkpoints/last.ckpt -- adapters only for LoRA -- and the student dir with its
    tokenizer) and the teacher data (teacher samples, filter report, the training pairs; ``train-data`` when
    the method uses no teacher) as W&B artifacts (logger.log_artifacts=true). Returns the artifact names."""
    import wandb

    cfg, paths, run = ctx.cfg, ctx.paths, ctx.wandb()
    ident = run_name(cfg.method.name, cfg.benchmark.name, cfg.student.name, cfg.seed)
    names = []
    model = wandb.Artifact(f"student-{ident}", type="model", metadata={
        "student": cfg.student.name, "adapter": cfg.student.adapter.value, "metrics": results.get("metrics")})
    if paths.last_checkpoint.exists():
        model.add_file(str(paths.last_checkpoint), name="last.ckpt")
    if paths.student_dir.is_dir() and any(paths.student_dir.iterdir()):
        model.add_dir(str(paths.student_dir), name="student")
    if model.manifest.entries:
        run.log_artifact(model)
        names.append(model.name)
    teacher = results["run"].get("teacher")
    kind = "teacher-data" if teacher else "train-data"  # vanilla_ft: the gold pairs only
    data = wandb.Artifact(f"{kind}-{ident}", type="dataset",
                          metadata={"teacher": teacher, "filter": results.get("details", {}).get("filter")})
    if paths.teacher_dir.is_dir() and any(paths.teacher_dir.iterdir()):
        data.add_dir(str(paths.teacher_dir), name="teacher")
    if paths.train_data.exists():
        data.add_file(str(paths.train_data), name="train.jsonl")
    if data.manifest.entries:
        run.log_artifact(data)
        names.append(data.name)
    return names


# --------------------------------------------------------------------------------------------------------
# The table a person reads


def entry_label(system: str, round: int | None, benchmark: str | None = None) -> str:
    return system + (f", round {round}" if round is not None else "") + (f", on {benchmark}" if benchmark else "")


def print_results_table(results: dict) -> None:
    """Every test entry (system, round, selection) and the run's key counts, as one table."""
    from rich.console import Console
    from rich.table import Table

    if global_rank() != 0:
        return
    r = results["run"]
    protocols = sorted({e["protocol"] for e in results["entries"]})
    t = Table(title=f"{r['method']} on {r['benchmark']} (student {r['student']}, seed {r['seed']}, "
                    f"protocol {'/'.join(protocols)})")
    t.add_column("system")
    t.add_column("test accuracy", justify="right")
    t.add_column("strict rule", justify="right")
    t.add_column("model selection")
    for e in results["entries"]:
        if e["split"] != "test":
            continue
        epoch = f", epoch {e['epoch']}" if e.get("epoch") is not None else ""
        metric = f" [{e['metric']}]" if e.get("metric") not in (None, "ftcot") else ""
        strict = e.get("strict_accuracy")
        t.add_row(entry_label(e["system"], e.get("round"), e.get("benchmark")) + metric, f"{100 * e['accuracy']:.2f}% (n={e['n']})",
                  "" if strict is None else f"{100 * strict:.2f}%", SELECTION_LABELS[e["selection"]] + epoch)
    for k, v in results.get("data", {}).items():
        if isinstance(v, (int, float)):
            t.add_row(k, str(v), "", "")
    f = results.get("details", {}).get("filter")
    if isinstance(f, dict) and "kept" in f:
        t.add_row("teacher samples kept by the filter", f"{f['kept']}/{f.get('total', f.get('questions'))}", "", "")
    t.add_row("teacher calls (cache hits)", f"{results['teacher']['calls']} ({results['teacher']['cache_hits']})",
              "", "")
    t.add_row("wall time", f"{results['wall_time_s']:.1f} s", "", "")
    Console(emoji=False).print(t)


def hydra_job() -> HydraJob:
    """The current Hydra job's sweep folder, job number and overrides (an empty job outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not under Hydra (e.g. called from a notebook)
        return HydraJob()
    multirun = hc.mode == RunMode.MULTIRUN
    return HydraJob(sweep_dir=str(hc.sweep.dir) if multirun else None,
                    job_num=int(hc.job.num) if multirun else None,
                    override_dirname=identity_overrides(hc.overrides.task,
                                                        hc.job.config.override_dirname.exclude_keys),
                    overrides=tuple(hc.overrides.task))


def identity_overrides(task: Sequence[str], exclude: Sequence[str]) -> str:
    """Hydra's ``override_dirname`` (sorted ``key=value``s joined by ','), also leaving out every key under an
    excluded group that does not change results (``paths.output_dir=...``, ``logger.wandb=...``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    skip = ("paths.", "logger.", "hydra.")
    lines = sorted(o.input_line for o in OverridesParser.create().parse_overrides(list(task))
                   if o.key_or_group not in exclude and not o.key_or_group.startswith(skip))
    text = ",".join(lines)
    if redact_text(text) != text:  # a credential (teacher.base_url=http://user:KEY@...) never names a folder
        import hashlib

        return ",".join(redact_text(x) for x in lines).replace("***", "REDACTED") + "-" + \
            hashlib.sha256(text.encode()).hexdigest()[:16]
    return text


# --------------------------------------------------------------------------------------------------------
# The result schema, checked


_RUN_KEYS = {"method": str, "benchmark": str, "student": str, "seed": int, "overrides": list, "run_dir": str}
_ENTRY_KEYS = {"system": str, "split": str, "accuracy": (int, float), "n": int, "selection": str, "protocol": str}


def check_results(results: Any, where: str = "results.json") -> None:
    """Raise ValueError naming the field when ``results`` is not a results file of ``SCHEMA_VERSION``."""
    if not isinstance(results, dict):
        raise ValueError(f"{where}: not a JSON object")
    version = results.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise ValueError(f"{where}: results schema version {version}; this sgft_lab reads version "
                         f"{SCHEMA_VERSION} (rerun the run, or read it with the sgft_lab that wrote it)")
    run = results.get("run")
    if not isinstance(run, dict):
        raise ValueError(f"{where}: field 'run' is missing")
    for key, kind in _RUN_KEYS.items():
        if not isinstance(run.get(key), kind):
            raise ValueError(f"{where}: field 'run.{key}' is missing or not a {getattr(kind, '__name__', kind)}")
    for field_ in ("metrics", "data", "models", "details", "teacher"):
        if not isinstance(results.get(field_), dict):
            raise ValueError(f"{where}: field {field_!r} is missing or not an object")
    for i, e in enumerate(results.get("entries") or []):
        for key, kind in _ENTRY_KEYS.items():
            if not isinstance(e.get(key), kind) or isinstance(e.get(key), bool):
                raise ValueError(f"{where}: entries[{i}].{key} is missing or has the wrong type")
        if e["selection"] not in SELECTIONS or e["split"] not in ("val", "test") or not 0 <= e["accuracy"] <= 1 \
                or e["protocol"] not in PROTOCOLS:
            raise ValueError(f"{where}: entries[{i}]: selection, split, accuracy or protocol out of range")
        strict = e.get("strict_accuracy")
        if strict is not None and (not isinstance(strict, (int, float)) or not 0 <= strict <= 1):
            raise ValueError(f"{where}: entries[{i}].strict_accuracy is not a fraction")
        if (e["selection"] == "single") != (e.get("epoch") is None):
            raise ValueError(f"{where}: entries[{i}].epoch: set exactly when an epoch was selected")
        if e.get("round") is not None and not isinstance(e["round"], int):
            raise ValueError(f"{where}: entries[{i}].round is not an integer")
        if e.get("benchmark") is not None and not isinstance(e["benchmark"], str):
            raise ValueError(f"{where}: entries[{i}].benchmark is not a benchmark name")
        out = e.get("outcomes")
        if out is not None and (not isinstance(out, str) or len(out) != e["n"] or set(out) - {"0", "1"}
                                or abs(out.count("1") / max(1, e["n"]) - e["accuracy"]) > 1e-9):
            raise ValueError(f"{where}: entries[{i}].outcomes: not n '0'/'1' characters matching the accuracy")
    if not isinstance(results.get("entries"), list) or not results["entries"]:
        raise ValueError(f"{where}: field 'entries' is missing or empty")
    for key in ("calls", "cache_hits"):
        if not isinstance(results["teacher"].get(key), int):
            raise ValueError(f"{where}: field 'teacher.{key}' is missing or not an integer")
