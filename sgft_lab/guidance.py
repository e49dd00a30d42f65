"""Solution Guidance (SG, SGFT methods.md section 3): prompts, SG text, the filter.

- **Prompts** (3.3): the teacher's SG prompt variants I-V; only Prompt IV's wording is known exactly, the
  others are completed by us and say so. The user message is ``{prompt}\\n\\n{question}``. The guide model is
  trained and queried with the same message (3.3: Prompt IV "for both the teacher and the guide").
- **SG text**: steps are parsed from any ``Step k:`` / ``k.`` / ``k)`` lines (markdown bullets and bold
  tolerated; text before the first step dropped, continuation lines joined) and written back as
  ``Step 1: ...\\nStep 2: ...`` (our choice, 3.3).
- **Filter** (3.4): 2..6 steps, no arithmetic expression, no ``=`` before a digit, no final-answer statement,
  no number of 5+ digits, none of the symbols ``× ÷ ∑ ∫ √ ^``; each failure is a named reason. Thresholds are
  :class:`FilterRules` fields (config ``method.filter``). The rules were written for GSM8K; a departure (ours):
  they are task-aware, by the benchmark's answer kind (``method.filter.answer_kind``, TASK_RULES): yes/no and
  choice tasks keep the step count, ``=`` and symbol rules but drop the arithmetic-expression and long-number
  rules (dates, ranges, quoted facts), and their final-answer rule looks for a verdict or an option letter.
  The retry instruction is the re-implementation's text.
- **Response prompt** (3.5): ``Question: {question}\\nSolution Guidance:\\n{sg}\\nAnswer:``.
- **Reference SG**: the offline teacher's SG writer is sgft_lab/teachers/reference_sg.py.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Optional

# --------------------------------------------------------------------------------------------------------
# Prompts (methods.md 3.3)

PROMPT_IV = ("Please generate a step-by-step solution for the following problem with no calculations.\n"
             " You don't need to solve it, just output the steps in 2 to 6 steps.")  # exact, incl. the "\n "
EXAMPLES_HEADER = "Examples for the SG data are as follows:"  # III and V (known wording)
# Departure: only the quoted fragments of I-III are known (3.3); the rest of their wording is ours.
PROMPT_I = ("Analyse the following problem and fill in these fields before giving the solution steps:\n"
            "[Problem Type]\n[Solution Objective]\n[Constraints]\n[Priorities and Considerations]\n"
            "Then generate a step-by-step solution with no calculations in 2 to 6 steps.")
PROMPT_II = ("Please generate a step-by-step solution for the following problem.\n"
             "You don't need to solve it; just output the steps in 2 to 6 steps.")
PROMPT_III = ("Please generate a step-by-step solution for the following problem.\n"
              "You don't need to solve it, just output the steps in 2 to 6 steps.")
PROMPTS = {"I": PROMPT_I, "II": PROMPT_II, "III": PROMPT_III, "IV": PROMPT_IV, "V": PROMPT_IV}
FEW_SHOT = {"III", "V"}
RETRY_INSTRUCTION = "Do not include any calculations or numeric operations; only describe high-level steps."
RESPONSE_PROMPT = "Question: {question}\nSolution Guidance:\n{sg}\nAnswer:"
ANSWER_PREFIX = "The answer is"


def sg_prompt(question: str, variant: str = "IV", examples: Sequence[tuple[str, str]] = (),
              retry: bool = False) -> str:
    """The teacher's (and the guide's) SG request: ``{instruction}\\n\\n{question}``.

    ``examples``: (question, SG) pairs for the few-shot variants III and V (required there, refused
    elsewhere).
    ``retry``: the re-implementation's extra instruction, on its own line after the instruction.
    """
    if variant not in PROMPTS:
        raise ValueError(f"unknown SG prompt variant {variant!r}; known: {', '.join(PROMPTS)}")
    if variant in FEW_SHOT and not examples:
        raise ValueError(f"SG prompt {variant} is few-shot: it needs examples "
                         "(method.n_prompt_examples > 0)")
    if variant not in FEW_SHOT and examples:
        raise ValueError(f"SG prompt {variant} is zero-shot: it takes no examples")
    text = PROMPTS[variant]
    if retry:
        text += "\n" + RETRY_INSTRUCTION
    if examples:
        shots = "\n\n".join(f"Question: {q.strip()}\nSolution Guidance:\n{sg.strip()}" for q, sg in examples)
        text += f"\n{EXAMPLES_HEADER}\n{shots}"
    return f"{text}\n\n{question.strip()}"


def split_sg_prompt(prompt: str, known_questions: Any = None) -> dict[str, Any] | None:
    """Fields of an :func:`sg_prompt` (variant, retry, question), or None if ``prompt`` is not one.

    The question is the text after a blank line: the first such suffix found in ``known_questions`` (a
    question may itself hold a blank line), else the text after the last blank line.
    """
    variant = next((v for v in ("IV", "I", "II", "III") if prompt.startswith(PROMPTS[v])), None)
    if variant is None or "\n\n" not in prompt:
        return None
    head_end = [m.start() for m in re.finditer("\n\n", prompt)]
    cut = head_end[-1]
    if known_questions is not None:
        cut = next((i for i in head_end if prompt[i + 2:] in known_questions), cut)
    head, question = prompt[:cut], prompt[cut + 2:]
    few_shot = f"\n{EXAMPLES_HEADER}\n" in head
    if variant == "IV" and few_shot:
        variant = "V"
    return {"variant": variant, "retry": RETRY_INSTRUCTION in head, "question": question}


def response_prompt(question: str, sg: str, template: str = RESPONSE_PROMPT) -> str:
    """The response model's input (methods.md 3.5; ``method.response_prompt`` replaces the template)."""
    return template.format(question=question.strip(), sg=sg.strip())


