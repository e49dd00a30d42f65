"""SGFT's datasets (methods.md 3): the SG pairs the guide is fine-tuned on, and, on the embedded tier, the
pre-training set of the tiny response model (our choice, a departure: experiments/sgft/README.md).

Both are lists of :class:`~sgft_lab.data.formats.Pair`, served by the common ``CoTDataModule`` (prompt
masked, target + EOS as the label).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..benchmarks.record import Example, Splits
from ..guidance import response_prompt, sg_prompt
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
    from ..guidance import format_steps
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
