"""FDD: Feedback-Driven Distillation (Zhu et al., arXiv 2411.14698; methods.md section 4).

    0. Initialisation: the teacher pairs every training problem with a rationale -- chain-of-thought
       (Fine-tune-CoT's stage-1 prompt, answer-filtered) or program-of-thought (a program computing
       ``ans``, kept iff its executed ``ans`` equals the gold answer). Train the student on this set.
    for round r = 1..R:
    1. Feedback: the round r-1 student answers the pool's problems greedily (PoT: its program is
       executed in the sandbox); solved = easy, failed = hard.
    2. Expansion: the teacher writes a harder variant of each easy problem and a new problem of similar
       difficulty for each hard one; it then solves each new problem (3 samples at T=0.7, kept iff >= 2
       agree; or the embedded reference solver). Verified problems that are not near-duplicates of a
       test/val question nor duplicates of the pool join it.
    3. Retrain the student on the grown set (from the base student, or continued) and evaluate it.

The paper's body is unavailable (methods.md 4.1: abstract only), so every detail below is our choice
unless methods.md 4.2 fixes it; each is a ``method`` key (config.FDDConfig), listed in experiments/fdd/README.md:

- Rounds: round 0 trains on the initial set, so ``rounds=R`` trains R+1 students and expands R times
  (methods.md: "3 rounds after round 0"). Each round gives result entries (``round`` = r); the headline
  is the last round's.
- Pool: every original training problem (with its gold answer) plus every accepted new problem. An
  original problem whose round-0 rationale failed the filter stays in the pool (it can be hard and
  spawn a similar problem) but yields no training sample.
- A problem expanded again in a later round is asked with the next sample index (same prompt, sample
  k = times asked before, at variant_temperature), so it gets a new variant rather than the cached one.
- The cap on problems expanded per round (max_new_per_round; methods.md: |original train|) picks
  problems uniformly at random (seeded by seed and round) when the pool is larger, and only those get
  feedback: the split matters only for problems that are expanded.
- New problems are labelled in steps: 2 samples, a 3rd only when they disagree -- the same decision as
  "3 samples, keep iff >= 2 agree", with up to a third fewer teacher calls (see ``label``).
- Duplicates are dropped before labelling (no teacher calls spent on them): exact (normalised) repeats
  of the pool or of this round's earlier new problems, and problems sharing >= dedupe_threshold of
  their word 8-grams with a test or val question (methods.md says test; val is added as it is used for
  selection).
- CoT labels: the majority answer of the stage-2 completions (Fine-tune-CoT's zs_cot extraction), the
  rationale of the first sample that reaches it. PoT labels: the executed answer, compared with
  tolerance 1e-4; the first agreeing program is the rationale.
- Scoring: CoT students with Fine-tune-CoT's ``ft_cot_token`` rule (``ftcot``); PoT students by running
  their program in the sandbox and comparing ``ans`` with the gold number within 1e-4 (``fdd_numeric``).
- The tiny student's tokenizer and random init are made once (round 0) and reused each round.

Resume: each round's artifacts live in ``rounds/round_r/`` (paths.RunPaths.round). ``summary.json`` marks a
finished round (skipped on rerun); ``feedback.jsonl`` and ``dataset.jsonl`` mark finished steps inside a
round; the round's training resumes from its own ``checkpoints/last.ckpt``; teacher calls hit the cache.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Sequence

from ..answers import fdd_numeric, format_number, majority, same_answer
from ..benchmarks.embedded import stable_seed
from ..benchmarks.record import Example
from ..data.fdd import Candidate, FddDataset, FddProblem, NgramIndex, expansion_counts, normalize_question
from ..data.formats import pot_prompt
from ..errors import ConfigError
from ..evaluation import EvalSpec, predict
from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..pot import Programs
from ..rationales import correctness_filter, teacher_rationales
from ..run import Entry, RunContext, model_info, seed_everything
from ..teachers import SamplingParams
from ..teachers.base import Request
from ..teachers.reference import UNSURE
from ..teachers.reference_fdd import fdd_kinds, fill, reference_answer, remember

# teacher_rationales() flags each sample against a gold answer; a new problem has none yet, so it gets
# this placeholder (parses as a float, equals nothing) and agreement decides instead.
NO_GOLD = "nan"


@dataclass
class Loop:
    """The fixed parts of one FDD run: the context, the sandbox, the test/val n-gram index."""

    ctx: RunContext
    programs: Programs
    test_index: NgramIndex

    @property
    def f(self):
        return self.ctx.cfg.method

    @property
    def pot(self) -> bool:
        return self.f.rationale == "pot"

    def spec(self) -> EvalSpec:
        """How the student is asked and scored: its template's prompt; executed programs for PoT."""
        cfg = self.ctx.cfg
        return EvalSpec(self.ctx.task, self.f.template, cfg.student.max_new_tokens, cfg.trainer.eval_batch_size,
                        max_input_tokens=cfg.student.max_input_tokens,
                        scorer=self.programs.score if self.pot else None,
                        metric="fdd_numeric" if self.pot else "ftcot")


