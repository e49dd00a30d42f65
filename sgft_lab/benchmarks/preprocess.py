"""Raw benchmark rows -> Example, exactly as Fine-tune-CoT's preprocessing renders them (methods.md 1.1, 1.2).

The reference is `notebooks/old/Data Preparation.ipynb` of itsnamgyu/reasoning-teacher. One function per raw
format; each takes a `Row` (the raw dict plus where it came from) and returns an Example whose id is
``{task}:{sample_index}``. A missing or malformed field raises a one-line DataError (a ValueError) naming the
file, the line (or row) and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from .record import Example

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Row:
    """One raw record: its data, its Fine-tune-CoT sample index and where it came from (for errors)."""

    data: dict[str, Any]
    index: int
    where: str  # "gsm8k/train.jsonl:12" or "singleeq/questions.json row 5"

    def fail(self, field: str, msg: str) -> DataError:
        return DataError(f"{self.where}: field {field!r}: {msg}")

    def get(self, field: str, typ: type | tuple[type, ...] | None = None) -> Any:
        """Value at a dotted path ("question.stem"), checked for presence and (optionally) type."""
        cur: Any = self.data
        for part in field.split("."):
            if not isinstance(cur, dict) or part not in cur:
                raise self.fail(field, "missing")
            cur = cur[part]
        if typ is not None and not isinstance(cur, typ):
            names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise self.fail(field, f"expected {names}, got {type(cur).__name__}")
        return cur

    def text(self, field: str) -> str:
        return self.get(field, str)


def _example(task: str, row: Row, question: str, answer: str, answer_type: str, **kw: Any) -> Example:
    return Example(
        id=f"{task}:{row.index}",
        question=question.strip(),
        answer=answer,
        answer_type=answer_type,
        meta={"source": row.where, **kw.pop("meta", {})},
        **kw,
    )


def verbalize_multichoice(question: str, choices: list[str], answer_index: int) -> tuple[str, str]:
    """`{question} Answer choices: (A) x, (B) y.` and the gold letter (choice texts stripped)."""
    verbal = [f"({LETTERS[i]}) {c.strip()}" for i, c in enumerate(choices)]
    return question + " Answer choices: " + ", ".join(verbal) + ".", LETTERS[answer_index]


def _one_solution(row: Row, field: str = "lSolutions") -> Any:
    sols = row.get(field, list)
    if len(sols) != 1:
        raise row.fail(field, f"expected exactly one solution, got {len(sols)}")
    return sols[0]


# --- arithmetic ---------------------------------------------------------------------------------------------


def single_eq(row: Row, task: str, **_: Any) -> Example:
    return _example(task, row, row.text("sQuestion"), str(_one_solution(row)), "number")


def addsub(row: Row, task: str, **_: Any) -> Example:
    # lSolutions holds strings ("43") in AddSub.json and floats elsewhere: str() keeps the file's form.
    return _example(task, row, row.text("sQuestion"), str(_one_solution(row)), "number")


def multiarith(row: Row, task: str, **_: Any) -> Example:
    sol = _one_solution(row)
    try:
        value = float(sol)
    except (TypeError, ValueError):
        raise row.fail("lSolutions", f"not a number: {sol!r}") from None
    if not value.is_integer():  # also NaN and infinity ("nan", "1e400")
        raise row.fail("lSolutions", f"expected an integer solution, got {sol!r}")
    return _example(task, row, row.text("sQuestion"), str(int(value)), "number")


def gsm8k(row: Row, task: str, **_: Any) -> Example:
    full = row.text("answer")
    if full.count("####") != 1:
        raise row.fail("answer", "expected exactly one '####' before the final answer")
    start = full.find("####")
    gold = full[start + 5 :]  # as Fine-tune-CoT: the 5 characters "#### " dropped, commas kept (e.g. "1,000")
    try:
        int(gold.replace(",", ""))
    except ValueError:
        raise row.fail("answer", f"final answer after '####' is not an integer: {gold!r}") from None
    return _example(task, row, row.text("question"), gold, "number", rationale=full[:start].strip())


def svamp(row: Row, task: str, **_: Any) -> Example:
    question = row.text("Body").strip() + " " + row.text("Question").strip()
    ans = row.get("Answer", (int, float, str))
    return _example(task, row, question, str(ans), "number", meta={"svamp_id": row.data.get("ID")})


# --- multiple choice ----------------------------------------------------------------------------------------


def aqua(row: Row, task: str, **_: Any) -> Example:
    options = row.get("options", list)
    if len(options) != 5:
        raise row.fail("options", f"expected 5 options, got {len(options)}")
    choices = []
    for i, opt in enumerate(options):
        if not isinstance(opt, str) or len(opt) < 2 or opt[0] not in "ABCDE" or opt[1] != ")":
            raise row.fail(f"options[{i}]", f"expected 'X)...' with X in A-E, got {opt!r}")
        choices.append(opt[2:])
    correct = row.text("correct")
    if correct not in "ABCDE" or len(correct) != 1:
        raise row.fail("correct", f"expected one of A-E, got {correct!r}")
    question, gold = verbalize_multichoice(row.text("question").strip(), choices, ord(correct) - ord("A"))
    return _example(
        task,
        row,
        question,
        gold,
        "choice",
        choices=[c.strip() for c in choices],
        rationale=row.text("rationale").strip(),
    )


def commonsense_qa(row: Row, task: str, **_: Any) -> Example:
    raw = row.get("question.choices", list)
    if len(raw) != 5:
        raise row.fail("question.choices", f"expected 5 choices, got {len(raw)}")
    choices = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            raise row.fail(f"question.choices[{i}].text", "missing")
        choices.append(c["text"])
    key = row.text("answerKey")
    if key not in "ABCDE" or len(key) != 1:
        raise row.fail("answerKey", f"expected one of A-E, got {key!r}")
    question, gold = verbalize_multichoice(row.text("question.stem").strip(), choices, ord(key) - ord("A"))
    return _example(
        task,
        row,
        question,
        gold,
        "choice",
        choices=[c.strip() for c in choices],
        meta={"csqa_id": row.data.get("id")},
    )


def bigbench_choice(row: Row, task: str, rng: Any = None, **_: Any) -> Example:
    """Date Understanding / Tracking Shuffled Objects (`preprocess_bigbench_choice`).

    With ``rng`` (Date), choice j of the file goes to position ``perm[j]`` of one permutation per example,
    drawn from a single RandomState(0) stream in file order (so every row of the file must pass through here,
    in order, whatever the split).
    """
    # Departs from methods.md 1.2 ("strip the input") and from the later notebook, which strips: the dataset
    # files the paper ran on (dataset/*.json at reasoning-teacher 5a5104a) keep the input's trailing spaces,
    # e.g. "... Alice has the \nWhich choice is true?" for every Shuffled Objects row. Only the ends of the
    # whole question are stripped (no Date input has surrounding whitespace, so Date is the same either way).
    question = row.text("input") + "\nWhich choice is true?"
    scores = row.get("target_scores", dict)
    if len(scores) < 2:
        raise row.fail("target_scores", f"expected at least 2 choices, got {len(scores)}")
    positions = list(range(len(scores)))
    if rng is not None:
        positions = [int(p) for p in rng.permutation(positions)]
    choices: list[str] = [""] * len(scores)
    correct = []
    for j, (choice, score) in enumerate(scores.items()):
        choice = choice.removesuffix(".")
        choices[positions[j]] = choice
        if score:
            correct.append(positions[j])
    if len(correct) != 1:
        raise row.fail("target_scores", f"expected exactly one correct choice, got {len(correct)}")
    question, gold = verbalize_multichoice(question, choices, correct[0])
    return _example(task, row, question, gold, "choice", choices=[c.strip() for c in choices])


# --- symbolic / yes-no --------------------------------------------------------------------------------------


def kojima_plain(answer_type: str) -> Callable[..., Example]:
    """Coin Flip and Last Letters: Kojima et al.'s {question, answer} examples, used as they are."""

    def parse(row: Row, task: str, **_: Any) -> Example:
        return _example(task, row, row.text("question"), row.text("answer"), answer_type)

    return parse


