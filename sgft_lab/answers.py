"""Answer extraction and scoring, exactly as Fine-tune-CoT's evaluator (methods.md section 1.3).

Mirrors ``src/evaluation/evaluator.py`` of itsnamgyu/reasoning-teacher, quirks included (capital letters
anywhere count as choices, ``18.0 != 18`` on GSM8K/MultiArith, the comma in the ``ft_cot_natural`` prefix,
Last Letter scoring the whole remaining text). Every method scores through :func:`score`; the name of
this rule set in reports is ``ftcot``.

Steps: (1) the template fixes a prefix; (2) prefix found -> first candidate after its first occurrence,
prefix expected but absent -> last candidate of the whole completion, no prefix -> first candidate;
(3) candidates and comparison depend on the task key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Union

# The 12 Fine-tune-CoT task keys, then the two extra numeric benchmarks (not in the official evaluator).
FTCOT_TASKS = (
    "single_eq",
    "addsub",
    "multiarith",
    "gsm8k",
    "aqua",
    "svamp",
    "date_understanding",
    "tracking_shuffled_objects",
    "last_letter_concatenation",
    "coin_flip",
    "commonsense_qa",
    "strategy_qa",
)
TASKS = FTCOT_TASKS + ("asdiv", "mawps")

# Template -> prefix (PREDICTION_PREFIXES in the official code; it also has ``ft_natural``: no prefix).
PREFIXES: dict[str, str | None] = {
    "zs": None,
    "zs_cot": None,
    "ft_token": None,
    "ft_natural": None,
    "ft_cot_token": "-->",
    "ft_cot_natural": "Therefore, the answer is",  # comma kept although training labels lack it (quirk)
    "fs_cot": "The answer is",
    "dss_predict": None,  # Distilling Step-by-Step's label task (ours, not in the official code): as ft_token
}
TEMPLATES = tuple(PREFIXES)

_STRING_NUMBER_TASKS = ("gsm8k", "multiarith")  # compared as strings: "18.0" != "18"
# Float tolerance per task. asdiv: 1e-4 is the project's choice (methods.md 1.1); mawps follows svamp.
_FLOAT_TOLERANCE = {"addsub": 1e-6, "svamp": 1e-6, "single_eq": 1e-6, "mawps": 1e-6, "asdiv": 1e-4}
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
_LETTER_RE = {
    "aqua": re.compile(r"[ABCDE]"),
    "commonsense_qa": re.compile(r"[ABCDE]"),
    "date_understanding": re.compile(r"[ABCDEF]"),
    "tracking_shuffled_objects": re.compile(r"[ABC]"),
}
_YES_NO_SEP = re.compile("\"|'|\n|\\.|\\s|:|,")  # replaced by a space, then split on " "
_LAST_LETTER_DROP = re.compile("\"|'|\n|\\.|\\s")  # deleted
_ASDIV_UNIT = re.compile(r"^\s*(\S+)\s*\(.*\)\s*$")  # ASDiv's raw "9 (apples)"


class _FromTemplate:
    """Default of ``prefix``: take the prefix from the template (an explicit None means no prefix)."""

    def __repr__(self) -> str:
        return "FROM_TEMPLATE"


FROM_TEMPLATE = _FromTemplate()
Prefix = Union[str, None, _FromTemplate]


@dataclass
class Scored:
    """One scored completion.

    extracted: the chosen candidate as a string (``'18'``, ``'18.0'`` for float tasks, ``'B'``), or None.
    correct: the chosen candidate matches the gold answer.
    contains_answer: some candidate (after the prefix, when it was found) matches.
    correct_format: the prefix occurs in the completion, or the template has none.
    """

    extracted: str | None
    correct: bool
    contains_answer: bool
    correct_format: bool


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")


def resolve_prefix(template: str, prefix: Prefix = FROM_TEMPLATE) -> str | None:
    """The prefix to look for: ``prefix`` when given explicitly, else the template's."""
    if template not in PREFIXES:
        raise ValueError(f"unknown template {template!r}; known templates: {', '.join(TEMPLATES)}")
    return PREFIXES[template] if isinstance(prefix, _FromTemplate) else prefix


