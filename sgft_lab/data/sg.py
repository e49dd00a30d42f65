"""SGFT's datasets (methods.md 3): the SG pairs the guide is fine-tuned on, which training questions get SG
and CoT (and how many rationales each), the few-shot SG examples, and, on the embedded tier, the tiny response
model's pre-training set and its pre-training (our choice, a departure: experiments/sgft/README.md).

The training sets are lists of :class:`~sgft_lab.data.formats.Pair`, served by the common ``CoTDataModule`` (prompt
masked, target + EOS as the label).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..benchmarks.record import Example, Splits
from ..errors import ConfigError
from ..guidance import check_sg, format_steps, response_prompt, sg_prompt
from .formats import Pair, student_input, zs_cot_stage1, zs_cot_stage2


def guidance_pairs(records: Sequence[dict], family: str, prompt: str = "IV") -> list[Pair]:
    """The SG dataset (question -> guidance) the guide is fine-tuned on; the loss covers the SG tokens only
    (the instruction and question are masked, methods.md 3.8). Dropped questions make no pair."""
    sp = " " if family == "decoder" else ""  # decoder labels start with one space (Fine-tune-CoT convention)
    return [Pair(sg_prompt(r["question"], prompt), sp + r["guidance"], r["example_id"], "teacher_sg")
            for r in records if r.get("guidance")]


def sample_questions(train: Sequence[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded shuffle of train: its first ``n`` are the SG questions, a first k*n the CoT-FT ones."""
    order = list(train)
    random.Random(seed).shuffle(order)
    return order if n is None else order[:n]


def prompt_examples(s, pool: Sequence[Example]) -> list[tuple[str, str]]:
    """(question, SG) examples for the few-shot variants: from config, else reference SG of ``pool``."""
    if s.prompt not in ("III", "V"):
        return []
    if s.prompt_examples:
        return [(e["question"], e["guidance"]) for e in s.prompt_examples]
    from ..teachers.reference_sg import reference_guidance

    shots = []
    for ex in pool:
        steps = reference_guidance(ex, s.filter.max_steps)
        if steps and not check_sg(format_steps(steps), s.filter)[1]:
            shots.append((ex.question, format_steps(steps)))
        if len(shots) == s.n_prompt_examples:
            return shots
    raise ConfigError(f"invalid config at `method.prompt_examples`: SG prompt {s.prompt} needs "
                      f"{s.n_prompt_examples} examples; allowed: [{{question: ..., guidance: ...}}] (the "
                      f"benchmark's unused training questions gave {len(shots)} reference SGs)")