def strategy_qa(row: Row, task: str, **_: Any) -> Example:
    """BIG-bench StrategyQA: gold "Yes"/"No" from target_scores (lower-cased only when scored); the
    rationale is `target` without its leading "Yes. "/"No. ". The original StrategyQA release (question,
    answer: bool, facts, decomposition) is accepted too: its facts become the rationale (the BIG-bench target
    is built from them) and decomposition/facts go to meta."""
    meta: dict[str, Any] = {}
    if "decomposition" in row.data:
        meta["decomposition"] = row.get("decomposition", list)
    if "facts" in row.data:
        meta["facts"] = row.get("facts", list)
    if "input" not in row.data and "question" in row.data:  # original StrategyQA format
        ans = row.get("answer", bool)
        rationale = " ".join(meta.get("facts", [])) or None
        return _example(
            task, row, row.text("question"), "Yes" if ans else "No", "yes_no", rationale=rationale, meta=meta
        )
    if row.get("target_scores.Yes") == 1:
        gold = "Yes"
    elif row.get("target_scores.No") == 1:
        gold = "No"
    else:
        raise row.fail("target_scores", "neither 'Yes' nor 'No' scores 1")
    target = row.text("target")
    if target.startswith("Yes. "):
        rationale = target[5:].strip()
    elif target.startswith("No. "):
        rationale = target[4:].strip()
    else:
        raise row.fail("target", f"expected to start with 'Yes. ' or 'No. ', got {target[:20]!r}")
    return _example(task, row, row.text("input"), gold, "yes_no", rationale=rationale, meta=meta)