def candidates(task: str, text: str) -> list:
    """All answer candidates in ``text`` for ``task``, in order (floats for the float-compared tasks)."""
    _check_task(task)
    if task in _LETTER_RE:
        return _LETTER_RE[task].findall(text)
    if task in _STRING_NUMBER_TASKS or task in _FLOAT_TOLERANCE:
        found = _NUMBER_RE.findall(text.replace(",", ""))
        return [float(s) for s in found] if task in _FLOAT_TOLERANCE else found
    if task in ("strategy_qa", "coin_flip"):
        tokens = _YES_NO_SEP.sub(" ", text.lower()).split(" ")
        return [t for t in tokens if t in ("yes", "no")]
    # last_letter_concatenation: the whole cleaned text is the single candidate, even when empty.
    return [_LAST_LETTER_DROP.sub("", text)]


def normalize_gold(task: str, gold: str):
    """Gold answer as compared: commas deleted for numbers, float for float tasks, strategy_qa lower-cased."""
    _check_task(task)
    if not isinstance(gold, str):
        raise ValueError(f"task {task}: gold answer must be a string as stored, got {gold!r}")
    if task in _STRING_NUMBER_TASKS or task in _FLOAT_TOLERANCE:
        gold = gold.replace(",", "")
    if task == "strategy_qa":
        gold = gold.lower()
    if task in _FLOAT_TOLERANCE:
        if task == "asdiv":  # not in the official code: accept ASDiv's raw "9 (apples)" form too
            m = _ASDIV_UNIT.match(gold)
            gold = m.group(1) if m else gold
        try:
            return float(gold)
        except ValueError:
            raise ValueError(f"task {task}: gold answer {gold!r} is not a number") from None
    return gold


def _matches(task: str, pred, gold) -> bool:
    if pred is None:
        return False
    if task in _FLOAT_TOLERANCE:
        return abs(pred - gold) <= _FLOAT_TOLERANCE[task]
    return pred == gold


def _choose(task: str, prefix: str | None, completion: str) -> tuple[object, list]:
    """(chosen candidate or None, the candidate list it was chosen from)."""
    if not isinstance(completion, str):
        raise ValueError(f"completion must be a string, got {type(completion).__name__}")
    if prefix is None:
        found, first = candidates(task, completion), True
    else:
        index = completion.find(prefix)
        if index == -1:
            found, first = candidates(task, completion), False
        else:
            found, first = candidates(task, completion[index + len(prefix):]), True
    if not found:
        return None, found
    return (found[0] if first else found[-1]), found


def extract(task: str, template: str, completion: str, prefix: Prefix = FROM_TEMPLATE) -> str | None:
    """The predicted answer as a string (see :class:`Scored`), or None when there is no candidate."""
    _check_task(task)
    chosen, _ = _choose(task, resolve_prefix(template, prefix), completion)
    return None if chosen is None else str(chosen)


def score(task: str, template: str, completion: str, gold: str, prefix: Prefix = FROM_TEMPLATE) -> Scored:
    """Score one completion against the gold answer as stored.

    ``prefix`` overrides the template's prefix (e.g. SGFT scores with ``"The answer is"``); pass None to
    score with no prefix. Unknown task or template -> ValueError listing the known ones.
    """
    _check_task(task)
    pfx = resolve_prefix(template, prefix)
    chosen, found = _choose(task, pfx, completion)
    answer = normalize_gold(task, gold)
    return Scored(
        extracted=None if chosen is None else str(chosen),
        correct=_matches(task, chosen, answer),
        contains_answer=any(_matches(task, c, answer) for c in found),
        correct_format=pfx is None or pfx in completion,
    )


def accuracy(scored: Iterable[Scored | bool]) -> float:
    """Fraction (0..1) of correct items; an empty input gives 0.0."""
    flags = [s.correct if isinstance(s, Scored) else bool(s) for s in scored]
    return sum(flags) / len(flags) if flags else 0.0


# --------------------------------------------------------------------------------------------------------
# The strict rule (ours; reported beside the official one, never instead of it)

RULES = ("official", "strict")
_STRICT_NUMBER = re.compile(r"(?<![\w.])-?\$?\d[\d,]*(?:\.\d+)?")
_STRICT_LETTER = {task: re.compile(rf"(?<![A-Za-z])\(?([{letters}])\)?(?![A-Za-z])")
                  for task, letters in (("aqua", "A-E"), ("commonsense_qa", "A-E"), ("date_understanding", "A-F"),
                                        ("tracking_shuffled_objects", "A-C"))}
