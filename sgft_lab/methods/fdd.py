"""FDD: Feedback-Driven Distillation (Zhu et al., arXiv 2411.14698; methods.md section 4).

    0. Initialisation: the teacher pairs every training problem with a rationale -- chain-of-thought
       (Fine-tune-CoT's stage-1 prompt, answer-filtered) or program-of-thought (a program computing
       ``ans``, kept iff its executed ``ans`` equals the gold answer), or both (rationale=mixed). Train the
       student on this set.
    for round r = 1..R:
    1. Feedback: the round r-1 student answers the pool's problems greedily (PoT: its program is
       executed in the sandbox); solved = easy, failed = hard.
    2. Expansion: the teacher writes a harder variant of each easy problem and a new problem of similar
       difficulty for each hard one; it then solves each new problem (3 samples at T=0.7, kept iff >= 2
       agree; or the embedded reference solver). Verified problems that are not near-duplicates of a
       test/val question nor duplicates of the pool join it (sgft_lab/fdd_expansion.py).
    3. Retrain the student on the grown set (from the base student, or continued) and evaluate it, in
       domain and on the out-of-domain sets (sgft_lab/fdd_evaluation.py).

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
- The no-feedback control (``feedback=false``; methods.md 4.4's "same number of extra samples, no
  feedback"): step 1 is skipped; the same seeded draw of the pool (the same number of problems, chosen
  without the student) each gets the similar-problem (hard) prompt. Its entries are system ``no_feedback``.
- New problems are labelled in steps: 2 samples, a 3rd only when they disagree -- the same decision as
  "3 samples, keep iff >= 2 agree", with up to a third fewer teacher calls (fdd_expansion.label).
- Duplicates are dropped before labelling (no teacher calls spent on them): exact (normalised) repeats
  of the pool or of this round's earlier new problems, and problems sharing >= dedupe_threshold of
  their word 8-grams with a test, val or out-of-domain test question (methods.md says test; val is added
  as it is used for selection, the OOD tests as they are test questions too).
- CoT labels: the majority answer of the stage-2 completions (Fine-tune-CoT's zs_cot extraction), the
  rationale of the first sample that reaches it. PoT labels: the executed answer, compared with
  tolerance 1e-4; the first agreeing program is the rationale. mixed: the PoT label, then a CoT rationale
  that reaches it (fdd_expansion.label_cot).
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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..answers import fdd_numeric
from ..benchmarks.embedded import stable_seed
from ..data.fdd import FddDataset, FddProblem, NgramIndex
from ..data.formats import pot_prompt
from ..errors import ConfigError
from ..evaluation import EvalSpec, predict
from ..fdd_evaluation import OodSet, extra_reads, ood_sets, reads
from ..fdd_expansion import expand
from ..io import read_json, read_jsonl, write_json, write_jsonl
from ..pot import Programs
from ..rationales import correctness_filter, teacher_rationales
from ..run import RunContext, model_info, seed_everything, Entry
from ..teachers import SamplingParams
from ..teachers.reference_fdd import fdd_kinds


@dataclass
class Loop:
    """The fixed parts of one FDD run: the context, the sandbox, the test/val/OOD n-gram index, the OOD sets."""

    ctx: RunContext
    programs: Programs
    test_index: NgramIndex
    ood: list[OodSet] = field(default_factory=list)

    @property
    def f(self):
        return self.ctx.cfg.method

    @property
    def pot(self) -> bool:  # the teacher writes programs (mixed: and CoT rationales)
        return self.f.rationale in ("pot", "mixed")

    @property
    def mixed(self) -> bool:
        return self.f.rationale == "mixed"

    @property
    def system(self) -> str:  # the result entries' system: FDD's student, or the no-feedback control's
        return "student" if self.f.feedback else "no_feedback"

    def reads(self) -> list[tuple[str, EvalSpec]]:
        """(system, spec) of each read of a round's student, the primary first (fdd_evaluation.reads)."""
        return reads(self.ctx, self.programs, self.system)

    def spec(self) -> EvalSpec:
        """The primary read: feedback, dev selection and the headline test number."""
        return self.reads()[0][1]


def check(cfg, splits) -> None:
    """Before anything is written: program-of-thought needs numeric answers; the OOD sets must load."""
    bad = next((x for x in splits.train if x.answer_type != "number"), None)
    if cfg.method.rationale in ("pot", "mixed") and bad is not None:
        raise ConfigError(f"invalid config at `method`: fdd_pot needs numeric answers; {bad.id} of "
                          f"{cfg.benchmark.name} has answer type {bad.answer_type!r}; allowed: method=fdd")
    ood_sets(cfg, splits)


