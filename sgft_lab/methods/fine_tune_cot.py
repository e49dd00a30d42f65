"""Fine-tune-CoT (Ho et al. 2022, arXiv 2212.10071), with diverse reasoning and the vanilla baseline.

    1. Teacher: two-stage zero-shot-CoT on every training question (D samples; stage 1 at T=0.7 when D>1).
    2. Filter: keep a sample iff its stage-2 answer, scored with the zs_cot rule, equals the gold answer.
    3. Student: fine-tune on  question ###  ->  rationale --> gold answer  (ft_cot_token).
    4. Evaluate: greedy generation, scored with the ft_cot_token rule, as the protocol says (run.py: paper =
       test after every epoch; clean = val after every epoch, test once at the best val epoch).

method=vanilla_ft skips steps 1-2 and trains on  question ###  ->  gold answer  (ft_token).
"""

from __future__ import annotations

from ..evaluation import student_spec
from ..io import write_jsonl
from ..rationales import cot_pairs, filtered_rationales, gold_pairs
from ..run import RunContext
from ..students.build import build_student
from ..training import train_and_evaluate


def run(ctx: RunContext) -> None:
    cfg, m, paths, train = ctx.cfg, ctx.cfg.method, ctx.paths, ctx.splits.train
    family = cfg.student.family.value

    # Steps 1-2: the training pairs.
    if m.uses_teacher():
        kept = filtered_rationales(ctx, train, n_samples=m.diverse_samples, temperature=m.rationale_temperature(),
                                   only_correct=m.only_correct)
        pairs = cot_pairs(kept, m.template, family)
    else:
        pairs = gold_pairs(train, m.template, family)
    write_jsonl(paths.train_data, (p.to_dict() for p in pairs))
    ctx.lap("teacher")

    # Step 3: the student.
    student = build_student(cfg.student, corpus=[p.input + p.label for p in pairs], work_dir=paths.student_dir)
    stage = train_and_evaluate(ctx, student, pairs, paths, student_spec(ctx, m.template))
    ctx.lap("training")

    # Step 4: results, recomputed from the saved predictions.
    ctx.record_headline(stage, stage["outcome"], student)
    ctx.data.update(n_train_questions=len(train), n_train_samples=len(pairs),
                    rationales_per_question=m.diverse_samples if m.uses_teacher() else None)
