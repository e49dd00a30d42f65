"""Prompt and student-sample formats, exact strings from Fine-tune-CoT (methods.md 2.2, 2.4, 5).

``pot`` is FDD's program-of-thought format (methods.md 4.2); ``dss_predict`` / ``dss_explain`` are Distilling
Step-by-Step's two task-prefixed formats (methods.md 5). Decoder labels start with one space; EOS is appended at tokenisation time (students/encode.py), T5
tokenizers add their own. Fields are stripped for student samples (the camera-ready behaviour); the
teacher's stage-2 prompt is NOT stripped (the paper's GPT-3 behaviour, see zs_cot_stage2).
"""

from __future__ import annotations

from dataclasses import dataclass

DECODER, ENC_DEC = "decoder", "encoder_decoder"


@dataclass
class Pair:
    """One training sample: the student's input and its target, plus where it came from."""

    input: str
    label: str
    example_id: str = ""
    source: str = ""  # e.g. "teacher:0" (sample index), "gold"
    # Which loss the sample trains (multi-task students: Distilling Step-by-Step's TASK_LABEL / TASK_RATIONALE,
    # weighted by StudentModule's task_weights); 0 for every single-task method.
    task: int = 0

    def to_dict(self) -> dict:
        return {"example_id": self.example_id, "source": self.source, "input": self.input, "label": self.label,
                "task": self.task}


# Task ids of a multi-task student (Pair.task; the index into StudentModule's task_weights).
TASK_LABEL, TASK_RATIONALE = 0, 1

# Templates whose student input is a plain rendering of the question (training formats).
STUDENT_TEMPLATES = ("ft_cot_token", "ft_token", "ft_cot_natural", "pot", "dss_predict", "dss_explain")

# Distilling Step-by-Step's task prefixes (Hsieh et al. 2023; google-research/distilling-step-by-step): one
# student, the label task and the rationale task told apart by the input's first word.
DSS_PREFIXES = {"dss_predict": "predict: ", "dss_explain": "explain: "}

# FDD's program-of-thought input suffix, exactly as on the zhuxunyu/math-codet5p-770m-py model card, with the
# typographic apostrophe (methods.md 4.2).
POT_SUFFIX = "\nProgram: Let\u2019s design executable python program (return ans) to solve the question."


def pot_prompt(question: str) -> str:
    """PoT input for the teacher and the student: the question, then the PoT suffix."""
    return question.strip() + POT_SUFFIX


def pot_label(program: str, family: str) -> str:
    """PoT target: the program (one leading space for decoders, like every decoder label)."""
    return (" " if family == DECODER else "") + program.strip()


def zs_cot_stage1(question: str) -> str:
    """Teacher stage 1 (rationale). Completion is stored as ``reasoning_completion``."""
    return f"Q: {question}\nA: Let's think step by step."


def zs_cot_stage2(stage1_prompt: str, reasoning_completion: str) -> str:
    """Teacher stage 2 (answer). Not stripped: the paper's GPT-3 runs joined raw strings."""
    return f"{stage1_prompt}{reasoning_completion}\nTherefore, the answer is"


def student_input(template: str, question: str, family: str) -> str:
    """The student's prompt for a template (what it is trained on and evaluated with)."""
    q = question.strip()
    if template in ("ft_cot_token", "ft_token"):
        return f"{q} ###" if family == DECODER else q
    if template == "ft_cot_natural":
        if family != DECODER:
            raise ValueError("ft_cot_natural is not supported for encoder-decoder students (as in Fine-tune-CoT)")
        return f"Q: {q}\n\nA: Let's think step by step.\n\n"
    if template == "zs":
        return f"Q: {q}\n\nA:" if family == DECODER else f"question: {q}"
    if template == "pot":
        return pot_prompt(q)
    if template in DSS_PREFIXES:  # Fine-tune-CoT's ``###`` separator kept for decoders (our choice)
        return f"{DSS_PREFIXES[template]}{q}" + (" ###" if family == DECODER else "")
    raise ValueError(f"unknown student template {template!r}; known: {STUDENT_TEMPLATES + ('zs',)}")


def student_label(template: str, answer: str, family: str, rationale: str | None = None) -> str:
    """The training target. Decoder labels start with one space; the gold answer, never the teacher's."""
    a = answer.strip()
    sp = " " if family == DECODER else ""
    if template == "ft_cot_token":
        if rationale is None:
            raise ValueError("ft_cot_token needs a rationale")
        return f"{sp}{rationale.strip()} --> {a}"
    if template in ("ft_token", "dss_predict"):
        return f"{sp}{a}"
    if template == "dss_explain":  # the rationale alone: the label is the other task's target
        if rationale is None:
            raise ValueError("dss_explain needs a rationale")
        return f"{sp}{rationale.strip()}"
    if template == "pot":  # the target is the program; the gold answer is what running it must give
        if rationale is None:
            raise ValueError("pot needs a program")
        return pot_label(rationale, family)
    if template == "ft_cot_natural":
        if family != DECODER:
            raise ValueError("ft_cot_natural is not supported for encoder-decoder students")
        if rationale is None:
            raise ValueError("ft_cot_natural needs a rationale")
        # Fine-tune-CoT trains on "Therefore the answer is" (no comma) while its evaluator looks for the
        # comma form; reproduced as is (methods.md 1.3 quirks).
        return f" {rationale.strip()}\n\nTherefore the answer is {a}"
    raise ValueError(f"unknown student template {template!r}; known: {STUDENT_TEMPLATES}")
