"""SGFT's Solution Guidance: prompts, step parsing, the filter (kept and rejected examples of every rule),
the reference SG writer and the reference teacher's SG prompt kind."""

from __future__ import annotations

import pytest

from sgft_lab.benchmarks.embedded import generate_examples
from sgft_lab.benchmarks.record import Example
from sgft_lab.guidance import (
    PROMPT_IV,
    REASONS,
    RETRY_INSTRUCTION,
    FilterRules,
    check_sg,
    format_steps,
    normalize_sg,
    parse_steps,
    response_prompt,
    rules_for,
    sg_prompt,
    split_sg_prompt,
)
from sgft_lab.teachers.reference_sg import (
    guided_solution,
    reference_guidance,
    reference_guidance_kind,
    worked_solution,
)

GOOD = "Step 1: Find how many apples Tom has at the start.\nStep 2: Find how many he has after buying more: add."


def reasons(text: str, **rules) -> list[str]:
    return check_sg(text, FilterRules(**rules))[1]


# --- prompts -----------------------------------------------------------------------------------------------


def test_prompt_iv_is_exact_and_the_user_message_layout():
    assert PROMPT_IV == ("Please generate a step-by-step solution for the following problem with no calculations."
                         "\n You don't need to solve it, just output the steps in 2 to 6 steps.")
    assert sg_prompt(" Tom has 3 apples. ") == PROMPT_IV + "\n\nTom has 3 apples."
    assert sg_prompt("Q?", retry=True) == PROMPT_IV + "\n" + RETRY_INSTRUCTION + "\n\nQ?"
    assert RETRY_INSTRUCTION == "Do not include any calculations or numeric operations; only describe high-level steps."


def test_prompt_variants_known_fragments_and_few_shot_rules():
    assert "You don't need to solve it; just output the steps in 2 to 6 steps." in sg_prompt("Q", "II")
    for v in ("I",):
        p = sg_prompt("Q", v)
        assert all(f in p for f in ("[Problem Type]", "[Solution Objective]", "[Constraints]",
                                    "[Priorities and Considerations]"))
    shots = [("A?", "Step 1: a\nStep 2: b")]
    p3, p5 = sg_prompt("Q", "III", shots), sg_prompt("Q", "V", shots)
    assert "You don't need to solve it, just output" in p3 and "Examples for the SG data are as follows:" in p3
    assert p5.startswith(PROMPT_IV) and p5.endswith("\n\nQ") and "Question: A?\nSolution Guidance:\nStep 1: a" in p5
    with pytest.raises(ValueError, match="few-shot"):
        sg_prompt("Q", "V")
    with pytest.raises(ValueError, match="zero-shot"):
        sg_prompt("Q", "IV", shots)
    with pytest.raises(ValueError, match="unknown SG prompt"):
        sg_prompt("Q", "VI")


def test_split_sg_prompt_round_trips_every_variant():
    shots = [("A?", "Step 1: a\nStep 2: b")]
    for variant in ("I", "II", "III", "IV", "V"):
        for retry in (False, True):
            p = sg_prompt("How many?", variant, shots if variant in ("III", "V") else (), retry=retry)
            assert split_sg_prompt(p, {"How many?"}) == {"variant": variant, "retry": retry, "question": "How many?"}
    # a question holding a blank line is found when the question is known
    assert split_sg_prompt(sg_prompt("Part one.\n\nPart two?"), {"Part one.\n\nPart two?"})["question"] == \
        "Part one.\n\nPart two?"
    assert split_sg_prompt("Q: Tom has 3 apples.\nA: Let's think step by step.") is None


def test_response_prompt_is_the_default_template():
    assert response_prompt(" Q? ", "Step 1: a\nStep 2: b\n") == \
        "Question: Q?\nSolution Guidance:\nStep 1: a\nStep 2: b\nAnswer:"
    assert response_prompt("Q", "S", "{sg} || {question}") == "S || Q"


# --- parsing -----------------------------------------------------------------------------------------------


def test_parse_steps_formats_preamble_markdown_and_continuations():
    text = ("Sure! Here is the guidance:\n\n**Step 1:** Find the total.\n  - 2) Subtract what was used\n"
            "   and keep the rest.\n3. Check the result.\n### Step 4 - State the result in words.")
    assert parse_steps(text) == ["Find the total.", "Subtract what was used and keep the rest.",
                                 "Check the result.", "State the result in words."]
    assert parse_steps("No steps at all.") == []
    assert parse_steps("3.5 apples are left.") == []  # "k." needs a space after it
    assert format_steps(["a", "b"]) == "Step 1: a\nStep 2: b"
    assert normalize_sg("1. a\n2. b") == "Step 1: a\nStep 2: b" and normalize_sg("  free text ") == "free text"


