"""Solution Guidance (SG, SGFT methods.md section 3): prompts, SG text, the filter, the reference SG writer.

- **Prompts** (3.3): the teacher's SG prompt variants I-V; only Prompt IV's wording is known exactly, the
  others are completed by us and say so. The user message is ``{prompt}\\n\\n{question}``. The guide model is
  trained and queried with the same message (3.3: Prompt IV "for both the teacher and the guide").
- **SG text**: steps are parsed from any ``Step k:`` / ``k.`` / ``k)`` lines (markdown bullets and bold
  tolerated; text before the first step dropped, continuation lines joined) and written back as
  ``Step 1: ...\\nStep 2: ...`` (our choice, 3.3).
- **Filter** (3.4): 2..6 steps, no arithmetic expression, no ``=`` before a digit, no final-answer statement,
  no number of 5+ digits, none of the symbols ``× ÷ ∑ ∫ √ ^``; each failure is a named reason. Thresholds are
  :class:`FilterRules` fields (config ``method.extra.filter``). The retry instruction is the
  re-implementation's text.
- **Response prompt** (3.5): ``Question: {question}\\nSolution Guidance:\\n{sg}\\nAnswer:``.
- **Reference SG** (the offline teacher; our choice throughout, see experiments/sgft/README.md): embedded
  tasks from the solution trace (arithmetic: the operation of each step, never a number; coin flip / last
  letters: the person / word to check, grouped to at most 6 steps); GSM8K-style
  solutions with every result removed (operators written as words, numbers not in the question replaced by
  "the earlier result"); StrategyQA from its decomposition when the data has one, else one step per fact.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .benchmarks.record import Example

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
                         "(method.extra.n_prompt_examples > 0)")
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
    """The response model's input (methods.md 3.5; ``method.extra.response_prompt`` replaces the template)."""
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
# The filter (methods.md 3.4)

REASONS = ("too_few_steps", "too_many_steps", "arithmetic_expression", "equals_number", "final_answer",
           "long_number", "math_symbol", "number")
_ARITH = re.compile(r"\d+\s*[-+*/]\s*\d+")  # 3.4's `\d+ [+-*/] \d+`, spaces optional
_EQUALS_NUMBER = re.compile(r"=\s*[-$]?\d")
_FINAL_ANSWER = re.compile(
    r"\b(?i:answer)\s*(?i:is|was|will be|=|:)\s*(?:\(?[A-F]\)|[A-F]\b|[-$]?\d|(?i:yes|no)\b)")
_DIGIT_GROUPS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_DIGITS = re.compile(r"\d+")


@dataclass
class FilterRules:
    """The SG filter's thresholds and switches (methods.md 3.4; config ``method.extra.filter``)."""

    min_steps: int = 2
    max_steps: int = 6
    max_number_digits: int = 4  # a number with more digits is rejected (3.4: "5 or more digits")
    math_symbols: str = "×÷∑∫√^"
    arithmetic: bool = True  # reject `\d+ [+-*/] \d+`
    equals_number: bool = True  # reject `=` followed by a digit
    final_answer: bool = True  # reject "the answer is 5", "answer is (C)", "answer: yes"
    any_number: bool = False  # stricter than 3.4 (our option): reject any digit at all


def check_sg(text: str, rules: FilterRules | None = None) -> tuple[list[str], list[str]]:
    """(parsed steps, rejection reasons); no reasons = the SG passes. Rules 2-6 read the steps only
    (a preamble the parser drops is not part of the training target)."""
    rules = rules or FilterRules()
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
    if rules.final_answer and _FINAL_ANSWER.search(body):
        reasons.append("final_answer")
    if any(len(d) > rules.max_number_digits for d in _DIGITS.findall(_DIGIT_GROUPS.sub("", body))):
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


# --------------------------------------------------------------------------------------------------------
# The reference SG writer (the offline teacher's answers to SG prompts)