# --------------------------------------------------------------------------------------------------------
# SG text: parsing and formatting

_STEP_LINE = re.compile(r"^(?:step\s*(\d+)\s*[:.)\-]|(\d+)[.)](?=\s|$))\s*", re.IGNORECASE)


def parse_steps(text: str) -> list[str]:
    """The steps of an SG text: lines starting ``Step k:``, ``k.`` or ``k)`` (after markdown ``#*->``);
    text before the first step is dropped, later non-step lines continue the current step."""
    steps: list[str] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("#*->").strip()
        if not line:
            continue
        m = _STEP_LINE.match(line)
        if m:
            steps.append(line[m.end():].strip().strip("*").strip())
        elif steps:
            steps[-1] = f"{steps[-1]} {raw.strip()}".strip()
    return [s for s in steps if s]


def format_steps(steps: Sequence[str]) -> str:
    """``Step 1: ...\\nStep 2: ...`` (the SG training target and what the response model reads)."""
    return "\n".join(f"Step {i}: {s.strip()}" for i, s in enumerate(steps, 1))


def normalize_sg(text: str) -> str:
    """The SG as stored: its steps renumbered, or the stripped text when no step can be parsed."""
    steps = parse_steps(text)
    return format_steps(steps) if steps else text.strip()


# --------------------------------------------------------------------------------------------------------
# The filter (methods.md 3.4), task-aware

REASONS = ("too_few_steps", "too_many_steps", "arithmetic_expression", "equals_number", "final_answer",
           "long_number", "math_symbol", "number")
ANSWER_KINDS = ("number", "yes_no", "choice", "text")  # = benchmarks.record.ANSWER_TYPES
_ARITH = re.compile(r"\d+\s*[-+*/]\s*\d+")  # 3.4's `\d+ [+-*/] \d+`, spaces optional
_EQUALS_NUMBER = re.compile(r"=\s*[-$]?\d")
_DIGIT_GROUPS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DIGITS = re.compile(r"\d+")

# Final-answer statements (rule 4), by the task's answer kind. The lead: "answer is/was/=/:" (also "the final /
# correct / best answer would be ..."), so "write down the answer" and "the answer is the total" pass.
_LEAD = r"\b(?i:(?:final|correct|right|best)\s+)?(?i:answer)\s*(?i:is|was|will be|would be|should be|=|:)\s*"
_VERDICT = r"(?i:yes|no)\b(?!\s*(?:or|and|/)\s*(?i:yes|no)\b)"  # "yes" / "no", not "yes or no"
_LETTER = r"\(?[A-F]\)?(?![\w'])"  # a choice letter: C, (C), C.
# The re-implementation's rule 4 as written (3.4): the lead, then a number, a choice letter or yes/no.
_PAPER_ANSWER = _LEAD + r"(?:\(?[A-F]\)|[A-F]\b|[-$]?\d|(?i:yes|no)\b)"
FINAL_ANSWER = {
    "number": re.compile(_PAPER_ANSWER),
    "text": re.compile(_PAPER_ANSWER),
    # yes/no tasks (StrategyQA, coin flip): "the answer is no", a step opening with the verdict ("Yes, it is"),
    # "so, yes."; a step that names both ("decide whether the answer is yes or no") is a plan, not an answer.
    "yes_no": re.compile(_LEAD + _VERDICT + r"|^(?i:yes|no)\s*(?:[,.!:;]|$)"
                         r"|\b(?i:so|therefore|thus|hence)\s*,?\s*(?i:yes|no)\s*[.,!;]", re.MULTILINE),
    # choice tasks (CommonsenseQA): "the answer is (C)", "option C is correct", "choose (C)"; naming or
    # comparing options ("rule out (A) and (C)", "choose between (B) and (D)") passes.
    "choice": re.compile(_LEAD + r"(?i:option\s+|choice\s+)?" + _LETTER
                         + r"|\b(?i:option|choice)\s*" + _LETTER + r"\s+(?i:is)\s+(?i:the\s+)?"
                         r"(?i:correct|right|best|answer)"
                         + r"|\b(?i:correct|right|best)\s+(?i:option|choice)\s+(?i:is)\s+" + _LETTER
                         + r"|\b(?i:choose|select|pick)\s+(?i:option\s+|choice\s+)?" + _LETTER),
}
# The rules that depend on the task, per answer kind (``None`` in FilterRules = this table's value).
# number / text: 3.4 as written (GSM8K, MultiArith). yes_no / choice: an expression like "1939-1945", "9/11" or
# "24/7" is a date, range or name there, and a long number is a quoted fact ("29,029 feet"), not a calculation;
# a computed result ("= 23") and the math symbols are still rejected.
TASK_RULES = {
    "number": {"arithmetic": True, "long_number": True},
    "text": {"arithmetic": True, "long_number": True},
    "yes_no": {"arithmetic": False, "long_number": False},
    "choice": {"arithmetic": False, "long_number": False},
}