# --- the filter: kept and rejected examples of every rule ----------------------------------------------------


def test_good_sg_passes():
    steps, why = check_sg(GOOD)
    assert why == [] and len(steps) == 2


def test_rule_step_count():
    assert reasons("Step 1: Do everything.") == ["too_few_steps"]
    assert reasons("Just solve it.") == ["too_few_steps"]
    six = format_steps([f"Do part {c}." for c in "abcdef"])
    seven = format_steps([f"Do part {c}." for c in "abcdefg"])
    assert reasons(six) == [] and reasons(seven) == ["too_many_steps"]
    assert reasons(six, max_steps=5) == ["too_many_steps"] and reasons("Step 1: x", min_steps=1) == []


def test_rule_arithmetic_expression():
    for bad in ("Step 1: Add 3 + 4 apples.\nStep 2: Go.", "Step 1: Compute 12*3.\nStep 2: Go.",
                "Step 1: Take 10 - 2.\nStep 2: Go.", "Step 1: Split 8 / 2.\nStep 2: Go."):
        assert "arithmetic_expression" in reasons(bad), bad
    assert reasons("Step 1: Add the 3 apples to the 4 pears.\nStep 2: Multiply 3 times 4.") == []
    assert reasons("Step 1: Add 3 + 4.\nStep 2: Go.", arithmetic=False) == []


def test_rule_equals_number():
    assert reasons("Step 1: Let x = 5.\nStep 2: Go.") == ["equals_number"]
    assert reasons("Step 1: Let x = the total.\nStep 2: Go.") == []
    assert reasons("Step 1: Let x = 5.\nStep 2: Go.", equals_number=False) == []


def test_rule_final_answer():
    for bad in ("So the answer is 42.", "The final answer is (C).", "answer is C", "Answer: yes", "The answer is $5."):
        assert "final_answer" in reasons(f"Step 1: Think.\nStep 2: {bad}"), bad
    for ok in ("Write down the answer.", "The answer is the total number of apples.", "Answer the question."):
        assert reasons(f"Step 1: Think.\nStep 2: {ok}") == [], ok
    assert reasons("Step 1: Think.\nStep 2: The answer is 4.", final_answer=False) == []


def test_rule_long_number():
    assert reasons("Step 1: Note the 12345 people.\nStep 2: Go.") == ["long_number"]
    assert reasons("Step 1: Note the 10,000 people.\nStep 2: Go.") == ["long_number"]
    assert reasons("Step 1: Note the year 2024.\nStep 2: Go.") == []
    assert reasons("Step 1: Note the 12345 people.\nStep 2: Go.", max_number_digits=5) == []


def test_rule_math_symbols():
    for sym in "×÷∑∫√^":
        assert reasons(f"Step 1: Use {sym} here.\nStep 2: Go.") == ["math_symbol"], sym
    assert reasons("Step 1: Use a square root here.\nStep 2: Go.") == []


def test_optional_any_number_rule():
    text = "Step 1: Start from the 3 apples.\nStep 2: Go."
    assert reasons(text) == [] and reasons(text, any_number=True) == ["number"]


def test_preamble_is_not_filtered_but_steps_are():
    assert reasons("The answer is 5, but here are the steps:\n" + GOOD) == []
    assert set(REASONS) >= {"too_few_steps", "too_many_steps", "arithmetic_expression", "equals_number",
                            "final_answer", "long_number", "math_symbol"}


# --- the task-aware filter: each task preset's rules (conf/experiment/sgft/*.yaml) ------------------------------


def _preset_rules(name: str, answer_type: str) -> FilterRules:
    """method.filter of a task preset as its run uses it (auto resolved by the benchmark's answer type)."""
    from conftest import compose

    from sgft_lab.config import validate

    return rules_for(validate(compose([f"+experiment=sgft/{name}"])).method.filter, answer_type)


def sg(*steps: str) -> str:
    return format_steps(steps)


@pytest.fixture(scope="module")
def rules():
    return {name: _preset_rules(name, kind) for name, kind in (("gsm8k", "number"), ("multiarith", "number"),
                                                               ("strategy_qa", "yes_no"),
                                                               ("commonsense_qa", "choice"))}


def test_each_task_preset_sets_the_rules_of_its_answer_kind(rules):
    # the preset's explicit settings are what `auto` would choose for its benchmark's answers
    for name, kind in (("gsm8k", "number"), ("strategy_qa", "yes_no"), ("commonsense_qa", "choice")):
        assert rules[name] == rules_for(FilterRules(), kind), name
    assert rules["multiarith"] == rules["gsm8k"]
    assert (rules["strategy_qa"].arithmetic, rules["strategy_qa"].long_number) == (False, False)
    assert rules_for(FilterRules(answer_kind="choice", arithmetic=True), "yes_no").arithmetic is True  # explicit wins