def check(cfg, splits) -> None:
    """Before anything is written: program-of-thought needs numeric answers."""
    bad = next((x for x in splits.train if x.answer_type != "number"), None)
    if cfg.method.rationale == "pot" and bad is not None:
        raise ConfigError(f"invalid config at `method`: fdd_pot needs numeric answers; {bad.id} of "
                          f"{cfg.benchmark.name} has answer type {bad.answer_type!r}; allowed: method=fdd")


def run(ctx: RunContext) -> None:
    f = ctx.cfg.method
    ctx.teacher(ctx.splits.train, kinds=fdd_kinds(f.easy_prompt, f.hard_prompt))
    lp = Loop(ctx, Programs(f.pot_timeout_s, f.pot_memory_mb, f.pot_workers),
              NgramIndex([ex.question for ex in ctx.splits.test + ctx.splits.val], f.dedupe_ngram))
    rounds: list[dict] = []
    student, dataset = None, None
    for r in range(f.rounds + 1):
        paths = ctx.paths.round(r)
        if paths.summary.is_file():  # a finished round: skipped by its saved artifacts
            summary = {**read_json(paths.summary), "resumed": True}
            student, dataset = None, None
        else:
            dataset, counts = round_data(lp, r, dataset, student)  # step 0, or steps 1-2 (feedback, expansion)
            student, summary = round_training(lp, r, dataset, counts)  # step 3 (train, evaluate)
            write_json(paths.summary, summary)  # marks the round finished
        rounds.append(summary)
        if summary.get("resumed"):  # a round trained by this process recorded its entries already
            ctx.add([Entry(**e) for e in summary["entries"]])
        ctx.log_metrics(round_metrics(summary, lp.spec().metric), step=r)
    last = rounds[-1]
    ctx.metrics = last["metrics"]
    ctx.data.update(n_train_questions=len(ctx.splits.train), n_train_samples=last["train_samples"])
    ctx.details.update(metric=lp.spec().metric, rationale=f.rationale, rounds=rounds)


# --------------------------------------------------------------------------------------------------------
# Step 0: the initial distillation set


def initial_dataset(lp: Loop) -> tuple[FddDataset, dict, list[dict]]:
    """Round 0: one greedy teacher rationale per training problem, kept iff its answer is the gold."""
    ctx, train = lp.ctx, lp.ctx.splits.train
    if lp.pot:
        outs = ctx.generate([pot_prompt(ex.question) for ex in train],
                            SamplingParams(temperature=0.0, max_tokens=lp.f.program_max_tokens), stage="program")
        executed = lp.programs.run([cs[0].text for cs in outs])
        rows = [{"example_id": ex.id, "question": ex.question, "answer": ex.answer, "completion": cs[0].text,
                 "program": prog, "ok": res.ok, "executed": res.answer, "error": res.error,
                 "correct": res.ok and fdd_numeric(res.answer, ex.answer)}
                for ex, cs, (prog, res) in zip(train, outs, executed)]
        rationale = {r["example_id"]: r["program"] for r in rows if r["correct"]}
        report = {"total": len(rows), "kept": len(rationale), "rejected_wrong_answer": len(rows) - len(rationale),
                  "rejected_not_executed": sum(not r["ok"] for r in rows)}
    else:
        samples = teacher_rationales(ctx, train)
        kept, report = correctness_filter(samples)
        rationale = {x.example_id: x.reasoning_completion for x in kept}
        rows = [asdict(x) for x in samples]
    dataset = FddDataset(FddProblem(ex.id, ex.question, ex.answer, "train", 0, rationale=rationale.get(ex.id))
                         for ex in train)
    return dataset, {"round": 0, "filter": report}, rows