@dataclass
class FilterRules:
    """The SG filter's thresholds and switches (methods.md 3.4; config ``method.filter``). ``answer_kind``
    chooses the task's rule set (TASK_RULES, FINAL_ANSWER); ``auto``: the benchmark's answer type
    (:func:`rules_for`). A switch left at None takes the rule set's value."""

    answer_kind: str = field(default="auto", metadata={"choices": ("auto", *ANSWER_KINDS)})
    min_steps: int = 2
    max_steps: int = 6
    arithmetic: Optional[bool] = None  # reject `\d+ [+-*/] \d+` (None: on for number / text answers)
    equals_number: bool = True  # reject `=` followed by a digit (a computed result)
    final_answer: bool = True  # reject a final-answer statement of the task's kind (FINAL_ANSWER)
    long_number: Optional[bool] = None  # reject a number of more than max_number_digits digits
    max_number_digits: int = 4  # 3.4: "5 or more digits" is rejected
    math_symbols: str = "×÷∑∫√^"
    any_number: bool = False  # stricter than 3.4 (our option): reject any digit at all


def rules_for(rules: FilterRules, answer_type: str | None) -> FilterRules:
    """``rules`` for a benchmark whose answers are ``answer_type`` (one of ANSWER_KINDS): ``auto`` becomes that
    type (unknown: number, 3.4 as written) and every switch left at None takes the type's TASK_RULES value."""
    kind = (answer_type or "number") if rules.answer_kind == "auto" else rules.answer_kind
    return replace(rules, answer_kind=kind,
                   **{k: v for k, v in TASK_RULES[kind].items() if getattr(rules, k) is None})


def check_sg(text: str, rules: FilterRules | None = None) -> tuple[list[str], list[str]]:
    """(parsed steps, rejection reasons); no reasons = the SG passes. Rules 2-6 read the steps only
    (a preamble the parser drops is not part of the training target)."""
    rules = rules_for(rules or FilterRules(), None)
    steps = parse_steps(text)
    body = "\n".join(steps)
    reasons = []
    if len(steps) < rules.min_steps:
        reasons.append("too_few_steps")
    if len(steps) > rules.max_steps:
        reasons.append("too_many_steps")
    if rules.arithmetic and _ARITH.search(body):
        reasons.append("arithmetic_expression")
    if rules.equals_number and _EQUALS_NUMBER.search(body):
        reasons.append("equals_number")
    if rules.final_answer and FINAL_ANSWER[rules.answer_kind].search(body):
        reasons.append("final_answer")
    if rules.long_number and any(len(d) > rules.max_number_digits
                                 for d in _DIGITS.findall(_DIGIT_GROUPS.sub("", body))):
        reasons.append("long_number")
    if any(ch in body for ch in rules.math_symbols):
        reasons.append("math_symbol")
    if rules.any_number and _DIGITS.search(body):
        reasons.append("number")
    return steps, reasons


@dataclass
class FilterReport:
    """Counts of one SG generation pass (written to results.json under ``filter``)."""

    questions: int = 0
    passed_first: int = 0
    retried: int = 0
    passed_retry: int = 0
    dropped: int = 0
    rejections_first: Counter = field(default_factory=Counter)  # reason -> SGs rejected for it (1st attempt)
    rejections_retry: Counter = field(default_factory=Counter)

    @property
    def kept(self) -> int:
        return self.passed_first + self.passed_retry

    def to_dict(self) -> dict:
        return {"questions": self.questions, "kept": self.kept, "passed_first_attempt": self.passed_first,
                "retried": self.retried, "passed_retry": self.passed_retry, "dropped": self.dropped,
                "pass_rate": round(self.kept / self.questions, 4) if self.questions else 0.0,
                "rejections_first_attempt": {r: self.rejections_first.get(r, 0) for r in REASONS},
                "rejections_retry": {r: self.rejections_retry.get(r, 0) for r in REASONS}}