_NUM = re.compile(r"\$?\d[\d,]*(?:\.\d+)?%?")
_OPERATOR_WORDS = (  # operators between operands, written as words
    (re.compile(r"(?<=[\w)])\s*\*\s*(?=[\w($])"), "times"),
    (re.compile(r"(?<=\d)\s*x\s*(?=\d)"), "times"),
    (re.compile(r"(?<=[\w)])\s*/\s*(?=[\w($])"), "divided by"),
    (re.compile(r"(?<=[\w)])\s*\+\s*(?=[\w($])"), "plus"),
    (re.compile(r"(?<=[\w)])\s+-\s+(?=[\w($])"), "minus"),
)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _group(items: list[tuple[str, list[int]]], limit: int, join) -> list[tuple[str, list[int]]]:
    """Merge consecutive items into at most ``limit`` groups (sizes as even as possible)."""
    if len(items) <= limit:
        return items
    out, start = [], 0
    for g in range(limit):
        size = len(items) // limit + (1 if g < len(items) % limit else 0)
        chunk = items[start:start + size]
        start += size
        out.append((join([t for t, _ in chunk]), [i for _, idx in chunk for i in idx]))
    return out


# Arithmetic SG names the operation of each step, never a number, name or object (our choice: the
# tiny CPU guide learns this mapping from a few hundred examples; copying names is what it learns slowest).
_ARITH_STEPS = {
    "start": "Note the starting amount.",
    "start_groups": "Multiply the number of groups by the amount in each.",
    "add": "Add the amount gained.",
    "sub": "Subtract the amount lost.",
    "groups": "Multiply the number of groups by the amount in each, then add it.",
    "share": "Divide the total into equal shares.",
}


def _arith_plan(trace: list[dict]) -> list[tuple[str, str]]:
    """(SG step, worked step) per plan item; the worked step is its equation(s), e.g. ``13 + 17 = 30.``"""
    values = [s["result"] for s in trace]  # integers: the generator keeps every value whole
    plan: list[tuple[str, str]] = []
    for s in trace:
        if s["op"] is None:
            work = f"{s['value']}."
        else:
            a, b = (values[r] if r is not None else x for x, r in zip(s["args"], s["refs"]))
            work = f"{a} {s['op']} {b} = {s['result']}."
        if s["kind"] == "add_groups":  # the add that completes a "groups" step belongs to it
            plan[-1] = (plan[-1][0], f"{plan[-1][1]} {work}")
        elif s["kind"] in _ARITH_STEPS:
            plan.append((_ARITH_STEPS[s["kind"]], work))
        else:
            raise ValueError(f"unknown arithmetic step kind {s['kind']!r}")
    return plan


def embedded_guidance_plan(example: Example, max_steps: int = 6) -> list[tuple[str, str]]:
    """(SG step, worked step) pairs of an embedded example. Arithmetic: the operation to do / its equation.
    Coin flip and last letters: what to check per person / word (at most ``max_steps`` steps, people or
    words grouped when there are more) / the phrasing-0 rationale sentences of
    ``embedded.rationale_sentences`` that do it (its closing sentence joins the last step)."""
    from .benchmarks.embedded import rationale_sentences, trace_generator

    trace = list(example.trace or [])
    gen = trace_generator(trace)
    if gen == "arithmetic":
        return _arith_plan(trace)
    sentences, _ = rationale_sentences(example, 0)
    items: list[tuple[str, list[int]]]
    if gen == "coin_flip":
        people = [(f"Check whether {s['name']} flips the coin.", [i + 1]) for i, s in enumerate(trace)]
        people = _group(people, max(1, max_steps - 2),
                        lambda ts: "Check whether " + _and([t[len("Check whether "):-len(" flips the coin.")]
                                                            for t in ts]) + " flip the coin.")
        items = [("Note that the coin starts heads up.", [0]), *people,
                 ("Count the flips: after an even number the coin is still heads up.", [])]
    else:  # last_letters
        words = [(f'Find the last letter of "{s["word"]}".', [i]) for i, s in enumerate(trace)]
        words = _group(words, max(1, max_steps - 1),
                       lambda ts: "Find the last letters of " + _and([t[len("Find the last letter of "):-1]
                                                                      for t in ts]) + ".")
        items = [*words, ("Join the letters in order.", [])]
    items[-1] = (items[-1][0], [*items[-1][1], len(sentences) - 1])
    return [(t, " ".join(sentences[i] for i in idx)) for t, idx in items]


def guided_solution(example: Example) -> str:
    """What the embedded response model learns to write after ``Answer:`` (its pre-training target): one
    ``Step k:`` line per reference SG step doing that step's work, then ``The answer is {answer}.``"""
    lines = [f"Step {k}: {work}" for k, (_, work) in enumerate(embedded_guidance_plan(example), 1)]
    return " " + "\n".join(lines) + f"\n{ANSWER_PREFIX} {example.answer.strip()}."


