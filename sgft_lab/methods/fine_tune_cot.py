"""Fine-tune-CoT (Ho et al. 2022, arXiv 2212.10071), with diverse reasoning and the vanilla baseline.

    1. Teacher: two-stage zero-shot-CoT on every training question (D samples; stage 1 at T=0.7 when D>1).
    2. Filter: keep a sample iff its stage-2 answer, scored with the zs_cot rule, equals the gold answer.
    3. Student: fine-tune on  question ###  ->  rationale --> gold answer  (ft_cot_token).
    4. Evaluate: greedy generation on val and test after every epoch, scored with the ft_cot_token rule.

method=vanilla_ft skips steps 1-2 and trains on  question ###  ->  gold answer  (ft_token).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..answers import score
from ..benchmarks import load_benchmark
from ..benchmarks.record import Example
from ..config import Config
from ..data.datamodules import Pair
from ..data.formats import student_input, student_label, zs_cot_stage1, zs_cot_stage2
from ..evaluation import EvalSpec, epoch_history, summarize
from ..io import write_json, write_jsonl
from ..teachers import SamplingParams, build_teacher
from ..teachers.engine import TeacherAccounting, generate
from .common import RunContext, log_summary, print_results_table, seed_everything


@dataclass
class TeacherSample:
    """One teacher rationale for one question (Fine-tune-CoT's completion record)."""

    example_id: str
    sample_index: int
    question: str
    answer: str  # gold
    reasoning_prompt: str
    reasoning_completion: str
    answer_completion: str
    extracted: str | None
    correct: bool


def teacher_rationales(teacher, cache, examples: Sequence[Example], task: str, *, n_samples: int,
                       temperature: float, rationale_max_tokens: int, answer_max_tokens: int,
                       accounting: TeacherAccounting, batch_size: int = 64, progress: bool = True
                       ) -> list[TeacherSample]:
    """Two-stage zero-shot-CoT (methods.md 2.2): n_samples rationales per question, each answered greedily."""
    stage1 = [zs_cot_stage1(ex.question) for ex in examples]
    rationales = generate(teacher, cache, stage1,
                          SamplingParams(temperature=temperature, max_tokens=rationale_max_tokens, n=n_samples),
                          accounting=accounting, stage="rationale", batch_size=batch_size, progress=progress)
    stage2 = [zs_cot_stage2(p, c.text) for p, cs in zip(stage1, rationales) for c in cs]
    answers = generate(teacher, cache, stage2, SamplingParams(temperature=0.0, max_tokens=answer_max_tokens),
                       accounting=accounting, stage="answer", batch_size=batch_size, progress=progress)
    samples, k = [], 0
    for ex, p, cs in zip(examples, stage1, rationales):
        for i, c in enumerate(cs):
            a = answers[k][0].text
            k += 1
            s = score(task, "zs_cot", a, ex.answer)  # the filter's rule: first candidate in stage 2
            samples.append(TeacherSample(ex.id, i, ex.question, ex.answer, p, c.text, a, s.extracted, s.correct))
    return samples


def correctness_filter(samples: Sequence[TeacherSample]) -> tuple[list[TeacherSample], dict]:
    """Keep correct samples (methods.md 2.3); questions with no correct sample drop out."""
    kept = [s for s in samples if s.correct]
    questions = {s.example_id for s in samples}
    report = {"total": len(samples), "kept": len(kept), "rejected_wrong_answer": len(samples) - len(kept),
              "questions": len(questions), "questions_kept": len({s.example_id for s in kept})}
    return kept, report


def run(cfg: Config, run_dir: str | Path) -> dict:
    ctx = RunContext(cfg, run_dir)
    paths, m = ctx.paths, cfg.method
    splits = load_benchmark(cfg.benchmark, cfg.paths.data_dir)  # nothing is written before the data loads
    ctx.save_config()
    seed_everything(cfg.seed)
    family = "encoder_decoder" if cfg.student.family == "encoder_decoder" else "decoder"
    accounting = TeacherAccounting()
    extra: dict = {}

    # Steps 1-3: build the training pairs.
    if m.use_teacher:
        teacher = build_teacher(cfg.teacher, splits.train)
        cache = ctx.teacher_cache()
        d = m.diverse_samples
        samples = teacher_rationales(
            teacher, cache, splits.train, splits.task, n_samples=d, temperature=0.0 if d == 1 else m.diverse_temperature,
            rationale_max_tokens=m.rationale_max_tokens, answer_max_tokens=m.answer_max_tokens,
            accounting=accounting, batch_size=m.teacher_batch_size, progress=cfg.trainer.enable_progress_bar)
        cache.close()
        write_jsonl(paths.teacher_dir / "samples.jsonl", (asdict(s) for s in samples))
        kept, report = correctness_filter(samples) if m.only_correct else (list(samples), {"total": len(samples),
                                                                                            "kept": len(samples)})
        report["teacher_train_accuracy"] = sum(s.correct for s in samples) / max(1, len(samples))
        write_json(paths.teacher_dir / "filter_report.json", report)
        pairs = [Pair(student_input(m.template, s.question, family),
                      student_label(m.template, s.answer, family, rationale=s.reasoning_completion),
                      s.example_id, f"teacher:{s.sample_index}") for s in kept]
        extra["filter"] = report
    else:
        pairs = [Pair(student_input(m.template, ex.question, family), student_label(m.template, ex.answer, family),
                      ex.id, "gold") for ex in splits.train]
    write_jsonl(paths.data_dir / "train.jsonl", (p.to_dict() for p in pairs))

    # Step 3: the student.
    from ..students.build import build_student, count_parameters
    from ..training import fit

    corpus = [p.input + p.label for p in pairs]
    student = build_student(cfg.student, corpus=corpus, work_dir=paths.student_dir)
    trainable, total = count_parameters(student.model)
    eval_sets = {"val": _cap(splits.val, cfg.trainer.max_eval_examples),
                 "test": _cap(splits.test, cfg.trainer.max_eval_examples)}
    spec = EvalSpec(task=splits.task, template=m.template, max_new_tokens=cfg.student.max_new_tokens,
                    batch_size=cfg.trainer.eval_batch_size, max_input_tokens=cfg.student.max_input_tokens)
    outcome = fit(cfg, student, pairs, eval_sets, spec, paths)

    # Step 4: results, recomputed from the saved predictions.
    history = epoch_history(paths)
    totals = accounting.to_dict()
    results = ctx.write_results(
        metrics=summarize(history), history=history,
        n_train_questions=len(splits.train), n_train_samples=len(pairs),
        n_val=len(eval_sets["val"]), n_test=len(eval_sets["test"]),
        teacher_calls=totals["total"]["teacher_calls"], cache_hits=totals["total"]["cache_hits"],
        teacher_accounting=totals, student_parameters={"trainable": trainable, "total": total},
        resumed_from_checkpoint=outcome.resumed_from_checkpoint, train_time_s=round(outcome.train_time_s, 2),
        speed=outcome.speed(),
        **extra,
    )
    log_summary(cfg, results, accounting)
    if cfg.print_table:
        print_results_table(results)
    return results


def _cap(xs: list, n: int | None) -> list:
    return xs if n is None else xs[:n]