# --------------------------------------------------------------------------------------------------------
# Step 1: feedback -- which pool problems does the student solve?


def select_for_expansion(lp: Loop, r: int, dataset: FddDataset) -> list[FddProblem]:
    """The pool problems round r expands: all of them, or a seeded uniform sample of max_new_per_round
    (default |original train|) when the pool is larger. Our choice: only these get feedback, since the
    split matters only for the problems that are expanded (with no cap this is the whole pool)."""
    problems = list(dataset)
    cap = lp.f.max_new_per_round if lp.f.max_new_per_round is not None else len(lp.ctx.splits.train)
    if len(problems) <= cap:
        return problems
    chosen = sorted(random.Random(stable_seed("fdd-expand", lp.ctx.cfg.seed, r)).sample(range(len(problems)), cap))
    return [problems[i] for i in chosen]


def student_feedback(lp: Loop, student, problems: Sequence[FddProblem]) -> list[dict]:
    """One greedy answer per problem, scored as the student is evaluated; ``correct`` = easy."""
    return predict(student, problems, lp.spec(), split="pool", progress=lp.ctx.progress)


# --------------------------------------------------------------------------------------------------------
# Step 2: expansion -- variants from the teacher, labelled and verified


def _variant_request(lp: Loop, prompt: str, k: int) -> Request:
    params = SamplingParams(temperature=lp.f.variant_temperature, max_tokens=lp.f.variant_max_tokens)
    return Request(prompt, params, k)


def expand(lp: Loop, r: int, dataset: FddDataset,
           feedback: list[dict]) -> tuple[FddDataset, dict, list[Candidate]]:
    """Round r's new problems, one per problem of ``feedback``: a harder variant of an easy (solved) one,
    a similar problem for a hard one. Returns the grown pool (a new version), the counts, every candidate."""
    f, ctx = lp.f, lp.ctx
    grown = dataset.copy()
    by_id = {p.id: p for p in grown}
    cands = []
    for j, row in enumerate(feedback):
        parent = by_id[row["id"]]
        kind = "harder" if row["correct"] else "similar"
        asked = parent.meta.setdefault("asked", {})
        k = asked.get(kind, 0)  # a new sample of the same prompt when this problem was expanded before
        asked[kind] = k + 1
        cands.append(Candidate(f"fdd:r{r}:{j}", parent.id, kind,
                               fill(f.easy_prompt if kind == "harder" else f.hard_prompt, parent.question), k))

    # The teacher writes the new problems (sample k of each prompt; samples < k are cached from before).
    teacher = ctx.teacher()
    remember(teacher, [_variant_request(lp, p.meta["request"]["prompt"], p.meta["request"]["sample_index"])
                       for p in dataset if p.origin != "train" and "request" in p.meta])  # a resumed run
    for k in sorted({c.sample_index for c in cands}):
        group = [c for c in cands if c.sample_index == k]
        outs = ctx.generate([c.prompt for c in group], SamplingParams(
            temperature=f.variant_temperature, max_tokens=f.variant_max_tokens, n=k + 1), stage="variant")
        for c, cs in zip(group, outs):
            c.question = cs[k].text.strip()
    remember(teacher, [_variant_request(lp, c.prompt, c.sample_index) for c in cands])

    # De-duplicate before labelling, so no teacher call is spent on a dropped problem.
    seen: set[str] = set()
    for c in cands:
        key = normalize_question(c.question)
        if not c.question or c.question == UNSURE.strip():
            c.status = "unusable"
        elif grown.contains_question(c.question) or key in seen:
            c.status = "duplicate_pool"
        elif lp.test_index.overlap(c.question) >= f.dedupe_threshold:
            c.status = "duplicate_eval"
        seen.add(key)
    label(lp, [c for c in cands if c.status == "pending"])
    grown.add(FddProblem(c.id, c.question, c.answer, c.kind, r, c.parent_id, c.rationale,
                         meta={"request": {"prompt": c.prompt, "sample_index": c.sample_index}, "votes": c.votes})
              for c in cands if c.status == "kept")
    return grown, expansion_counts(r, dataset, feedback, cands), cands