def test_legitimate_non_numeric_guidance_passes_its_task_filter(rules):
    strategy = [sg("Find the height of the Eiffel Tower.", "Check whether the Eiffel Tower is taller than 300 m."),
                sg("Recall when World War II was fought (1939-1945).", "Check whether the Pict lived then.",
                   "Decide whether the answer is yes or no."),
                sg("Recall that Mount Everest is 29,029 feet high.", "Compare it with a jet's cruising altitude."),
                sg("Find out what 9/11 refers to.", "No calculation is needed: compare the two dates.")]
    csqa = [sg("Work out what the question asks for.", "Consider what (B) bank and (D) vault are used for.",
               "Rule out (A) and (C): they are not places.", "Choose between (B) and (D)."),
            sg("Read the options (A)-(E).", "Pick the option that fits a place where people keep money.")]
    for text in strategy:
        assert check_sg(text, rules["strategy_qa"])[1] == [], text
    for text in csqa:
        assert check_sg(text, rules["commonsense_qa"])[1] == [], text
    # the same dates, ranges and quoted facts are calculations / long numbers under the GSM8K rules
    assert "arithmetic_expression" in check_sg(strategy[1], rules["gsm8k"])[1]
    assert "long_number" in check_sg(strategy[2], rules["gsm8k"])[1]
    assert "final_answer" in check_sg(strategy[1], rules["gsm8k"])[1]  # 3.4's rule 4 as written


def test_task_filters_still_reject_final_answers_and_computed_results(rules):
    for bad in ("So the answer is no.", "The answer is yes.", "No, the tower is shorter.", "Therefore, yes.",
                "Answer: No", "Yes"):
        assert "final_answer" in check_sg(sg("Find the facts.", bad), rules["strategy_qa"])[1], bad
    for bad in ("The answer is (C).", "So the answer is C.", "Option C is correct.", "Choose (D).",
                "The correct option is B.", "The best answer: (E)"):
        assert "final_answer" in check_sg(sg("Read the options.", bad), rules["commonsense_qa"])[1], bad
    computed = sg("Multiply the 11.5 months by 2 = 23 months.", "Compare it with the war's length.")
    assert check_sg(computed, rules["strategy_qa"])[1] == ["equals_number"]
    for bad in ("Add 3 + 4 apples.", "Compute 12*3 eggs."):
        assert check_sg(sg(bad, "Go."), rules["gsm8k"])[1] == ["arithmetic_expression"], bad
        assert check_sg(sg(bad, "Go."), rules["multiarith"])[1] == ["arithmetic_expression"], bad
    assert check_sg(sg("Think.", "The answer is 42."), rules["gsm8k"])[1] == ["final_answer"]
    # an option letter is no verdict on a yes/no task, a verdict no pick on a choice task
    assert check_sg(sg("Think.", "Compare (A) with the rest."), rules["strategy_qa"])[1] == []
    assert check_sg(sg("Think.", "Check whether yes, it rains there."), rules["commonsense_qa"])[1] == []


def test_embedded_tier_stand_ins_get_their_own_answer_kind():
    """tier=embedded drops a preset's method settings (sgft_lab/tiers.py): `auto` then follows the stand-in's
    answers (StrategyQA and CommonsenseQA -> embedded_coin_flip: yes/no; MultiArith -> arithmetic: number)."""
    from conftest import compose

    from sgft_lab.config import validate

    for name, bench, kind in (("strategy_qa", "embedded_coin_flip", "yes_no"),
                              ("commonsense_qa", "embedded_coin_flip", "yes_no"),
                              ("multiarith", "embedded_arithmetic", "number")):
        c = validate(compose([f"+experiment=sgft/{name}", "tier=embedded"], hydra_cfg=True))
        answer_type = generate_examples(c.benchmark.generator, 1, c.benchmark.difficulty, 0)[0].answer_type
        assert c.benchmark.name == bench and c.method.filter.answer_kind == "auto"
        assert rules_for(c.method.filter, answer_type).answer_kind == kind, name


# --- reference SG -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("generator,difficulty", [("arithmetic", 2), ("arithmetic", 4), ("coin_flip", 4),
                                                  ("coin_flip", 9), ("last_letters", 4), ("last_letters", 8)])
