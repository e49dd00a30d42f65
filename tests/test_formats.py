"""Exact prompt and sample strings (methods.md 2.2, 2.4)."""

import pytest

from sgft_lab.data.formats import student_input, student_label, zs_cot_stage1, zs_cot_stage2


def test_teacher_prompts_exact():
    p1 = zs_cot_stage1("How many?")
    assert p1 == "Q: How many?\nA: Let's think step by step."
    # Stage 2 joins the raw completion, unstripped (paper behaviour).
    assert zs_cot_stage2(p1, " He has 3.") == "Q: How many?\nA: Let's think step by step. He has 3.\nTherefore, the answer is"


@pytest.mark.parametrize("family,inp,label", [
    ("decoder", "What is 2+2? ###", " 2 plus 2 is 4. --> 4"),
    ("encoder_decoder", "What is 2+2?", "2 plus 2 is 4. --> 4"),
])
def test_ft_cot_token(family, inp, label):
    assert student_input("ft_cot_token", "  What is 2+2? ", family) == inp
    assert student_label("ft_cot_token", " 4 ", family, rationale="  2 plus 2 is 4. ") == label


def test_ft_token_and_zs():
    assert student_input("ft_token", "Q?", "decoder") == "Q? ###"
    assert student_label("ft_token", "yes", "decoder") == " yes"
    assert student_label("ft_token", "yes", "encoder_decoder") == "yes"
    assert student_input("zs", "Q?", "decoder") == "Q: Q?\n\nA:"
    assert student_input("zs", "Q?", "encoder_decoder") == "question: Q?"


def test_ft_cot_natural_quirk_and_errors():
    assert student_input("ft_cot_natural", "Q?", "decoder") == "Q: Q?\n\nA: Let's think step by step.\n\n"
    assert student_label("ft_cot_natural", "4", "decoder", rationale="r") == " r\n\nTherefore the answer is 4"
    with pytest.raises(ValueError):
        student_input("ft_cot_natural", "Q?", "encoder_decoder")
    with pytest.raises(ValueError):
        student_label("ft_cot_token", "4", "decoder")  # needs a rationale
    with pytest.raises(ValueError, match="unknown"):
        student_input("nope", "Q?", "decoder")
