"""Teacher rationales, the correctness filter, and the CoT training pairs built from them.

One implementation for every method that distils zero-shot-CoT rationales: Fine-tune-CoT (and diverse
reasoning), Distilling Step-by-Step, SGFT's CoT fine-tuning baseline, FDD's CoT rounds and its labelling of new
problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .answers import score
from .benchmarks.record import Example
from .data.formats import Pair, student_input, student_label, zs_cot_stage1, zs_cot_stage2
from .teachers.base import SamplingParams


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


def teacher_rationales(ctx, examples: Sequence[Example], *, n_samples: int = 1,
                       temperature: float = 0.0) -> list[TeacherSample]:
    """Two-stage zero-shot-CoT (methods.md 2.2): ``n_samples`` rationales per question (stage 1 at
    ``temperature``), each answered greedily (stage 2), each flagged against the gold with the filter's
    rule: the ``zs_cot`` template, i.e. the first candidate of the stage-2 completion (methods.md 2.3).
    Stage limits are the method's ``rationale_max_tokens`` / ``answer_max_tokens``."""
    m = ctx.cfg.method
    stage1 = [zs_cot_stage1(ex.question) for ex in examples]
    rationales = ctx.generate(stage1, SamplingParams(temperature=temperature, max_tokens=m.rationale_max_tokens,
                                                     n=n_samples), stage="rationale")
    stage2 = [zs_cot_stage2(p, c.text) for p, cs in zip(stage1, rationales) for c in cs]
    answers = ctx.generate(stage2, SamplingParams(temperature=0.0, max_tokens=m.answer_max_tokens),
                           stage="answer")
    samples, k = [], 0
    for ex, p, cs in zip(examples, stage1, rationales):
        for i, c in enumerate(cs):
            a = answers[k][0].text
            k += 1
            s = score(ctx.task, "zs_cot", a, ex.answer)
            samples.append(TeacherSample(ex.id, i, ex.question, ex.answer, p, c.text, a, s.extracted, s.correct))
    return samples


def correctness_filter(samples: Sequence[TeacherSample]) -> tuple[list[TeacherSample], dict]:
    """Keep correct samples (methods.md 2.3); questions with no correct sample drop out."""
    kept = [s for s in samples if s.correct]
    questions = {s.example_id for s in samples}
    report = {"total": len(samples), "kept": len(kept), "rejected_wrong_answer": len(samples) - len(kept),
              "questions": len(questions), "questions_kept": len({s.example_id for s in kept}),
              "teacher_train_accuracy": round(len(kept) / len(samples), 4) if samples else 0.0}
    return kept, report


def filtered_rationales(ctx, examples: Sequence[Example], *, n_samples: int = 1, temperature: float = 0.0,
                        only_correct: bool = True) -> list[TeacherSample]:
    """Steps 1-2 of Fine-tune-CoT (and of the methods that reuse its data): the teacher's rationales, saved,
    then the correctness filter (``only_correct=False``: every sample kept), its report saved and recorded."""
    from dataclasses import asdict

    from .io import write_json, write_jsonl

    samples = teacher_rationales(ctx, examples, n_samples=n_samples, temperature=temperature)
    write_jsonl(ctx.paths.teacher_samples, (asdict(s) for s in samples))
    kept, report = correctness_filter(samples)
    write_json(ctx.paths.filter_report, report)
    ctx.details["filter"] = report
    ctx.require_samples(kept if only_correct else samples, report, "the correctness filter")
    return kept if only_correct else list(samples)


def cot_pairs(samples: Sequence[TeacherSample], template: str, family: str, task: int = 0) -> list[Pair]:
    """Student samples ``question -> rationale + gold answer`` (methods.md 2.4: never the teacher's answer);
    ``dss_explain``: ``question -> rationale``. ``task``: the pairs' task id (multi-task students)."""
    return [Pair(student_input(template, s.question, family),
                 student_label(template, s.answer, family, rationale=s.reasoning_completion),
                 s.example_id, f"teacher:{s.sample_index}", task) for s in samples]


def gold_pairs(examples: Sequence[Example], template: str, family: str, task: int = 0) -> list[Pair]:
    """Student samples ``question -> gold answer`` (vanilla fine-tuning, ``ft_token``; ``dss_predict``)."""
    return [Pair(student_input(template, ex.question, family), student_label(template, ex.answer, family),
                 ex.id, "gold", task) for ex in examples]
