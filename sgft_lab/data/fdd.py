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
- PoT: input ``{question}`` + :data:`POT_SUFFIX` (the first author's released PoT models, methods.md 4.2),
  target the program (decoder targets start with one space, as every decoder label here).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from ..io import read_jsonl, write_jsonl
from .formats import DECODER, student_input, student_label

if TYPE_CHECKING:
    from .datamodules import Pair

# Exactly as on the zhuxunyu/math-codet5p-770m-py model card, with the typographic apostrophe.
POT_SUFFIX = "\nProgram: Let\u2019s design executable python program (return ans) to solve the question."
ORIGINS = ("train", "harder", "similar")  # original problem; variant of an easy one; of a hard one


def pot_prompt(question: str) -> str:
    """PoT input for the teacher and the student: the question, then the PoT suffix."""
    return question.strip() + POT_SUFFIX


def pot_label(program: str, family: str) -> str:
    """PoT target: the program (one leading space for decoders, like every decoder label)."""
    return (" " if family == DECODER else "") + program.strip()


@dataclass
class FddProblem:
    """One problem of the pool.

    answer: gold (origin "train") or the verified label of a generated problem.
    rationale: the verified teacher rationale (CoT text or PoT program); None = none verified, so the
      problem is in the pool (feedback) but not in the training samples.
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

    def copy(self) -> "FddDataset":
        return FddDataset(FddProblem(**p.to_dict()) for p in self.problems)

    def with_rationale(self) -> list[FddProblem]:
        return [p for p in self.problems if p.rationale is not None]

    def pairs(self, rationale: str, family: str, template: str = "ft_cot_token") -> list[Pair]:
        """Student samples of every problem with a verified rationale (``rationale``: cot | pot)."""
        from .datamodules import Pair

        out = []
        for p in self.with_rationale():
            if rationale == "pot":
                out.append(Pair(pot_prompt(p.question), pot_label(p.rationale, family), p.id,
                                f"fdd:{p.origin}"))
            elif rationale == "cot":
                out.append(Pair(student_input(template, p.question, family),
                                student_label(template, p.answer, family, rationale=p.rationale),
                                p.id, f"fdd:{p.origin}"))
            else:
                raise ValueError(f"unknown FDD rationale type {rationale!r}; known: cot, pot")
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
    def load(cls, path: str | Path) -> "FddDataset":
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


def _datamodule_class():
    from .datamodules import CoTDataModule

    class FddDataModule(CoTDataModule):
        """The student samples of one round's version of the FDD dataset (training.fit's ``datamodule``)."""

        def __init__(self, student, dataset: FddDataset, rationale: str, val: Sequence, test: Sequence,
                     batch_size: int, num_workers: int = 0, seed: int = 0, template: str = "ft_cot_token"):
            self.dataset = dataset
            self.rationale = rationale
            super().__init__(student, dataset.pairs(rationale, student.family, template), val, test,
                             batch_size=batch_size, num_workers=num_workers, seed=seed)

    FddDataModule.__module__, FddDataModule.__qualname__ = __name__, "FddDataModule"
    return FddDataModule


def __getattr__(name: str):
    # FddDataModule subclasses a Lightning class: built on first use, so importing this module (the
    # reference teacher's PoT kinds, config-only CLIs) does not import torch and Lightning.
    if name == "FddDataModule":
        cls = globals()["FddDataModule"] = _datamodule_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
