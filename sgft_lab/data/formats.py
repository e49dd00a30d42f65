"""Prompt and student-sample formats, exact strings from Fine-tune-CoT (methods.md 2.2, 2.4, 5).

Decoder labels start with one space; EOS is appended at tokenisation time (students/encode.py), T5
tokenizers add their own. Fields are stripped for student samples (the camera-ready behaviour); the
teacher's stage-2 prompt is NOT stripped (the paper's GPT-3 behaviour, see zs_cot_stage2).
"""

from __future__ import annotations

DECODER, ENC_DEC = "decoder", "encoder_decoder"

# Templates whose student input is a plain rendering of the question (training formats).
STUDENT_TEMPLATES = ("ft_cot_token", "ft_token", "ft_cot_natural")


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
    raise ValueError(f"unknown student template {template!r}; known: {STUDENT_TEMPLATES + ('zs',)}")


def student_label(template: str, answer: str, family: str, rationale: str | None = None) -> str:
    """The training target. Decoder labels start with one space; the gold answer, never the teacher's."""
    a = answer.strip()
    sp = " " if family == DECODER else ""
    if template == "ft_cot_token":
        if rationale is None:
            raise ValueError("ft_cot_token needs a rationale")
        return f"{sp}{rationale.strip()} --> {a}"
    if template == "ft_token":
        return f"{sp}{a}"
    if template == "ft_cot_natural":
        if family != DECODER:
            raise ValueError("ft_cot_natural is not supported for encoder-decoder students")
        if rationale is None:
            raise ValueError("ft_cot_natural needs a rationale")
        # Fine-tune-CoT trains on "Therefore the answer is" (no comma) while its evaluator looks for the
        # comma form; reproduced as is (methods.md 1.3 quirks).
        return f" {rationale.strip()}\n\nTherefore the answer is {a}"
    raise ValueError(f"unknown student template {template!r}; known: {STUDENT_TEMPLATES}")
