"""Fine-tune-CoT answer extraction and scoring (methods.md 1.3), rule by rule and quirk by quirk."""

from __future__ import annotations

import pytest

from sgft_lab.answers import (
    PREFIXES,
    TASKS,
    TEMPLATES,
    Scored,
    accuracy,
    candidates,
    extract,
    normalize_gold,
    score,
)

FTCOT_12 = (
    "single_eq", "addsub", "multiarith", "gsm8k", "aqua", "svamp", "date_understanding",
    "tracking_shuffled_objects", "last_letter_concatenation", "coin_flip", "commonsense_qa", "strategy_qa",
)  # fmt: skip

# One gold per task and how a model would write it.
GOLD = {
    "single_eq": ("43.0", "43"),
    "addsub": ("7.0", "7"),
    "multiarith": ("18", "18"),
    "gsm8k": ("1,000", "1,000"),
    "aqua": ("C", "(C)"),
    "svamp": ("34.0", "34"),
    "date_understanding": ("F", "(F)"),
    "tracking_shuffled_objects": ("B", "(B)"),
    "last_letter_concatenation": ("yajo", "yajo"),
    "coin_flip": ("no", "no"),
    "commonsense_qa": ("E", "(E)"),
    "strategy_qa": ("Yes", "yes"),
    "asdiv": ("9", "9"),
    "mawps": ("12.5", "12.5"),
}


# ---- keys, templates, errors -------------------------------------------------------------------------


def test_task_keys_and_prefixes():
    assert set(FTCOT_12) | {"asdiv", "mawps"} == set(TASKS) and len(TASKS) == 14
    assert PREFIXES["ft_cot_token"] == "-->"
    assert PREFIXES["ft_cot_natural"] == "Therefore, the answer is"
    assert PREFIXES["fs_cot"] == "The answer is"
    for t in ("zs", "zs_cot", "ft_token"):
        assert PREFIXES[t] is None
    assert set(TEMPLATES) == set(PREFIXES)


def test_unknown_task_or_template_lists_known_ones():
    with pytest.raises(ValueError, match="unknown task 'gsm9k'.*multiarith.*strategy_qa"):
        score("gsm9k", "zs", "1", "1")
    with pytest.raises(ValueError, match="unknown template 'cot'.*ft_cot_token.*fs_cot"):
        score("gsm8k", "cot", "1", "1")
    with pytest.raises(ValueError, match="unknown task"):
        # The official `in ("tracking_shuffled_objects")` is a substring test; that slip is not copied.
        candidates("objects", "A")
    with pytest.raises(ValueError, match="unknown template"):
        extract("gsm8k", "nope", "1")


def test_bad_gold_and_completion_types():
    with pytest.raises(ValueError, match="svamp.*not a number"):
        score("svamp", "zs", "3", "three")
    with pytest.raises(ValueError, match="must be a string"):
        score("multiarith", "zs", "18", 18)
    with pytest.raises(ValueError, match="completion must be a string"):
        score("multiarith", "zs", None, "18")


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_task_and_template_scores_a_well_formed_answer(task, template):
    gold, written = GOLD[task]
    prefix = PREFIXES[template]
    completion = f"{prefix} {written}." if prefix else f"{written}."
    s = score(task, template, completion, gold)
    assert s.correct and s.contains_answer and s.correct_format, s
    # The same completion with a wrong gold answer must fail.
    wrong = {"aqua": "A", "date_understanding": "A", "tracking_shuffled_objects": "A", "commonsense_qa": "A",
             "coin_flip": "yes", "strategy_qa": "No", "last_letter_concatenation": "yajx"}.get(task, "99")
    s = score(task, template, completion, wrong)
    assert not s.correct and not s.contains_answer


# ---- step 2: which candidate ---------------------------------------------------------------------------


def test_first_candidate_after_first_prefix_occurrence():
    c = "5 apples and 7 pears make 12. The answer is 12 (from 5 + 7). The answer is 99."
    s = score("multiarith", "fs_cot", c, "12")
    assert s == Scored(extracted="12", correct=True, contains_answer=True, correct_format=True)
    assert extract("multiarith", "fs_cot", c) == "12"
    # ft_cot_token: the first number after '-->', not the last one.
    assert extract("gsm8k", "ft_cot_token", "3 + 4 = 7\n\n-->\n\n7 END 8") == "7"


def test_last_candidate_when_expected_prefix_is_missing():
    c = "5 apples and 7 pears make 12 fruits, minus 2 is 10"
    s = score("multiarith", "fs_cot", c, "12")
    assert s.extracted == "10" and not s.correct
    assert s.contains_answer  # 12 is among the candidates of the whole completion
    assert not s.correct_format
    assert score("multiarith", "ft_cot_token", c, "10").correct


def test_first_candidate_when_template_has_no_prefix():
    c = "12 fruits, minus 2 is 10. The answer is 10."
    for template in ("zs", "zs_cot", "ft_token"):
        s = score("multiarith", template, c, "10")
        assert s.extracted == "12" and not s.correct and s.contains_answer and s.correct_format


