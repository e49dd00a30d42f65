"""``dry_run=true``: what a run would do, before anything is paid for.

Composes and validates (as every run does), loads the data, asks the method how many teacher requests it will
make (each method module's ``plan(cfg, splits)``: its stages, the prompts known before the run, upper bounds
where later prompts depend on earlier answers), checks the teacher cache for the known ones, prices the rest,
and writes ``plan.json`` into the run dir (and prints it). No teacher request, no model weights, no training;
what cannot be resolved offline (a missing replay file, a missing API key) is listed under ``missing``.
A multirun with ``dry_run=true`` writes one plan per cell.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from .io import write_json
from .paths import HydraJob, RunPaths, run_dir_for, teacher_cache_path


@dataclass
class PlannedStage:
    """One teacher stage a run will pay for, named as the run accounts it (results.json ``teacher.stages``).

    ``prompts`` (each asked for ``samples`` completions) when they are known before the run, e.g. stage 1 of
    zero-shot-CoT; else None and ``requests`` is a count: exact when ``per_previous`` (one request per
    distinct completion of the stage before, e.g. stage 2 of zero-shot-CoT), otherwise an ``upper_bound``
    (prompts that depend on earlier answers: SG retries, FDD's new problems)."""

    stage: str
    max_tokens: int
    prompts: list[str] | None = None
    samples: int = 1
    temperature: float = 0.0
    requests: int = 0
    upper_bound: bool = False
    per_previous: bool = False
    note: str = ""
    prompt_chars: int = 0  # the prompts' total length when they are not known (an estimate)
    cached: int = 0

    def to_dict(self) -> dict:
        return {"stage": self.stage, "requests": self.requests, "cached": self.cached,
                "upper_bound": self.upper_bound, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "note": self.note}


def make_plan(cfg, job: HydraJob, run_dir=None) -> dict:
    """The run's plan (see the module docstring); written to ``<run dir>/plan.json``."""
    from pathlib import Path

    from .benchmarks import load_benchmark
    from .methods import get_method

    method = get_method(cfg.method.name)
    splits = load_benchmark(cfg.benchmark, cfg.paths.data_dir, require_train=cfg.method.uses_training(),
                            protocol=cfg.protocol)
    if getattr(method, "check", None):
        method.check(cfg, splits)
    missing: list[str] = []
    stages = teacher_stages(cfg, splits) if cfg.method.uses_teacher() else []
    identity, price = teacher_identity(cfg, splits, missing) if stages else (None, None)
    count_requests(stages, identity, cfg.paths.cache_dir if identity else None)
    requests, cached = sum(x.requests for x in stages), sum(x.cached for x in stages)
    s = cfg.student
    plan = {
        "method": cfg.method.name, "benchmark": cfg.benchmark.name, "protocol": cfg.protocol,
        "train_ids": ids(splits.train), "val_ids": ids(splits.val), "test_ids": ids(splits.test),
        "n_train": len(splits.train), "n_val": len(splits.val), "n_test": len(splits.test),
        "teacher": cfg.teacher.name if cfg.method.uses_teacher() else None, "teacher_identity": identity,
        "teacher_requests": requests, "teacher_cached": cached,
        "teacher_requests_upper_bound": any(x.upper_bound for x in stages),
        "teacher_stages": [x.to_dict() for x in stages],
        "estimated_cost_usd": estimate_cost(stages, price) if price is not None else None,
        "generation": {"max_length": s.max_length,  # when set, it bounds decoding instead of max_new_tokens
                       "max_new_tokens": None if s.max_length else s.max_new_tokens,
                       "truncate_early": bool(s.truncate_early), "official_padding": s.official_padding},
        "student": {"name": s.name, "name_or_path": s.name_or_path, "adapter": s.adapter.value,
                    "family": s.family.value},
        "epochs": cfg.trainer.max_epochs if cfg.method.uses_training() else 0,
        "batch_size": cfg.trainer.batch_size, "lr": cfg.trainer.lr, "seed": cfg.seed,
        "missing": missing,
    }
    paths = RunPaths(Path(run_dir) if run_dir is not None else run_dir_for(cfg, job))
    plan["run_dir"] = str(paths.run_dir)
    write_json(paths.run_dir / "plan.json", plan)
    return plan


# --------------------------------------------------------------------------------------------------------
# Each method's teacher stages. They mirror the methods' calls of ctx.generate (same prompts, same sampling
# parameters, same stage names); tests/test_plan.py checks them against the requests real runs make.


def teacher_stages(cfg, splits) -> list[PlannedStage]:
    """The teacher stages of the configured method, in the order the run makes them."""
    m = cfg.method
    if m.name in ("fine_tune_cot", "diverse_reasoning"):
        return zs_cot_stages(m, splits.train, m.diverse_samples, m.rationale_temperature())
    if m.name == "dss":  # Fine-tune-CoT's teacher stage, one greedy rationale per question
        return zs_cot_stages(m, splits.train, 1, 0.0)
    if m.name == "sgft":
        return sgft_stages(cfg, splits)
    if m.name in ("fdd", "fdd_pot"):
        return fdd_stages(m, splits.train)
    return []


def zs_cot_stages(m, examples, n: int, temperature: float, note: str = "") -> list[PlannedStage]:
    """rationales.teacher_rationales: ``n`` stage-1 rationales per question, one greedy stage-2 answer each."""
    from .data.formats import zs_cot_stage1

    stage1 = [zs_cot_stage1(ex.question) for ex in examples]
    chars = sum(len(p) for p in stage1) * n + len(stage1) * n * (4 * m.rationale_max_tokens + 30)
    # Stage 2 asks once per distinct rationale: two identical samples share one answer request, so with
    # several samples at T > 0 the count is an upper bound.
    return [PlannedStage("rationale", m.rationale_max_tokens, stage1, n, temperature, note=note),
            PlannedStage("answer", m.answer_max_tokens, per_previous=True, prompt_chars=chars,
                         upper_bound=n > 1 and temperature > 0,
                         note=f"{note + ': ' if note else ''}one greedy answer per distinct rationale")]


def sgft_stages(cfg, splits) -> list[PlannedStage]:
    """methods/sgft.py: SG of n_sg training questions (one retry each at most; none with train_guide=false), the
    teacher's SG of the test questions (the reference teacher's upper-bound row), then the rationales of each
    CoT fine-tuning the run trains (the baselines and the ablation's solver: data/sg.py cot_ft_runs)."""
    from .data.sg import cot_ft_runs, prompt_examples, sample_questions
    from .guidance import sg_prompt

    s = cfg.method
    ordered = sample_questions(splits.train, None, s.sample_seed)
    n_sg = len(ordered) if s.n_sg is None else s.n_sg
    shots = prompt_examples(s, ordered[n_sg:] or ordered)

    def guidance(questions, stage: str) -> list[PlannedStage]:
        out = [PlannedStage(stage, s.sg_max_tokens, [sg_prompt(q.question, s.prompt, shots) for q in questions])]
        if s.retry:
            retry = [sg_prompt(q.question, s.prompt, shots, retry=True) for q in questions]
            out.append(PlannedStage(f"{stage}_retry", s.sg_max_tokens, requests=len(retry), upper_bound=True,
                                    prompt_chars=sum(map(len, retry)), note="only SGs the filter rejects"))
        return out

    stages = guidance(ordered[:n_sg], "guidance") if s.train_guide else []
    cap = cfg.trainer.max_eval_examples
    if s.teacher_sg_on_test or (s.teacher_sg_on_test is None and cfg.teacher.name == "reference"):
        stages += guidance(splits.test if cap is None else splits.test[:cap], "guidance_test")
    for system, n_q, per_q in cot_ft_runs(s, n_sg, len(ordered)):
        stages += zs_cot_stages(s, ordered[:n_q], per_q, 0.0 if per_q == 1 else s.diverse_temperature, note=system)
    return stages


def fdd_stages(f, train) -> list[PlannedStage]:
    """methods/fdd.py: round 0 (one greedy rationale or program per training problem), then per round at most
    ``max_new_per_round`` new problems (default |train|), each labelled with at most ``label_samples``
    teacher solutions."""
    from .data.formats import pot_prompt
    from .teachers.reference_fdd import fill

    pot, cot = f.rationale in ("pot", "mixed"), f.rationale in ("cot", "mixed")  # mixed: a program and a CoT each
    stages = []
    if pot:
        stages.append(PlannedStage("program", f.program_max_tokens, [pot_prompt(ex.question) for ex in train]))
    if cot:
        stages += zs_cot_stages(f, train, 1, 0.0, note="round 0" + (" (mixed)" if pot else ""))
    per_round = f.max_new_per_round if f.max_new_per_round is not None else len(train)
    new, q = f.rounds * per_round, sum(len(ex.question) for ex in train) / max(1, len(train))
    prompt = len(fill(f.easy_prompt if f.feedback else f.hard_prompt, "")) + q  # the control asks 'similar' only
    stages.append(PlannedStage("variant", f.variant_max_tokens, requests=new, upper_bound=True,
                               temperature=f.variant_temperature, prompt_chars=int(new * prompt),
                               note=f"{f.rounds} rounds x <= {per_round} new problems"))
    labels = new * f.label_samples
    if pot:
        stages.append(PlannedStage("label_program", f.program_max_tokens, requests=labels, upper_bound=True,
                                   temperature=f.label_temperature, prompt_chars=int(labels * (q + 80)),
                                   note=f"<= {f.label_samples} solutions per new problem"))
    if cot:
        for st, tokens, chars in (("rationale", f.rationale_max_tokens, q + 40),
                                  ("answer", f.answer_max_tokens, q + 4 * f.rationale_max_tokens + 70)):
            stages.append(PlannedStage(st, tokens, requests=labels, upper_bound=True, temperature=f.label_temperature,
                                       prompt_chars=int(labels * chars),
                                       note=f"labels: <= {f.label_samples} solutions per new problem"))
    return stages


def count_requests(stages: list[PlannedStage], identity: str | None, cache_dir) -> None:
    """Set each stage's ``requests`` to the completions it will ask for that no earlier stage asked for
    (the engine asks the teacher once per cache key) and ``cached`` to those the shared cache already holds."""
    from .teachers.base import Request, SamplingParams, request_key

    seen: set[str] = set()
    previous = None
    for st in stages:
        if st.prompts is not None:
            params = SamplingParams(temperature=st.temperature, max_tokens=st.max_tokens)
            keys = [request_key(identity or "?", Request(p, params, k)) for p in st.prompts for k in range(st.samples)]
            fresh = list(dict.fromkeys(k for k in keys if k not in seen))
            seen.update(fresh)
            st.requests = len(fresh)
            st.cached = cached_count(cache_dir, fresh) if cache_dir is not None else 0
        elif st.per_previous and previous is not None:
            st.requests, st.cached = previous.requests, previous.cached  # a cached rationale's answer is cached
        previous = st


def ids(examples) -> list:
    """Row indices in the benchmark's official order for real benchmarks (the numbers of Fine-tune-CoT's split
    files: ``task:index`` -> index), the generated ids for embedded ones."""
    out = []
    for ex in examples:
        head, _, tail = ex.id.rpartition(":")
        out.append(int(tail) if head and tail.isdigit() and not head.count(":") else ex.id)
    return out


def teacher_identity(cfg, splits, missing: list[str]) -> tuple[str | None, Any]:
    """(the teacher's cache identity, its price) without a request or model weights; what cannot be built
    offline goes to ``missing``."""
    from .methods import get_method
    from .teachers.pricing import lookup_price

    t = cfg.teacher
    price = lookup_price(t.model, t.prices) if t.name == "openai" else None
    try:
        if t.name == "vllm":  # its engine loads the weights when built: the identity is its recipe
            from .teachers.vllm_backend import identity_for

            return identity_for(t), price
        if t.name == "replay":
            for f in t.replay_files:
                from pathlib import Path

                if not Path(f).is_file():
                    missing.append(f"teacher.replay_files: {f} does not exist")
            if missing:
                return None, price
        from .teachers import build_teacher

        kinds = getattr(get_method(cfg.method.name), "reference_kinds", lambda c, s: ())(cfg, splits)
        teacher = build_teacher(t, [*splits.train, *splits.val, *splits.test], kinds=kinds)
        if not getattr(teacher, "cacheable", True):
            return None, price
        return teacher.identity, price
    except Exception as e:  # noqa: BLE001 - a plan lists what it cannot resolve instead of failing
        missing.append(f"teacher: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None, price


def cached_count(cache_dir, keys: list[str]) -> int:
    """How many of ``keys`` the shared teacher cache holds (read-only; a cache that does not exist holds none)."""
    path = teacher_cache_path(cache_dir)
    if not path.is_file() or not keys:
        return 0
    from .teachers.cache import cache_error

    found = 0
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                q = f"SELECT COUNT(*) FROM completions WHERE key IN ({','.join('?' * len(chunk))})"
                found += con.execute(q, chunk).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error as e:
        raise cache_error(path, e, "read") from None
    return found


def estimate_cost(stages: list[PlannedStage], price) -> float:
    """USD for the requests not yet cached: each one's prompt (~4 characters a token) and its max_tokens as
    output (an upper bound: completions often stop earlier)."""
    total = 0.0
    for st in stages:
        if st.prompts is not None:
            per_request = sum(map(len, st.prompts)) / max(1, len(st.prompts))
        else:
            per_request = st.prompt_chars / max(1, st.requests)
        paid = st.requests - st.cached
        total += price.cost(int(paid * per_request / 4), paid * st.max_tokens)
    return round(total, 4)


def print_plan(plan: dict) -> None:
    """The plan as a person reads it: the counts first, the id lists shortened."""
    short = {k: (v if not isinstance(v, list) or len(v) <= 6 else v[:3] + ["..."] + v[-2:] + [f"({len(v)})"])
             for k, v in plan.items()}
    print(json.dumps(short, indent=2, default=str))