def run(ctx: RunContext) -> None:
    f = ctx.cfg.method
    ctx.teacher(ctx.splits.train, kinds=fdd_kinds(f.easy_prompt, f.hard_prompt))
    ood = ood_sets(ctx.cfg, ctx.splits)
    questions = [ex.question for ex in ctx.splits.test + ctx.splits.val] + [x.question for s in ood for x in s.examples]
    lp = Loop(ctx, Programs(f.pot_timeout_s, f.pot_memory_mb, f.pot_workers), NgramIndex(questions, f.dedupe_ngram),
              ood)
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
    ctx.details.update(metric=lp.spec().metric, rationale=f.rationale, feedback=f.feedback, system=lp.system,
                       ood={s.asked: {"benchmark": s.name, "n": len(s.examples)} for s in ood}, rounds=rounds)


# --------------------------------------------------------------------------------------------------------
# Step 0: the initial distillation set


def initial_programs(lp: Loop) -> tuple[dict, dict, list[dict]]:
    """One greedy teacher program per training problem, kept iff its executed ``ans`` is the gold."""
    train = lp.ctx.splits.train
    outs = lp.ctx.generate([pot_prompt(ex.question) for ex in train],
                           SamplingParams(temperature=0.0, max_tokens=lp.f.program_max_tokens), stage="program")
    executed = lp.programs.run([cs[0].text for cs in outs])
    rows = [{"example_id": ex.id, "question": ex.question, "answer": ex.answer, "completion": cs[0].text,
             "program": prog, "ok": res.ok, "executed": res.answer, "error": res.error,
             "correct": res.ok and fdd_numeric(res.answer, ex.answer)}
            for ex, cs, (prog, res) in zip(train, outs, executed)]
    kept = {r["example_id"]: r["program"] for r in rows if r["correct"]}
    report = {"total": len(rows), "kept": len(kept), "rejected_wrong_answer": len(rows) - len(kept),
              "rejected_not_executed": sum(not r["ok"] for r in rows)}
    return kept, report, rows


def initial_cot(lp: Loop) -> tuple[dict, dict, list[dict]]:
    """One greedy teacher CoT rationale per training problem, kept iff its answer is the gold."""
    samples = teacher_rationales(lp.ctx, lp.ctx.splits.train)
    kept, report = correctness_filter(samples)
    return {x.example_id: x.reasoning_completion for x in kept}, report, [asdict(x) for x in samples]


def initial_dataset(lp: Loop) -> tuple[FddDataset, dict, list[dict]]:
    """Round 0: the training problems with their verified rationales (mixed: a program and a CoT rationale,
    each verified against the gold on its own; the filter report is the programs', with the CoT one inside)."""
    programs, report, rows = initial_programs(lp) if lp.pot else initial_cot(lp)
    cot: dict = {}
    if lp.mixed:
        cot, report["cot"], cot_rows = initial_cot(lp)
        rows = [dict(x, format="pot") for x in rows] + [dict(x, format="cot") for x in cot_rows]
    dataset = FddDataset(FddProblem(ex.id, ex.question, ex.answer, "train", 0, rationale=programs.get(ex.id),
                                    cot=cot.get(ex.id)) for ex in lp.ctx.splits.train)
    return dataset, {"round": 0, "filter": report}, rows


# --------------------------------------------------------------------------------------------------------
# Step 1: feedback -- which pool problems does the student solve? (the control: a draw without the student)


def select_for_expansion(lp: Loop, r: int, dataset: FddDataset) -> list[FddProblem]:
    """The pool problems round r expands: all of them, or a seeded uniform sample of max_new_per_round
    (default |original train|) when the pool is larger. Our choice: only these get feedback, since the
    split matters only for the problems that are expanded (with no cap this is the whole pool). The control
    expands the same draw: as many problems, never chosen by the student's answers."""
    problems = list(dataset)
    cap = lp.f.max_new_per_round if lp.f.max_new_per_round is not None else len(lp.ctx.splits.train)
    if len(problems) <= cap:
        return problems
    chosen = sorted(random.Random(stable_seed("fdd-expand", lp.ctx.cfg.seed, r)).sample(range(len(problems)), cap))
    return [problems[i] for i in chosen]


def student_feedback(lp: Loop, student, problems: list[FddProblem]) -> list[dict]:
    """One greedy answer per problem, scored as the student is evaluated; ``correct`` = easy."""
    return predict(student, problems, lp.spec(), split="pool", progress=lp.ctx.progress)