# --- out-of-domain sets (not in Fine-tune-CoT; our choices) -------------------------------------------------

_ASDIV_NUMBER = re.compile(r"\s*(-?[\d,]*\.?\d+)\s*(?:\(.*\))?\s*")
_ASDIV_FRACTION = re.compile(r"\s*(-?\d+)\s*/\s*(\d+)\s*(?:\(.*\))?\s*")


def asdiv_answer(raw: str) -> str | None:
    """Numeric gold of an ASDiv answer ("9 (apples)" -> "9", "5/2" -> "2.5"); None when not one number
    (names, times, ratios like "3:4", several answers like "7; 8")."""
    m = _ASDIV_NUMBER.fullmatch(raw)
    if m:
        return m.group(1).replace(",", "")
    m = _ASDIV_FRACTION.fullmatch(raw)
    if m and int(m.group(2)) != 0:
        return str(int(m.group(1)) / int(m.group(2)))
    return None


def asdiv(row: Row, task: str, **_: Any) -> Example | None:
    # Question as SVAMP (Body + " " + Question): our choice, Fine-tune-CoT has no ASDiv.
    question = row.text("Body").strip() + " " + row.text("Question").strip()
    gold = asdiv_answer(row.text("Answer"))
    if gold is None:
        return None  # not a single number: skipped (counted by the loader)
    meta = {k: row.data[k] for k in ("ID", "Grade", "Solution-Type", "Formula", "Answer") if k in row.data}
    return _example(task, row, question, gold, "number", meta=meta)


_MASK = re.compile(r"\bnumber(\d+)\b")


def _plain_number(s: str) -> str:
    """ "8.0" -> "8", "0.5" -> "0.5" (MAWPS numbers are stored as floats; the text had plain numbers)."""
    try:
        v = float(s)
    except ValueError:
        return s
    return str(int(v)) if v.is_integer() and "e" not in s.lower() else s


def mawps(row: Row, task: str, **_: Any) -> Example:
    """MAWPS from the SVAMP repo's CSVs: numbers are masked as number0, number1, ... and restored here."""
    numbers = row.text("Numbers").split()
    question = row.text("Question")

    def unmask(m: re.Match) -> str:
        k = int(m.group(1))
        if k >= len(numbers):
            raise row.fail("Numbers", f"has {len(numbers)} values but the question uses number{k}")
        return _plain_number(numbers[k])

    answer = row.text("Answer").strip()
    try:
        float(answer)
    except ValueError:
        raise row.fail("Answer", f"not a number: {answer!r}") from None
    return _example(
        task, row, _MASK.sub(unmask, question), answer, "number", meta={"equation": row.data.get("Equation")}
    )
