"""FDD's growing dataset (methods.md 4.2): the problem pool, versioned per round, and its DataModule.

The pool holds every training problem: the original ones (gold answer, round 0) and the problems the
teacher wrote in later rounds (label = the verified answer). A problem carries its teacher rationale
(a CoT rationale or a PoT program) when one was verified; a problem without one stays in the pool, so
the student's feedback still covers it, but yields no training sample (our choice: an original problem
whose round-0 rationale failed the filter can still be "hard" and spawn a similar problem).

Versioning: round r's pool is saved as ``rounds/round_r/dataset.jsonl`` (every problem with its
provenance) next to ``train.jsonl`` (the student samples it yields); rounds only ever add problems, so
``round`` on each problem tells which version introduced it.

Student formats:
- CoT: Fine-tune-CoT's ``ft_cot_token`` (``question ###`` -> `` rationale --> answer``), data/formats.py.
- PoT: ``pot``, input ``{question}`` + ``formats.POT_SUFFIX`` (the first author's released PoT models,
  methods.md 4.2), target the program (decoder targets start with one space, as every decoder label here).
- mixed (methods.md 4.4's second ablation): a problem gives a PoT sample (its program) and a CoT sample (its
  ``cot`` rationale, ``ft_cot_token``'s target), each input ``Question: {q}\n{trigger}\n`` naming the format
  with methods.md 4.2's triggers (the first author's etd-codet5p-770m-py card, the one format of that family
  that has a trigger for both): :data:`POT_TRIGGER`, :data:`COT_TRIGGER`.
The round's pairs are served by the common ``data.datamodules.CoTDataModule``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..io import read_jsonl, write_jsonl
from .formats import Pair, pot_label, student_input, student_label

ORIGINS = ("train", "harder", "similar")  # original problem; variant of an easy one; of a hard one
POT_TRIGGER = "Let\u2019s break down the code step by step"  # exactly as on the model card (typographic ’)
COT_TRIGGER = "Let's think step by step."
FORMATS = ("ft_cot_token", "pot", "mixed")


def mixed_input(question: str, trigger: str) -> str:
    """A mixed-format student input: the question and the trigger naming the rationale format."""
    return f"Question: {question.strip()}\n{trigger}\n"


@dataclass
class FddProblem:
    """One problem of the pool.

    answer: gold (origin "train") or the verified label of a generated problem.
    rationale: the verified teacher rationale (CoT text or PoT program); None = none verified, so the
      problem is in the pool (feedback) but not in the training samples.
    cot: rationale=mixed only: the verified CoT rationale beside the program in ``rationale``.
    round: the round whose expansion added it (0 = original training set).
    meta: provenance, e.g. the teacher request that wrote it and the verification votes.
    """

    id: str
    question: str
    answer: str
    origin: str = "train"
    round: int = 0
    parent_id: str | None = None
    rationale: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    cot: str | None = None

    def __post_init__(self) -> None:
        if self.origin not in ORIGINS:
            raise ValueError(f"FDD problem {self.id}: origin {self.origin!r} not in {ORIGINS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalize_question(text: str) -> str:
    """Key for exact-duplicate checks: lower-cased, whitespace collapsed."""
    return " ".join(text.lower().split())


_WORD = re.compile(r"\w+")


def word_ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Lower-cased word n-grams; a text of fewer than n words is one n-gram (so it matches only itself)."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


class NgramIndex:
    """Word n-grams of reference questions (test/val) for contamination checks (methods.md 4.2)."""

    def __init__(self, questions: Iterable[str], n: int = 8):
        if n < 1:
            raise ValueError(f"n-gram size must be >= 1, got {n}")
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        for q in questions:
            self.grams |= word_ngrams(q, n)

    def overlap(self, question: str) -> float:
        """Fraction of ``question``'s n-grams that occur in some reference question (0 for empty text)."""
        grams = word_ngrams(question, self.n)
        return sum(g in self.grams for g in grams) / len(grams) if grams else 0.0