def no_feedback(problems: list[FddProblem]) -> list[dict]:
    """The control's rows: no student answer (``correct`` None), so each problem gets the similar prompt."""
    return [{"id": p.id, "split": "pool", "question": p.question, "answer": p.answer, "correct": None}
            for p in problems]


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
            chosen = select_for_expansion(lp, r, dataset)
            if not lp.f.feedback:  # the control: the draw alone, no student
                feedback = no_feedback(chosen)
            else:
                if student is None:  # resumed: rebuild the previous round's student
                    student = base_student(lp, [])
                    student.load_trainable(prev.weights)
                feedback = student_feedback(lp, student, chosen)
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
    dev split of the round's data (methods.md 4.2: 5%, never test), test it once (and the OOD sets, and
    mixed's CoT read), save the selected weights (the next round's feedback model), summarise the round."""
    from ..training import train_and_evaluate

    ctx, cfg, f = lp.ctx, lp.ctx.cfg, lp.f
    paths = ctx.paths.round(r)
    fmt = "mixed" if lp.mixed else f.template
    pairs, dev = dev_split(dataset.pairs(fmt, cfg.student.family.value), dataset, f.dev_fraction, cfg.seed + r)
    write_jsonl(paths.train_data, (p.to_dict() for p in pairs))
    ctx.require_samples(pairs, counts.get("filter", {"total": len(dataset)}), f"round {r}'s data")
    seed_everything(cfg.seed + r)
    student = base_student(lp, [p.input + p.label for p in pairs])
    if f.retrain == "continue" and r > 0:
        student.load_trainable(ctx.paths.round(r - 1).weights)
    epochs = f.round0_epochs if r == 0 and f.round0_epochs else f.epochs_per_round
    tc = replace(cfg.trainer, max_epochs=epochs or cfg.trainer.max_epochs,
                 eval_every_n_epochs=f.eval_every_n_epochs or cfg.trainer.eval_every_n_epochs)
    stage = train_and_evaluate(ctx, student, pairs, paths, lp.spec(), cfg=replace(cfg, trainer=tc),
                               protocol="clean", select_on=dev, stage=f"round_{r}", system=lp.system, round=r)
    student.save_trainable(paths.weights)
    extra, read_rows = extra_reads(lp, student, r, stage["metrics"]["dev_selected"]["epoch"])
    ctx.add(extra)
    outcome = stage.pop("outcome")
    ctx.speed = {**outcome.speed(), "train_time_s": round(outcome.train_time_s, 2)}
    ctx.models["student"] = model_info(student)
    return student, {"round": r, "dataset_problems": len(dataset), "train_samples": len(pairs), "counts": counts,
                     "dev_problems": len(dev), **stage, "reads": read_rows,
                     "entries": [e.to_dict() for e in stage["entries"] + extra],
                     "train_time_s": round(outcome.train_time_s, 2),
                     "resumed_from_checkpoint": outcome.resumed_from_checkpoint}


def dev_split(pairs: list, dataset: FddDataset, fraction: float, seed: int) -> tuple[list, list[FddProblem]]:
    """(training pairs, dev problems): a seeded ``fraction`` (at least one) of the round's problems with a
    rationale, held out (all their samples) to select the round's model."""
    ids = sorted({p.example_id for p in pairs})
    n = max(1, round(len(ids) * fraction)) if len(ids) > 1 else 0
    dev = set(random.Random(stable_seed("fdd-dev", seed)).sample(ids, n))
    return [p for p in pairs if p.example_id not in dev], [p for p in dataset if p.id in dev]


def round_metrics(summary: dict, metric: str) -> dict:
    """One row per round in the run's metrics.csv / W&B: sizes, feedback counts, test and val accuracy, and
    each extra read's accuracy (``round_{test|val}_accuracy_<metric>[_<benchmark>]``)."""
    c, m = summary["counts"], summary["metrics"]
    row = {"round": summary["round"], "dataset_problems": summary["dataset_problems"],
           "train_samples": summary["train_samples"],
           f"round_test_accuracy_{metric}": m.get("accuracy"),
           f"round_dev_accuracy_{metric}": (m.get("dev_selected") or {}).get("val_accuracy"),
           **{f"round_{x.get('split', 'test')}_accuracy_{x['metric']}" + (f"_{x['benchmark']}" if x["benchmark"]
                                                                           else ""): x["accuracy"]
              for x in summary.get("reads", [])},
           **{k: c.get(k) for k in ("easy", "hard", "drawn", "requested", "generated", "kept", "rejected")}}
    return {k: v for k, v in row.items() if v is not None}
