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


def response_pool(benchmark, splits: Splits, rp, generator: str | None = None,
                  params: dict | None = None) -> list[Example]:
    """Embedded problems for the response model's pre-training, none of them a benchmark question: drawn from
    ``generator`` (None: the benchmark's) with its number knobs ``params`` (None: the generator's defaults).

    Another generator tells problems in other words: then no benchmark problem may be retold either (same
    steps, same numbers; :func:`problem_skeleton`), and more are drawn to make up for the ones left out. At
    difficulty 1 that rule would leave nothing (the benchmark's questions cover the ~150 one-operation
    skeletons within its bounds), so there the pool is instead *symmetric* (:func:`one_step_pool`): for every
    (start, number) in it, every one-operation problem the generator can make of those numbers (add, subtract,
    divide) is in it, so it teaches the arithmetic but not which operation a benchmark wording means."""
    from ..benchmarks.embedded import generate_examples

    b = benchmark  # embedded (methods/sgft.py check)
    difficulties = rp.difficulties or sorted({max(1, b.difficulty - 1), b.difficulty, b.difficulty + 1})
    bench = (*splits.train, *splits.val, *splits.test)
    taken = {ex.question for ex in bench}
    retold = {problem_skeleton(ex) for ex in bench} if generator not in (None, b.generator) else set()
    pool: list[Example] = []
    for j, d in enumerate(difficulties):
        want = rp.n_questions // len(difficulties) + (j < rp.n_questions % len(difficulties))
        extra = len(taken) // 4 + 20 if not retold else 2 * want + len(taken)
        drawn = generate_examples(generator or b.generator, want + extra, d, rp.pool_seed + b.data_seed,
                                  id_prefix=f"sgft_response_pool:d{d}:", params=params or None)
        if retold and d == 1:
            pool += one_step_pool([ex for ex in drawn if ex.question not in taken], want, params or {})
        else:
            pool += [ex for ex in drawn if ex.question not in taken and problem_skeleton(ex) not in retold][:want]
    return pool


def one_step_kinds(start: int, n: int, params: dict) -> set[str]:
    """The one-operation steps the arithmetic generator can draw for start value ``start`` and number ``n``
    within its bounds (benchmarks/embedded.py _fill_plan: values stay in 2..max_value, counts 2..hi, hi >= 3;
    a share divides into 2..6 parts of >= 2)."""
    from ..benchmarks.embedded import MAX_OPERAND, MAX_VALUE

    max_operand, max_value = params.get("max_operand", MAX_OPERAND), params.get("max_value", MAX_VALUE)
    kinds = set()
    for kind, hi in (("add", min(max_operand, max_value - start)), ("sub", min(max_operand, start - 2))):
        if hi >= 3 and 2 <= n <= hi:
            kinds.add(kind)
    if 2 <= n <= 6 and start % n == 0 and start // n >= 2:
        kinds.add("share")
    return kinds


def one_step_key(ex: Example) -> tuple:
    """A one-operation problem's numbers: (start, number) for start + add / sub / share; the start_groups
    problem (g groups of m, no operation to choose) is its own group."""
    first, *rest = problem_skeleton(ex)
    return ("start_groups", *first[2]) if not rest else (first[1], rest[0][2][1])


def one_step_pool(drawn: Sequence[Example], want: int, params: dict) -> list[Example]:
    """Up to ``want`` of ``drawn`` one-operation problems forming a symmetric pool: whole groups of
    :func:`one_step_key` only, each with every kind of :func:`one_step_kinds` (the first drawn problem of
    each), first, in order of appearance; then more problems of those groups (other wordings) in draw order."""
    groups: dict[tuple, dict[str, Example]] = {}
    for ex in drawn:
        groups.setdefault(one_step_key(ex), {}).setdefault(problem_skeleton(ex)[-1][0], ex)
    complete = {k for k, g in groups.items()
                if k[0] == "start_groups" or set(g) == one_step_kinds(k[0], k[1], params)}
    pool: list[Example] = []
    for k, g in groups.items():
        if k in complete and len(pool) + len(g) <= want:
            pool += g.values()
    chosen = {ex.id for ex in pool}
    done = {one_step_key(ex) for ex in pool}
    pool += [ex for ex in drawn if ex.id not in chosen and one_step_key(ex) in done][:want - len(pool)]
    return pool


def problem_skeleton(ex: Example) -> tuple:
    """An embedded problem without its wording: each step's kind and numbers (arithmetic traces)."""
    return tuple((s["kind"], s.get("value"), tuple(s.get("args") or ())) for s in ex.trace or ())


def undirected_question(ex: Example) -> str:
    """An arithmetic-traced problem retold so that no add / sub event says its direction ("Then the number of
    apples changes by 4."): only a guidance can say whether to add or subtract. The other sentences (start,
    groups, share) and the question keep their meaning; the numbers keep their order."""
    from ..benchmarks.embedded import _PRONOUNS, _cap

    trace = list(ex.trace or [])
    start = trace[0]
    he = _PRONOUNS[start["pronoun"]][0]
    obj = start["object"]
    if start["kind"] == "start":
        sentences = [f"{start['name']} has {start['value']} {obj}."]
    else:
        g, m = start["args"]
        sentences = [(f"{start['name']} has {g} {start['containers']} with {m} {obj} in each "
                      f"{start['container']}.")]
    for step in trace[1:]:
        if step["kind"] in ("add", "sub"):
            sentences.append(f"Then the number of {obj} changes by {step['args'][1]}.")
        elif step["kind"] in ("groups", "share"):
            sentences.append(f"Then {he} {step['present']}." if len(sentences) > 1 else
                             f"{_cap(he)} {step['present']}.")
    return " ".join([*sentences, ex.question[ex.question.rindex("How many"):]])