class FddDataset:
    """The pool of one round: problems in insertion order, unique by id and by normalized question."""

    def __init__(self, problems: Iterable[FddProblem] = ()):
        self.problems: list[FddProblem] = []
        self._ids: set[str] = set()
        self._questions: set[str] = set()
        self.add(problems)

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def contains_question(self, question: str) -> bool:
        return normalize_question(question) in self._questions

    def add(self, problems: Iterable[FddProblem]) -> None:
        """Append problems; a repeated id or question is an error (the caller de-duplicates first)."""
        for p in problems:
            key = normalize_question(p.question)
            if p.id in self._ids:
                raise ValueError(f"FDD dataset: duplicate problem id {p.id!r}")
            if key in self._questions:
                raise ValueError(f"FDD dataset: problem {p.id!r} repeats a question already in the pool")
            self.problems.append(p)
            self._ids.add(p.id)
            self._questions.add(key)

    def copy(self) -> FddDataset:
        return FddDataset(FddProblem(**p.to_dict()) for p in self.problems)

    def with_rationale(self) -> list[FddProblem]:
        return [p for p in self.problems if p.rationale is not None or p.cot is not None]

    def pairs(self, template: str, family: str) -> list[Pair]:
        """Student samples of every problem with a verified rationale, in ``template`` (ft_cot_token: the
        CoT rationale; pot: the program; mixed: a PoT sample for the program, a CoT one for ``cot``)."""
        if template not in FORMATS:
            raise ValueError(f"FDD student format {template!r}; known: {FORMATS}")
        if template != "mixed":
            return [Pair(student_input(template, p.question, family),
                         student_label(template, p.answer, family, rationale=p.rationale), p.id,
                         f"fdd:{p.origin}") for p in self.problems if p.rationale is not None]
        out = []
        for p in self.with_rationale():
            if p.rationale is not None:
                out.append(Pair(mixed_input(p.question, POT_TRIGGER), pot_label(p.rationale, family), p.id,
                                f"fdd:{p.origin}:pot"))
            if p.cot is not None:
                out.append(Pair(mixed_input(p.question, COT_TRIGGER),
                                student_label("ft_cot_token", p.answer, family, rationale=p.cot), p.id,
                                f"fdd:{p.origin}:cot"))
        return out

    def counts(self) -> dict[str, int]:
        """Problems by origin, and how many carry a rationale (= training samples)."""
        out = {"problems": len(self.problems), "with_rationale": len(self.with_rationale())}
        for o in ORIGINS:
            out[o] = sum(p.origin == o for p in self.problems)
        return out

    # --- versioning: one file per round -------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        write_jsonl(path, (p.to_dict() for p in self.problems))

    @classmethod
    def load(cls, path: str | Path) -> FddDataset:
        """Read a saved version; a bad row raises ValueError naming the file, line and field."""
        problems = []
        for i, row in enumerate(read_jsonl(path), 1):
            missing = [k for k in ("id", "question", "answer") if not isinstance(row.get(k), str)]
            if missing:
                raise ValueError(f"{path}: row {i}: field {missing[0]!r} is missing or not a string")
            try:
                problems.append(FddProblem(**row))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: row {i}: {e}") from None
        return cls(problems)


@dataclass
class Candidate:
    """One expansion request and what became of it (a row of rounds/round_r/generated.jsonl)."""

    id: str
    parent_id: str
    kind: str  # harder (parent was easy) | similar (parent was hard)
    prompt: str
    sample_index: int
    question: str = ""
    status: str = "pending"  # kept | unusable | duplicate_pool | duplicate_eval | unverified
    answer: str | None = None
    rationale: str | None = None
    votes: list[Any] = field(default_factory=list)
    cot: str | None = None  # rationale=mixed: the CoT rationale reaching ``answer`` (None: none did)


def expansion_counts(r: int, dataset: FddDataset, feedback: list[dict], cands: list[Candidate]) -> dict:
    """Round r's expansion in numbers. The no-feedback control's rows carry ``correct`` None: its easy and
    hard are None and ``drawn`` counts the problems it expanded."""
    status = Counter(c.status for c in cands)
    rejected = {k: status.get(k, 0) for k in ("duplicate_pool", "duplicate_eval", "unverified")}
    judged = all(row.get("correct") is not None for row in feedback)
    easy = sum(bool(row["correct"]) for row in feedback) if judged else None
    return {"round": r, "pool_before": len(dataset), "easy": easy,
            "hard": len(feedback) - easy if judged else None, "drawn": len(feedback),
            "requested": len(cands), "requested_harder": sum(c.kind == "harder" for c in cands),
            "requested_similar": sum(c.kind == "similar" for c in cands),
            "unusable": status.get("unusable", 0), "generated": len(cands) - status.get("unusable", 0),
            "kept": status.get("kept", 0), "rejected": sum(rejected.values()), "rejected_by": rejected,
            "kept_harder": sum(c.status == "kept" and c.kind == "harder" for c in cands),
            "kept_similar": sum(c.status == "kept" and c.kind == "similar" for c in cands),
            "kept_with_cot": sum(c.status == "kept" and c.cot is not None for c in cands)}
