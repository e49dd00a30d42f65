"""The one record type every benchmark produces (methods.md section 1.2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ANSWER_TYPES = ("number", "choice", "yes_no", "text")


@dataclass
class Example:
    """One benchmark question.

    id: ``{task}:{sample_index}`` for the Fine-tune-CoT tasks (so the official split files apply);
        embedded tasks use ``{benchmark}:{split}:{index}``.
    question: rendered exactly as it goes into a template (choices already appended).
    answer: gold answer string as Fine-tune-CoT stores it.
    answer_type: one of ANSWER_TYPES. Scoring is chosen by task key, not by this field.
    choices: raw choice texts in letter order, or None.
    rationale: a reference rationale where the dataset has one (GSM8K solution, AQuA rationale, ...).
    trace: structured solution trace (embedded tasks): a list of step dicts the reference teacher reads.
    meta: anything else (difficulty, source file and row, ...).
    """

    id: str
    question: str
    answer: str
    answer_type: str
    choices: list[str] | None = None
    rationale: str | None = None
    trace: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"Example {self.id}: answer_type {self.answer_type!r} not in {ANSWER_TYPES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Example":
        return cls(**d)


@dataclass
class Splits:
    """train / val / test lists of Examples plus the scoring key of the benchmark."""

    task: str  # Fine-tune-CoT scoring key, e.g. "multiarith", "coin_flip"
    train: list[Example]
    val: list[Example]
    test: list[Example]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}