def label(lp: Loop, cands: list[Candidate]) -> None:
    """The teacher solves each new problem; verified ones are kept (status, answer, rationale set).

    agreement: samples at label_temperature are drawn in steps -- label_min_agree at first, then one more
    at a time for the undecided, up to label_samples -- and the first answer to reach label_min_agree
    votes is the label (with 3 samples and 2 votes this is exactly "keep iff >= 2 of 3 agree", and a
    problem whose first two samples agree costs 2 teacher calls, not 3). reference: samples are drawn one
    at a time until one reaches the embedded solver's answer.
    """
    f = lp.f
    reference = f.verify == "reference"
    gold = {c.id: reference_answer(lp.ctx.teacher(), c.question) for c in cands} if reference else {}
    pending = [c for c in cands if not reference or gold[c.id] is not None]  # None: the solver never saw it
    same = (lambda a, b: abs(float(a) - float(b)) <= 1e-4) if lp.pot else \
        (lambda a, b: same_answer(lp.ctx.task, a, b))
    drawn = 0
    while pending and drawn < f.label_samples:
        n = min(f.label_samples, drawn + 1 if drawn or reference else f.label_min_agree)
        for c, samples in zip(pending, solve(lp, pending, n, gold)):
            c.votes = [a for a, _ in samples]
            if reference:
                hit = next((x for x in samples if x[0] is not None and
                            (fdd_numeric(x[0], gold[c.id]) if lp.pot else same(x[0], gold[c.id]))), None)
                if hit is not None:
                    c.status, c.answer, c.rationale = "kept", gold[c.id], hit[1]
            elif (best := majority(c.votes, same)) is not None and len(best[1]) >= f.label_min_agree:
                c.status, c.answer = "kept", format_number(float(best[0])) if lp.pot else best[0]
                c.rationale = samples[best[1][0]][1]
        drawn = n
        left = f.label_samples - drawn
        pending = [c for c in pending if c.status == "pending" and (
            reference or (len((majority(c.votes, same) or (None, []))[1]) + left >= f.label_min_agree))]
    for c in cands:
        if c.status == "pending":
            c.status = "unverified"


def solve(lp: Loop, cands: Sequence[Candidate], n: int, gold: dict) -> list[list[tuple[Any, str]]]:
    """Samples 0..n-1 of the teacher's solution of each problem: [(answer or None, rationale)].
    Samples drawn in an earlier step come from the cache."""
    f, ctx = lp.f, lp.ctx
    if lp.pot:
        outs = ctx.generate([pot_prompt(c.question) for c in cands], SamplingParams(
            temperature=f.label_temperature, max_tokens=f.program_max_tokens, n=n), stage="label_program")
        executed = lp.programs.run([x.text for cs in outs for x in cs])
        return [[(res.answer if res.ok else None, prog) for prog, res in executed[j * n:(j + 1) * n]]
                for j in range(len(cands))]
    exs = [Example(c.id, c.question, gold.get(c.id) or NO_GOLD, "text") for c in cands]
    samples = teacher_rationales(ctx, exs, n_samples=n, temperature=f.label_temperature)
    return [[(x.extracted, x.reasoning_completion) for x in samples[j * n:(j + 1) * n]] for j in range(len(cands))]


# --------------------------------------------------------------------------------------------------------
# Step 3: train and evaluate a round's student


def base_student(lp: Loop, corpus: list[str]):
    """The base student: the tiny student's tokenizer + init are made once (round 0) and reused."""
    from ..students.build import TOKENIZER_DIR, build_student

    work = lp.ctx.paths.student_dir
    have_tokenizer = (work / TOKENIZER_DIR / "tokenizer.json").is_file()
    return build_student(lp.ctx.cfg.student, corpus=None if have_tokenizer else corpus, work_dir=work)