def cot_plan(n_samples: int, n_train: int) -> tuple[int, int]:
    """(questions, rationales per question) for ``n_samples`` teacher CoT samples: one per question while
    questions last, then D = ceil(n / |train|) per question at T > 0 (methods.md 3.8: the ~30k CoT baseline
    is 4 samples per GSM8K train question)."""
    questions = min(n_samples, n_train)
    return questions, -(-n_samples // questions)


def cot_ft_runs(s, n_sg: int, n_train: int) -> list[tuple[str, int, int]]:
    """The CoT fine-tunings a run trains, as (system, questions, rationales per question), in order: the
    ``cot_ft_x{k}`` baselines and methods.md 3.8's per-question ``cot_ft``; with ``solver=cot_ft`` the solver's
    comes first (``cot_ft`` when set, else the first scale's; trained even with ``cot_ft=false``)."""
    scales = list(s.cot_ft_scales) or ([1] if s.solver == "cot_ft" and not s.cot_ft_per_question else [])
    runs = [(f"cot_ft_x{k}", *cot_plan(n_sg * k, n_train)) for k in scales]
    if s.cot_ft_per_question:
        runs.append(("cot_ft", n_train, s.cot_ft_per_question))
    if s.solver != "cot_ft":
        return runs if s.cot_ft else []
    solver = runs.pop(-1 if s.cot_ft_per_question else 0)
    return [solver, *(runs if s.cot_ft else [])]


def response_pool(benchmark, splits: Splits, rp) -> list[Example]:
    """Embedded problems for the response model's pre-training, none of them a benchmark question."""
    from ..benchmarks.embedded import generate_examples

    b = benchmark  # embedded (methods/sgft.py check)
    difficulties = rp.difficulties or sorted({max(1, b.difficulty - 1), b.difficulty, b.difficulty + 1})
    taken = {ex.question for ex in (*splits.train, *splits.val, *splits.test)}
    pool: list[Example] = []
    for j, d in enumerate(difficulties):
        want = rp.n_questions // len(difficulties) + (j < rp.n_questions % len(difficulties))
        drawn = generate_examples(b.generator, want + len(taken) // 4 + 20, d, rp.pool_seed + b.data_seed,
                                  id_prefix=f"sgft_response_pool:d{d}:")
        pool += [ex for ex in drawn if ex.question not in taken][:want]
    return pool


def response_pretraining_pairs(pool: Sequence[Example], rp, template: str, family: str, seed: int) -> list[Pair]:
    """Each pool question in one format, drawn with ``rp.formats`` weights: guided (reference SG -> one
    worked line per SG step + 'The answer is X.'), zero_shot (-> the answer) or zero_shot_cot (stage 1 -> the
    same work without the step labels, stage 2 -> the answer). Every baseline prompt is thus in the model's
    repertoire, and guided and unguided answers do the same work (teachers/reference_sg.py)."""
    from ..teachers.reference_sg import guided_solution, reference_guidance, worked_solution

    names, weights = zip(*[(k, v) for k, v in rp.formats.items() if v > 0])
    rng = random.Random(f"sgft-response-formats:{seed}")
    pairs = []
    for ex in pool:
        fmt = rng.choices(names, weights)[0]
        if fmt == "guided":
            sg = format_steps(reference_guidance(ex) or [])
            pairs.append(Pair(response_prompt(ex.question, sg, template), guided_solution(ex), ex.id, "guided"))
        elif fmt == "zero_shot":
            pairs.append(Pair(student_input("zs", ex.question, family), f" {ex.answer}", ex.id, "zero_shot"))
        else:
            rationale = worked_solution(ex)
            stage1 = zs_cot_stage1(ex.question.strip())
            pairs.append(Pair(stage1, rationale, ex.id, "zero_shot_cot:1"))
            pairs.append(Pair(zs_cot_stage2(stage1, rationale), f" {ex.answer}.", ex.id, "zero_shot_cot:2"))
    return pairs


RESPONSE_FORMAT_VERSION = "v1"  # bump when the response model's pre-training samples change (keys its cache)


def pretrain_response(ctx) -> Path:
    """Embedded tier (methods/sgft.py step 0): pre-train the tiny response model once per (its config, pool,
    formats, seed) on :func:`response_pretraining_pairs` of :func:`response_pool`; return its dir (holding
    ``tokenizer/`` and ``init_model/``, which build_student loads as the model's starting point)."""
    from ..config import Adapter, to_plain
    from ..io import read_json, write_json, write_jsonl
    from ..paths import RunPaths, response_model_dir
    from ..run import seed_everything
    from ..students.build import build_student
    from ..teachers.reference_sg import SG_KIND_NAME
    from ..training import fit

    cfg, s = ctx.cfg, ctx.cfg.method
    rc = replace(s.response, adapter=Adapter.none)  # pre-training is full fine-tuning
    rp, b = s.response_pretrain, cfg.benchmark
    identity = {"response": to_plain(rc), "pretrain": to_plain(rp), "seed": cfg.seed,
                "template": s.response_prompt,
                "benchmark": [b.name, b.generator, b.difficulty, b.data_seed, b.n_train, b.n_val, b.n_test],
                "sg": SG_KIND_NAME, "version": RESPONSE_FORMAT_VERSION}
    work = response_model_dir(cfg.paths.cache_dir, identity)
    done = RunPaths(work).summary
    if done.is_file():
        ctx.details["response"] = {**read_json(done), "reused": True}
        return work
    t0 = time.time()
    pool = response_pool(b, ctx.splits, rp)
    pairs = response_pretraining_pairs(pool, rp, s.response_prompt, rc.family.value, cfg.seed)
    write_json(work / "identity.json", identity)
    write_jsonl(RunPaths(work).train_data, (p.to_dict() for p in pairs))
    seed_everything(cfg.seed)
    student = build_student(rc, corpus=[p.input + p.label for p in pairs], work_dir=work)
    tcfg = replace(cfg.trainer, max_epochs=rp.max_epochs, batch_size=rp.batch_size, lr=rp.lr)
    fit(replace(cfg, trainer=tcfg, student=rc), student, pairs, {}, None, RunPaths(work / "train"))
    student.model.save_pretrained(work / "init_model")  # build_student loads it as this model's start
    info = {"dir": str(work), "pool_questions": len(pool), "samples": len(pairs),
            "difficulties": sorted({ex.meta["difficulty"] for ex in pool}),
            "format_questions": {f: len({p.example_id for p in pairs if p.source.split(":")[0] == f})
                                 for f in rp.formats},
            "epochs": rp.max_epochs, "seconds": round(time.time() - t0, 2)}
    write_json(done, info)
    ctx.details["response"] = {**info, "reused": False}
    return work