def test_contains_answer_only_looks_after_the_prefix_when_found():
    s = score("multiarith", "fs_cot", "The total is 12. The answer is 10.", "12")
    assert s.extracted == "10" and not s.correct and not s.contains_answer


def test_no_candidate_gives_none_and_is_wrong():
    for template in ("zs", "fs_cot", "ft_cot_token"):
        s = score("gsm8k", template, "I do not know.", "3")
        assert s == Scored(extracted=None, correct=False, contains_answer=False,
                           correct_format=PREFIXES[template] is None)
    # Prefix found but nothing after it: None, even if numbers appear before the prefix.
    s = score("svamp", "ft_cot_token", "3 + 4 = 7 -->", "7.0")
    assert s.extracted is None and not s.correct and not s.contains_answer and s.correct_format


def test_explicit_prefix_overrides_template():
    c = "Step 1: 3 + 4 = 7. The answer is 7. Check: 8"
    assert extract("multiarith", "zs", c) == "1"
    s = score("multiarith", "zs", c, "7", prefix="The answer is")  # how SGFT scores
    assert s.extracted == "7" and s.correct and s.correct_format
    s = score("multiarith", "zs", "Total 8", "8", prefix="The answer is")
    assert s.correct and not s.correct_format  # absent prefix -> last candidate
    # prefix=None means "no prefix" even for a template that has one.
    assert extract("multiarith", "fs_cot", c, prefix=None) == "1"


def test_ft_cot_natural_comma_quirk():
    """Students learn 'Therefore the answer is' (no comma); the evaluator looks for the comma form."""
    c = " Tom had 18 apples and ate 3, so 15 remain.\n\nTherefore the answer is\n\n15 apples from 18"
    s = score("multiarith", "ft_cot_natural", c, "15")
    assert not s.correct_format
    assert s.extracted == "18" and not s.correct and s.contains_answer  # last candidate of the whole text
    s = score("multiarith", "ft_cot_natural", c.replace("Therefore the", "Therefore, the"), "15")
    assert s.correct_format and s.extracted == "15" and s.correct


def test_zs_cot_teacher_filter_uses_first_candidate():
    # Stage-2 completion after "Therefore, the answer is" (already in the prompt): first number wins.
    assert score("gsm8k", "zs_cot", " 42. Since 6 * 7 = 42.", "42").correct
    assert not score("gsm8k", "zs_cot", " (6 * 7) 42", "42").correct


# ---- step 3: numbers -----------------------------------------------------------------------------------


def test_number_regex():
    assert candidates("gsm8k", "a -3 b 4.5 c 6. d 7.25.8 e1e5") == ["-3", "4.5", "6", "7.25", "8", "1", "5"]
    assert candidates("svamp", "-3 and 4.5") == [-3.0, 4.5]


def test_gsm8k_commas_removed_from_prediction_and_gold():
    s = score("gsm8k", "ft_cot_token", "--> 1,000 END", "1,000")
    assert s.extracted == "1000" and s.correct
    assert score("gsm8k", "ft_cot_token", "--> 1000", "1,000").correct
    assert score("multiarith", "zs", "1,200", "1200").correct
    assert normalize_gold("gsm8k", "1,000") == "1000"
    # Comma deletion joins a list of numbers into one (a quirk of the official code).
    assert candidates("gsm8k", "3,4 and 5") == ["34", "5"]


@pytest.mark.parametrize("task", ["gsm8k", "multiarith"])
def test_string_compared_tasks_reject_18_point_0(task):
    s = score(task, "fs_cot", "The answer is 18.0.", "18")
    assert s.extracted == "18.0" and not s.correct and not s.contains_answer
    assert score(task, "fs_cot", "The answer is 18.", "18").correct


@pytest.mark.parametrize("task", ["addsub", "svamp", "single_eq", "mawps", "asdiv"])
def test_float_tasks_accept_18_and_18_point_0(task):
    s = score(task, "fs_cot", "The answer is 18.", "18.0")
    assert s.extracted == "18.0" and s.correct  # candidates are floats, rendered with str()
    assert score(task, "fs_cot", "The answer is 18.0", "18").correct
    assert score(task, "fs_cot", "The answer is 1,800.", "1800.0").correct
    assert score(task, "zs", "-2.5", "-2.5").correct
    assert not score(task, "zs", "19", "18.0").correct


def test_float_tolerances():
    # 1e-6 for the Fine-tune-CoT tasks and mawps, 1e-4 for asdiv (project choice).
    for task in ("addsub", "svamp", "single_eq", "mawps"):
        assert score(task, "zs", "2.0000005", "2").correct
        assert not score(task, "zs", "2.00005", "2").correct
    assert score("asdiv", "zs", "2.00005", "2").correct
    assert not score("asdiv", "zs", "2.0002", "2").correct


def test_asdiv_gold_with_unit():
    assert normalize_gold("asdiv", "9 (apples)") == 9.0
    assert score("asdiv", "fs_cot", "The answer is 9.", "9 (apples)").correct
    with pytest.raises(ValueError, match="not a number"):
        normalize_gold("svamp", "9 (apples)")  # only asdiv gets this leniency