def worked_solution(example: Example) -> str:
    """The same work without guidance: the embedded response model's zero-shot-CoT stage-1 target."""
    return " " + " ".join(work for _, work in embedded_guidance_plan(example))


def _solution_steps(example: Example) -> list[str]:
    """GSM8K-style solution lines with every computed value removed (our choice, see the module docstring)."""
    question_numbers = {n.strip("$%").replace(",", "") for n in _NUM.findall(example.question)}
    steps = []
    for line in (example.rationale or "").splitlines():
        line = re.sub(r"<<[^>]*>>", "", line)
        line = re.sub(r"\s*=\s*" + _NUM.pattern, "", line)  # "= 36": a result

        def swap(m: re.Match) -> str:
            given = m.group(0).strip("$%").replace(",", "") in question_numbers
            return m.group(0) if given else "the earlier result"

        line = _NUM.sub(swap, line)
        for pattern, word in _OPERATOR_WORDS:
            line = pattern.sub(f" {word} ", line)
        line = re.sub(r"\s+", " ", line).strip()
        if re.search(r"[A-Za-z]", line):
            steps.append(line)
    return steps


def _strategy_steps(example: Example) -> list[str]:
    decomposition = example.meta.get("decomposition")
    if decomposition:
        return [str(q).strip() for q in decomposition if str(q).strip()]
    facts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", example.rationale or "") if s.strip()]
    steps = [f"Recall that {f[0].lower()}{f[1:]}" for f in facts]
    return steps + ["Decide whether these facts mean yes or no."]


def reference_guidance(example: Example, max_steps: int = 6) -> list[str] | None:
    """The reference SG steps of an example (None when it has neither a trace nor a rationale)."""
    if example.trace:
        return [t for t, _ in embedded_guidance_plan(example, max_steps)]
    if not example.rationale and not example.meta.get("decomposition"):
        return None
    if example.answer_type == "yes_no":
        return _strategy_steps(example)
    return _solution_steps(example)


def _strict(steps: list[str], rules: FilterRules) -> list[str]:
    """The reference teacher's answer to the retry prompt: no digits at all, 2..6 steps (our choice)."""
    steps = [re.sub(r"\s+", " ", re.sub(r"[-$]?\d[\d,.]*%?", "some", s)).strip() for s in steps]
    steps = [re.sub(r"[=×÷∑∫√^]", " ", s) for s in steps]
    if len(steps) > rules.max_steps:
        items = _group([(s, []) for s in steps], rules.max_steps, lambda ts: " Then ".join(ts))
        steps = [t for t, _ in items]
    while len(steps) < rules.min_steps:
        steps.append("Check that the result answers the question.")
    return steps


def _sloppy(steps: list[str], example: Example, rng: random.Random) -> list[str]:
    """A first draft that breaks one filter rule (the reference teacher's ``error_rate``; our choice)."""
    kind = rng.choice(("arithmetic", "final_answer", "one_step"))
    if kind == "arithmetic":
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        return steps[:-1] + [f"{steps[-1]} For example, {a} + {b} = {a + b}."]
    if kind == "final_answer":
        return steps + [f"So the answer is {example.answer.strip()}."]
    return [" ".join(steps)]


SG_KIND_NAME = "sgft_guidance_v1"  # bump when the reference SG text changes (it keys the teacher cache)


def reference_guidance_kind(examples: Sequence[Example], rules: FilterRules | None = None):
    """A :class:`~sgft_lab.teachers.reference.PromptKind` answering :func:`sg_prompt` requests about
    ``examples`` (any with a trace, a rationale or a decomposition). With probability ``error_rate`` a draft
    breaks one filter rule; a retry prompt is answered by :func:`_strict`, also drafted sloppily at
    ``error_rate``, so some questions are dropped. Unknown questions get the teacher's "I am not sure."."""
    from .teachers.reference import UNSURE, PromptKind

    rules = rules or FilterRules()
    known = {ex.question.strip(): ex for ex in examples}

    def match(prompt: str):
        return split_sg_prompt(prompt, known)

    def respond(teacher, fields, req, rng: random.Random) -> str:
        ex = known.get(fields["question"].strip())
        steps = reference_guidance(ex, rules.max_steps) if ex is not None else None
        if not steps:
            return UNSURE
        if fields["retry"]:
            steps = _strict(steps, rules)
        if rng.random() < teacher.error_rate:
            steps = _sloppy(steps, ex, rng)
        return format_steps(steps)

    return PromptKind(SG_KIND_NAME, match, respond)