_STRICT_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def strict_answer(task: str, text: str) -> str | None:
    """The answer the strict rule reads in ``text`` (the part after the prefix): the first number (as a
    plain decimal: ``1,000`` -> ``1000``, ``75.0`` -> ``75``), a standalone choice letter (``A``, ``(A)``,
    ``A.``; never a letter inside a word), ``yes`` / ``no`` as words, or for Last Letter the first word
    without punctuation. None when there is none."""
    if task in _LETTER_RE:
        m = _STRICT_LETTER[task].search(text)
        return m.group(1) if m else None
    if task in _STRING_NUMBER_TASKS or task in _FLOAT_TOLERANCE:
        m = _STRICT_NUMBER.search(text)
        if not m:
            return None
        x = float(m.group(0).replace(",", "").replace("$", ""))
        return format_number(x)
    if task in ("strategy_qa", "coin_flip"):
        m = _STRICT_YES_NO.search(text)
        return m.group(1).lower() if m else None
    words = re.findall(r"[^\s\"'.,!?;:]+", text)
    return words[0] if words else None


def score_strict(task: str, template: str, completion: str, gold: str, prefix: Prefix = FROM_TEMPLATE) -> Scored:
    """The strict rule (ours): the answer is the text after the template's answer prefix (the whole completion
    when the template has none; no answer when the prefix is missing), read by :func:`strict_answer`;
    numbers compare as numbers (within 1e-6), letters, yes/no and words exactly (yes/no case-insensitively).
    It exists to show where the official rule's quirks (any capital letter is a choice, ``75.0`` != ``75``
    on GSM8K) change a number; tables print both."""
    _check_task(task)
    pfx = resolve_prefix(template, prefix)
    if not isinstance(completion, str):
        raise ValueError(f"completion must be a string, got {type(completion).__name__}")
    if pfx is None:
        text, found = completion, True
    else:
        index = completion.find(pfx)
        found = index != -1
        text = completion[index + len(pfx):] if found else ""
    pred = strict_answer(task, text)
    gold_text = gold.strip()
    if task in _STRING_NUMBER_TASKS or task in _FLOAT_TOLERANCE:
        want = normalize_gold(task, gold)
        correct = pred is not None and abs(float(pred) - float(want)) <= 1e-6
    elif task in ("strategy_qa", "coin_flip"):
        correct = pred is not None and pred == gold_text.lower()
    else:
        correct = pred is not None and pred == gold_text
    return Scored(extracted=pred, correct=correct, contains_answer=correct, correct_format=found)


# --------------------------------------------------------------------------------------------------------
# Numeric rules beside the official evaluator: FDD's executed program-of-thought answers (methods.md 4.3)
# and agreement between teacher samples of a new problem (no gold yet).

NUMERIC_TOLERANCE = 1e-4  # fdd_numeric (methods.md 4.3, our choice)


def as_number(value: object) -> float | None:
    """A float from an executed ``ans`` or an answer string ("1,000" -> 1000.0); None if not a number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).replace(",", "").strip())
    except ValueError:
        return None


def fdd_numeric(value: object, gold: str) -> bool:
    """The ``fdd_numeric`` rule: both are numbers and |value - gold| <= 1e-4."""
    a, b = as_number(value), as_number(gold)
    return a is not None and b is not None and abs(a - b) <= NUMERIC_TOLERANCE


def format_number(x: float) -> str:
    """An executed answer as a label string: ``12`` for 12.0, else up to 6 decimals."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def same_answer(task: str, a: str, b: str) -> bool:
    """Two extracted CoT answers agree under the task's comparison rule (:func:`score`)."""
    return score(task, "zs", a, b).correct


def majority(values, same) -> tuple[object, list[int]] | None:
    """The value most samples agree with (ties: the earliest) and the indices agreeing with it."""
    best: tuple[object, list[int]] | None = None
    for v in values:
        if v is None:
            continue
        agree = [i for i, w in enumerate(values) if w is not None and same(v, w)]
        if best is None or len(agree) > len(best[1]):
            best = (v, agree)
    return best