# ---- step 3: multiple choice ---------------------------------------------------------------------------


def test_letter_regex_matches_any_capital_letter():
    # Without a prefix the article "A" (or "A:") wins over the intended choice.
    c = "A train leaves at noon. The answer is (C)."
    assert extract("aqua", "zs", c) == "A"
    assert not score("aqua", "zs", c, "C").correct
    assert score("aqua", "zs", c, "C").contains_answer
    assert extract("commonsense_qa", "ft_token", "A: (D)") == "A"
    # With the prefix found, the first letter after it wins.
    assert score("aqua", "fs_cot", c, "C").correct
    # ... which is again the article if the model keeps talking.
    assert extract("aqua", "fs_cot", "The answer is A bit unclear, maybe (C).") == "A"
    # Prefix missing: the last capital anywhere.
    assert extract("aqua", "fs_cot", "(B) looks right, Doesn't it? Check Each") == "E"


def test_letter_sets_per_task():
    text = "(A) (B) (C) (D) (E) (F) (G)"
    assert candidates("aqua", text) == list("ABCDE")
    assert candidates("commonsense_qa", text) == list("ABCDE")
    assert candidates("date_understanding", text) == list("ABCDEF")
    assert candidates("tracking_shuffled_objects", text) == list("ABC")
    assert candidates("aqua", "lower-case a b c") == []
    assert score("date_understanding", "fs_cot", "The answer is (F).", "F").correct
    assert extract("aqua", "fs_cot", "The answer is (F).") is None
    s = score("tracking_shuffled_objects", "ft_cot_token", "Bob has the ball. --> (D)", "B")
    assert s.extracted is None and not s.correct


# ---- step 3: yes / no ----------------------------------------------------------------------------------


def test_yes_no_tokenisation():
    assert candidates("coin_flip", '"Yes." No, yes\nNO:yes') == ["yes", "no", "yes", "no", "yes"]
    assert candidates("coin_flip", "'no'") == ["no"]
    # Only " \" ' \n . whitespace : ," separate tokens: other punctuation glues to the word.
    assert candidates("coin_flip", "Yes! no? (yes) no;") == []
    assert candidates("strategy_qa", "eyes nothing yesterday") == []
    assert candidates("coin_flip", "yes\tno") == ["yes", "no"]


def test_yes_no_scoring_and_gold_case():
    c = "The coin was flipped twice, so it is still heads. The answer is \"Yes\"."
    assert score("strategy_qa", "fs_cot", c, "Yes").correct  # gold lower-cased for strategy_qa
    assert score("strategy_qa", "fs_cot", c, "yes").correct
    assert score("coin_flip", "fs_cot", c, "yes").correct
    # Only strategy_qa lower-cases the gold; coin_flip golds are stored lower-case already.
    assert not score("coin_flip", "fs_cot", c, "Yes").correct
    assert normalize_gold("strategy_qa", "No") == "no"
    assert normalize_gold("coin_flip", "No") == "No"
    # No prefix: the first yes/no token anywhere wins, even inside reasoning.
    s = score("coin_flip", "zs", "No one flipped it, so yes.", "yes")
    assert s.extracted == "no" and not s.correct and s.contains_answer


# ---- step 3: last letter concatenation -----------------------------------------------------------------


def test_last_letter_whole_text_is_the_candidate():
    s = score("last_letter_concatenation", "fs_cot", 'The answer is "ya jo".', "yajo")
    assert s.extracted == "yajo" and s.correct  # quotes, dots and whitespace are deleted
    assert candidates("last_letter_concatenation", "a'b\"c.d e\nf") == ["abcdef"]
    # Any extra word after the prefix makes it wrong.
    s = score("last_letter_concatenation", "ft_cot_token", "... --> yajo END", "yajo")
    assert s.extracted == "yajoEND" and not s.correct and not s.contains_answer
    # Case-sensitive, and other punctuation is kept.
    assert not score("last_letter_concatenation", "fs_cot", "The answer is Yajo", "yajo").correct
    assert extract("last_letter_concatenation", "fs_cot", "The answer is yajo!") == "yajo!"


def test_last_letter_without_prefix_scores_the_entire_completion():
    assert extract("last_letter_concatenation", "zs", " yajo.\n") == "yajo"
    s = score("last_letter_concatenation", "fs_cot", "y, a, j, o: yajo", "yajo")
    assert s.extracted == "y,a,j,o:yajo" and not s.correct and not s.correct_format


def test_last_letter_empty_text_is_an_empty_string_not_none():
    s = score("last_letter_concatenation", "ft_cot_token", "reasoning -->  .\n", "yajo")
    assert s.extracted == "" and not s.correct


# ---- accuracy -----------------------------------------------------------------------------------------


def test_accuracy():
    assert accuracy([]) == 0.0
    assert accuracy([True, False, True, True]) == 0.75
    rows = [score("multiarith", "zs", c, "3") for c in ("3", "4", "3 4")]
    assert accuracy(rows) == pytest.approx(2 / 3)
    assert accuracy(iter(rows)) == pytest.approx(2 / 3)
