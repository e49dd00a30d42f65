"""Distilling Step-by-Step (Hsieh et al. 2023, arXiv 2305.02301; google-research/distilling-step-by-step).

    1. Teacher: two-stage zero-shot-CoT on every training question, one greedy rationale each -- exactly
       Fine-tune-CoT's teacher stage (same prompts, same cache entries).
    2. Filter: Fine-tune-CoT's correctness filter on the rationales (method.only_correct).
    3. Student: one model, two tasks told apart by a task prefix --
           label task      predict: {question}  ->  {gold answer}       every training question
           rationale task  explain: {question}  ->  {rationale}         every kept rationale
       trained on  alpha * label loss + (1 - alpha) * rationale loss  (each the mean cross-entropy over its
       task's label tokens in the batch; StudentModule task_weights).
    4. Evaluate: the label task alone -- greedy generation from the ``predict:`` prompt, the whole completion
       read as the answer (no prefix, as vanilla fine-tuning) -- as the protocol says (run.py).

Ours (experiments/dss/README.md): the rationales are Fine-tune-CoT's filtered zero-shot-CoT ones, the label is
the gold answer (the official ``label_type gt``); decoder students get ``predict: {question} ###`` -> `` {answer}``
(the paper trains T5 only); the two tasks' pairs are shuffled together, so a batch holds a mix of both rather
than both tasks of the same questions.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..benchmarks.record import Example
from ..data.formats import TASK_LABEL, TASK_RATIONALE, Pair
from ..evaluation import student_spec
from ..io import write_jsonl
from ..rationales import TeacherSample, cot_pairs, filtered_rationales, gold_pairs
from ..run import RunContext
from ..students.build import build_student
from ..training import train_and_evaluate

PREDICT, EXPLAIN = "dss_predict", "dss_explain"


def multitask_pairs(train: Sequence[Example], rationales: Sequence[TeacherSample], family: str) -> list[Pair]:
    """The label task's pairs for every training question, then the rationale task's for each rationale."""
    return gold_pairs(train, PREDICT, family, task=TASK_LABEL) + cot_pairs(rationales, EXPLAIN, family,
                                                                          task=TASK_RATIONALE)


def run(ctx: RunContext) -> None:
    cfg, m, paths, train = ctx.cfg, ctx.cfg.method, ctx.paths, ctx.splits.train
    family = cfg.student.family.value

    # Steps 1-2: the teacher's rationales, filtered.
    kept = filtered_rationales(ctx, train, n_samples=1, temperature=0.0, only_correct=m.only_correct)
    pairs = multitask_pairs(train, kept, family)
    write_jsonl(paths.train_data, (p.to_dict() for p in pairs))
    ctx.lap("teacher")

    # Step 3: one student, the weighted sum of the two tasks' losses.
    student = build_student(cfg.student, corpus=[p.input + p.label for p in pairs], work_dir=paths.student_dir)
    stage = train_and_evaluate(ctx, student, pairs, paths, student_spec(ctx, PREDICT),
                               task_weights=(m.alpha, 1.0 - m.alpha))
    ctx.lap("training")

    # Step 4: results (the label task alone), recomputed from the saved predictions.
    ctx.record_headline(stage, stage["outcome"], student)
    n_label = sum(p.task == TASK_LABEL for p in pairs)
    ctx.data.update(n_train_questions=len(train), n_train_samples=len(pairs), n_label_samples=n_label,
                    n_rationale_samples=len(pairs) - n_label, rationales_per_question=1)
    ctx.details.update(alpha=m.alpha, task_prefixes={"label": "predict:", "rationale": "explain:"})