def test_reference_sg_of_embedded_tasks_passes_the_strict_filter(generator, difficulty):
    for ex in generate_examples(generator, 20, difficulty, 0):
        steps = reference_guidance(ex)
        assert check_sg(format_steps(steps), FilterRules(any_number=True))[1] == [], steps
        solution = guided_solution(ex)
        assert solution.startswith(" Step 1: ") and solution.endswith(f"The answer is {ex.answer}.")
        assert solution.count("\nStep ") == len(steps) - 1  # one solution line per SG step


def test_reference_sg_arithmetic_names_each_operation_and_the_solution_does_it():
    ex = next(e for e in generate_examples("arithmetic", 80, 2, 0)
              if [s["kind"] for s in e.trace] == ["start", "add", "sub"])
    assert reference_guidance(ex) == ["Note the starting amount.", "Add the amount gained.",
                                      "Subtract the amount lost."]
    (a,), (_, n), (b, m) = [ex.trace[0]["value"]], ex.trace[1]["args"], ex.trace[2]["args"]
    assert guided_solution(ex) == (f" Step 1: {a}.\nStep 2: {a} + {n} = {b}.\nStep 3: {b} - {m} = {b - m}.\n"
                                   f"The answer is {ex.answer}.")
    assert worked_solution(ex) == f" {a}. {a} + {n} = {b}. {b} - {m} = {b - m}." and str(b - m) == ex.answer
    groups = next(e for e in generate_examples("arithmetic", 80, 2, 0) if e.trace[-1]["kind"] == "add_groups")
    assert reference_guidance(groups)[-1].endswith("then add it.") and "*" in guided_solution(groups)


def test_reference_sg_from_gsm8k_solution_removes_every_result():
    ex = Example("gsm8k:0", "Lia buys 3 packs of 12 eggs and uses 10. How many eggs are left?", "26", "number",
                 rationale="Lia buys 3 * 12 = <<3*12=36>>36 eggs.\nShe has 36 - 10 = <<36-10=26>>26 left.")
    steps = reference_guidance(ex)
    assert steps == ["Lia buys 3 times 12 eggs.", "She has the earlier result minus 10 left."]
    assert "36" not in " ".join(steps) and "26" not in " ".join(steps)


def test_reference_sg_from_strategyqa_facts_and_decomposition():
    facts = Example("strategy_qa:0", "Can a cat fit in a teacup?", "No", "yes_no",
                    rationale="Teacups hold about 200 ml. Adult cats are much larger than that.")
    assert reference_guidance(facts) == ["Recall that teacups hold about 200 ml.",
                                         "Recall that adult cats are much larger than that.",
                                         "Decide whether these facts mean yes or no."]
    dec = Example("strategy_qa:1", "Q?", "Yes", "yes_no", meta={"decomposition": ["What is A?", "Is #1 big?"]})
    assert reference_guidance(dec) == ["What is A?", "Is #1 big?"]
    assert reference_guidance(Example("x:0", "Q?", "1", "number")) is None


# --- the reference teacher's SG prompt kind -----------------------------------------------------------------


def _complete(teacher, prompts):
    from sgft_lab.teachers.base import Request, SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=256)
    return [c.text for c in teacher.complete([Request(p, params, 0) for p in prompts])]


def test_reference_teacher_answers_sg_prompts_and_retries():
    from sgft_lab.teachers.reference import UNSURE, ReferenceTeacher

    exs = generate_examples("arithmetic", 40, 2, 0)
    clean = ReferenceTeacher(exs, error_rate=0.0, extra_kinds=[reference_guidance_kind(exs)])
    outs = _complete(clean, [sg_prompt(e.question) for e in exs] + [sg_prompt("An unknown question?")])
    assert all(not check_sg(o)[1] for o in outs[:-1]) and outs[-1] == UNSURE
    assert outs[0] == format_steps(reference_guidance(exs[0]))
    # stage-1 zero-shot-CoT prompts still reach the built-in kinds
    assert "=" in _complete(clean, ["Q: " + exs[0].question + "\nA: Let's think step by step."])[0]

    sloppy = ReferenceTeacher(exs, error_rate=1.0, extra_kinds=[reference_guidance_kind(exs)])
    first = _complete(sloppy, [sg_prompt(e.question) for e in exs])
    assert all(check_sg(o)[1] for o in first)  # every first draft breaks a rule
    kinds = {r for o in first for r in check_sg(o)[1]}
    assert {"arithmetic_expression", "equals_number", "final_answer", "too_few_steps"} <= kinds
    strict = ReferenceTeacher(exs, error_rate=0.0, extra_kinds=[reference_guidance_kind(exs)])
    retried = _complete(strict, [sg_prompt(e.question, retry=True) for e in exs])
    assert all(not check_sg(o, FilterRules(any_number=True))[1] for o in retried)