def round_data(lp: Loop, r: int, dataset: FddDataset | None, student) -> tuple[FddDataset, dict]:
    """Round r's dataset version: the initial set (r = 0) or the previous version grown by feedback.
    ``dataset`` / ``student``: round r-1's, when this process has them (else read from round r-1's files)."""
    paths = lp.ctx.paths.round(r)
    if paths.dataset.is_file():  # the data step finished before a kill
        return FddDataset.load(paths.dataset), read_json(paths.counts)
    t0, before = time.time(), lp.ctx.accounting.total().teacher_calls
    seconds: dict[str, float] = {}
    if r == 0:
        dataset, counts, rows = initial_dataset(lp)
        write_jsonl(paths.teacher_samples, rows)
    else:
        prev = lp.ctx.paths.round(r - 1)
        dataset = dataset if dataset is not None else FddDataset.load(prev.dataset)
        if paths.feedback.is_file():
            feedback = read_jsonl(paths.feedback)
        else:
            if student is None:  # resumed: rebuild the previous round's student
                student = base_student(lp, [])
                student.load_trainable(prev.weights)
            feedback = student_feedback(lp, student, select_for_expansion(lp, r, dataset))
            write_jsonl(paths.feedback, feedback)
            seconds["feedback"] = round(time.time() - t0, 2)
        t1 = time.time()
        dataset, counts, cands = expand(lp, r, dataset, feedback)
        seconds["expansion"] = round(time.time() - t1, 2)
        write_jsonl(paths.generated, (asdict(c) for c in cands))
    counts.update(dataset=dataset.counts(), teacher_calls=lp.ctx.accounting.total().teacher_calls - before,
                  seconds=dict(seconds, data_step=round(time.time() - t0, 2)))
    write_json(paths.counts, counts)
    dataset.save(paths.dataset)  # last: its presence marks the data step as done
    return dataset, counts


def round_training(lp: Loop, r: int, dataset: FddDataset, counts: dict) -> tuple[Any, dict]:
    """Train round r's student on its dataset version (from the base or the previous round), select it on a
    dev split of the round's data (methods.md 4.2: 5%, never test), test it once, save the selected weights
    (the next round's feedback model), and summarise the round."""
    from ..training import train_and_evaluate

    ctx, cfg, f = lp.ctx, lp.ctx.cfg, lp.f
    paths = ctx.paths.round(r)
    pairs, dev = dev_split(dataset.pairs(f.template, cfg.student.family.value), dataset, f.dev_fraction,
                           cfg.seed + r)
    write_jsonl(paths.train_data, (p.to_dict() for p in pairs))
    ctx.require_samples(pairs, counts.get("filter", {"total": len(dataset)}), f"round {r}'s data")
    seed_everything(cfg.seed + r)
    student = base_student(lp, [p.input + p.label for p in pairs])
    if f.retrain == "continue" and r > 0:
        student.load_trainable(ctx.paths.round(r - 1).weights)
    tc = replace(cfg.trainer, max_epochs=f.epochs_per_round or cfg.trainer.max_epochs,
                 eval_every_n_epochs=f.eval_every_n_epochs or cfg.trainer.eval_every_n_epochs)
    stage = train_and_evaluate(ctx, student, pairs, paths, lp.spec(), cfg=replace(cfg, trainer=tc),
                               protocol="clean", select_on=dev, stage=f"round_{r}", round=r)
    student.save_trainable(paths.weights)
    outcome = stage.pop("outcome")
    ctx.speed = {**outcome.speed(), "train_time_s": round(outcome.train_time_s, 2)}
    ctx.models["student"] = model_info(student)
    return student, {"round": r, "dataset_problems": len(dataset), "train_samples": len(pairs), "counts": counts,
                     "dev_problems": len(dev), **stage, "entries": [e.to_dict() for e in stage["entries"]],
                     "train_time_s": round(outcome.train_time_s, 2),
                     "resumed_from_checkpoint": outcome.resumed_from_checkpoint}


def dev_split(pairs: list, dataset: FddDataset, fraction: float, seed: int) -> tuple[list, list[FddProblem]]:
    """(training pairs, dev problems): a seeded ``fraction`` (at least one) of the round's problems with a
    rationale, held out to select the round's model."""
    ids = sorted({p.example_id for p in pairs})
    n = max(1, round(len(ids) * fraction)) if len(ids) > 1 else 0
    dev = set(random.Random(stable_seed("fdd-dev", seed)).sample(ids, n))
    return [p for p in pairs if p.example_id not in dev], [p for p in dataset.with_rationale() if p.id in dev]


def round_metrics(summary: dict, metric: str) -> dict:
    """One row per round in the run's metrics.csv / W&B: sizes, feedback counts, test and val accuracy."""
    c, m = summary["counts"], summary["metrics"]
    row = {"round": summary["round"], "dataset_problems": summary["dataset_problems"],
           "train_samples": summary["train_samples"],
           f"round_test_accuracy_{metric}": m.get("accuracy"),
           f"round_dev_accuracy_{metric}": (m.get("dev_selected") or {}).get("val_accuracy"),
           **{k: c.get(k) for k in ("easy", "hard", "requested", "generated", "kept", "rejected")}}
    return {k: v for k, v in row.items() if v is not None}