def response_pretraining_pairs(pool: Sequence[Example], rp, template: str, family: str, seed: int,
                               guided_wording: str = "same") -> list[Pair]:
    """Each pool question in one format, drawn with ``rp.formats`` weights: guided (reference SG -> one
    worked line per SG step + 'The answer is X.'), zero_shot (-> the answer) or zero_shot_cot (stage 1 -> the
    same work without the step labels, stage 2 -> the answer). Every baseline prompt is thus in the model's
    repertoire, and guided and unguided answers do the same work (teachers/reference_sg.py).
    ``guided_wording="undirected"``: the guided samples' questions are :func:`undirected_question`, so the
    model learns to take each operation from the guidance (method.response_guided_wording)."""
    from ..teachers.reference_sg import guided_solution, reference_guidance, worked_solution

    names, weights = zip(*[(k, v) for k, v in rp.formats.items() if v > 0])
    rng = random.Random(f"sgft-response-formats:{seed}")
    pairs = []
    for ex in pool:
        fmt = rng.choices(names, weights)[0]
        if fmt == "guided":
            sg = format_steps(reference_guidance(ex) or [])
            question = undirected_question(ex) if guided_wording == "undirected" else ex.question
            pairs.append(Pair(response_prompt(question, sg, template), guided_solution(ex), ex.id, "guided"))
        elif fmt == "zero_shot":
            pairs.append(Pair(student_input("zs", ex.question, family), f" {ex.answer}", ex.id, "zero_shot"))
        else:
            rationale = worked_solution(ex)
            stage1 = zs_cot_stage1(ex.question.strip())
            pairs.append(Pair(stage1, rationale, ex.id, "zero_shot_cot:1"))
            pairs.append(Pair(zs_cot_stage2(stage1, rationale), f" {ex.answer}.", ex.id, "zero_shot_cot:2"))
    return pairs


RESPONSE_FORMAT_VERSION = "v1"  # bump when the response model's pre-training samples change (keys its cache)


def pretrain_response(ctx, response=None, seed: int | None = None, key: str = "response",
                      wait: bool = True) -> Path | None:
    """Embedded tier (methods/sgft.py step 0): pre-train the tiny response model once per (its config, pool,
    formats, seed) on :func:`response_pretraining_pairs` of :func:`response_pool`; return its dir (holding
    ``tokenizer/`` and ``init_model/``, which build_student loads as the model's starting point).
    ``response`` / ``seed``: another response model (default: method.response, the run's seed); its record
    goes to ``ctx.details[key]``. Concurrent runs (a joblib sweep over seeds with a fixed
    method.response_seed) share one: a lock file lets one pre-train it while the others wait, or, with
    ``wait=False``, return None at once (the caller pre-trains another model meanwhile)."""
    from filelock import FileLock, Timeout

    from ..config import Adapter, to_plain
    from ..io import read_json
    from ..paths import RunPaths, response_model_dir
    from ..teachers.reference_sg import SG_KIND_NAME

    cfg, s = ctx.cfg, ctx.cfg.method
    rc = replace(response or s.response, adapter=Adapter.none)  # pre-training is full fine-tuning
    rp, b = s.response_pretrain, cfg.benchmark
    seed = (cfg.seed if s.response_seed is None else s.response_seed) if seed is None else seed
    identity = {"response": to_plain(rc), "pretrain": to_plain(rp), "seed": seed,
                "template": s.response_prompt,
                "benchmark": [b.name, b.generator, b.difficulty, b.data_seed, b.n_train, b.n_val, b.n_test],
                "sg": SG_KIND_NAME, "version": RESPONSE_FORMAT_VERSION}
    if s.response_pool_generator or s.response_pool_params:  # (absent otherwise: earlier caches stay valid)
        identity["pool"] = [s.response_pool_generator, dict(sorted(s.response_pool_params.items()))]
        if s.response_pool_generator not in (None, b.generator) and 1 in (rp.difficulties or [b.difficulty - 1,
                                                                                               b.difficulty]):
            identity["pool"].append("one_step_symmetric")  # response_pool's difficulty-1 rule (a new pool)
    if s.response_guided_wording != "same":
        identity["guided_wording"] = s.response_guided_wording
    work = response_model_dir(cfg.paths.cache_dir, identity)
    done = RunPaths(work).summary
    if done.is_file():
        ctx.details.setdefault(key, {**read_json(done), "reused": True})  # (set already: this run trained it)
        return work
    work.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work.parent / f"{work.name}.lock"))  # the library runlock.py uses too
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        return None
    try:
        if done.is_file():  # pre-trained by the run that held the lock
            ctx.details.setdefault(key, {**read_json(done), "reused": True})
            return work
        _pretrain(ctx, rc, seed, key, identity, work)
    finally:
        lock.release()
    return work


def _pretrain(ctx, rc, seed: int, key: str, identity: dict, work: Path) -> None:
    from ..io import write_json, write_jsonl
    from ..paths import RunPaths
    from ..run import seed_everything
    from ..students.build import build_student
    from ..training import fit

    cfg, s = ctx.cfg, ctx.cfg.method
    rp, b = s.response_pretrain, cfg.benchmark
    done = RunPaths(work).summary
    t0 = time.time()
    pool = response_pool(b, ctx.splits, rp, s.response_pool_generator, s.response_pool_params)
    pairs = response_pretraining_pairs(pool, rp, s.response_prompt, rc.family.value, seed,
                                       s.response_guided_wording)
    write_json(work / "identity.json", identity)
    write_jsonl(RunPaths(work).train_data, (p.to_dict() for p in pairs))
    seed_everything(seed)
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
    ctx.details[key] = {**info, "reused": False}
