"""FDD step 2, expansion (methods.md 4.2): the teacher writes one new problem per chosen pool problem, solves it,
and the verified, de-duplicated ones join the pool. Used by sgft_lab/methods/fdd.py, whose docstring lists the
choices; ``lp`` is its ``Loop`` (context, sandbox, test n-gram index).

- FDD: a harder variant of each easy (solved) problem, a similar problem for each hard one.
- The no-feedback control (``method.feedback=false``, methods.md 4.4): the feedback rows carry ``correct``
  None, so every chosen problem gets the similar (hard) prompt.
- rationale=mixed: the label comes from the programs (PoT is the primary format); then CoT samples are drawn
  until one reaches that label (:func:`label_cot`).
"""

from __future__ import annotations

from typing import Any, Sequence

from .answers import fdd_numeric, format_number, majority, same_answer
from .benchmarks.record import Example
from .data.fdd import Candidate, FddDataset, FddProblem, expansion_counts, normalize_question
from .data.formats import pot_prompt
from .rationales import teacher_rationales
from .teachers import SamplingParams
from .teachers.base import Request
from .teachers.reference import UNSURE
from .teachers.reference_fdd import fill, reference_answer, remember

# teacher_rationales() flags each sample against a gold answer; a new problem has none yet, so it gets
# this placeholder (parses as a float, equals nothing) and agreement decides instead.
NO_GOLD = "nan"


def _variant_request(lp, prompt: str, k: int) -> Request:
    params = SamplingParams(temperature=lp.f.variant_temperature, max_tokens=lp.f.variant_max_tokens)
    return Request(prompt, params, k)


def expand(lp, r: int, dataset: FddDataset, feedback: list[dict]) -> tuple[FddDataset, dict, list[Candidate]]:
    """Round r's new problems, one per problem of ``feedback``: a harder variant of an easy (solved) one,
    a similar problem for a hard one (or for any one, ``correct`` None: the control). Returns the grown pool
    (a new version), the counts, every candidate."""
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
    if lp.mixed:
        label_cot(lp, [c for c in cands if c.status == "kept"])
    grown.add(FddProblem(c.id, c.question, c.answer, c.kind, r, c.parent_id, c.rationale,
                         meta={"request": {"prompt": c.prompt, "sample_index": c.sample_index}, "votes": c.votes},
                         cot=c.cot)
              for c in cands if c.status == "kept")
    return grown, expansion_counts(r, dataset, feedback, cands), cands


def label(lp, cands: list[Candidate]) -> None:
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


def solve(lp, cands: Sequence[Candidate], n: int, gold: dict) -> list[list[tuple[Any, str]]]:
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


def label_cot(lp, cands: Sequence[Candidate]) -> None:
    """rationale=mixed: a CoT rationale for each kept new problem, checked against its label (the programs'
    answer). Samples at label_temperature are drawn one at a time, up to label_samples, until one reaches the
    label (the filter's zs_cot rule); a problem that none reaches keeps its program only. Our choice: PoT,
    the primary format, decides the label, so the two formats of a problem never disagree."""
    pending, n = list(cands), 0
    while pending and n < lp.f.label_samples:
        n += 1
        exs = [Example(c.id, c.question, c.answer, "number") for c in pending]
        samples = teacher_rationales(lp.ctx, exs, n_samples=n, temperature=lp.f.label_temperature)
        for j, c in enumerate(pending):
            hit = next((x for x in samples[j * n:(j + 1) * n] if x.correct), None)
            c.cot = hit.reasoning_completion if hit is not None else None
        pending = [c for c in pending if c.cot is None]
