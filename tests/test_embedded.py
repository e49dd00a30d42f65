"""Embedded benchmarks: wording, answers recomputed from the question text, splits, variants, rationales."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from sgft_lab.benchmarks import load_benchmark
from sgft_lab.benchmarks.embedded import (
    GENERATORS,
    N_PHRASINGS,
    corruptible_steps,
    generate_examples,
    load_embedded,
    rationale_answer,
    rationale_sentences,
    variant,
)
from sgft_lab.config import BenchmarkConfig

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"

# --------------------------------------------------------------------------------------------------------
# Independent solvers: they read only the question text (the public tasks' templates), never the trace.

COIN_RE = re.compile(
    r"A coin is heads up\.((?: [^.]+? (?:flips|does not flip) the coin\.)+) "
    r'Is the coin still heads up\? Note that "flip" here means "reverse"\.'
)
LETTERS_RE = re.compile(r'Take the last letters of each words in "(\S+(?: \S+)*)" and concatenate them\.')


def solve_coin(question: str) -> tuple[str, int]:
    m = COIN_RE.fullmatch(question)
    assert m, f"not coin flip wording: {question!r}"
    people = re.findall(r" [^.]+? (flips|does not flip) the coin\.", m[1])
    return ("yes" if people.count("flips") % 2 == 0 else "no"), len(people)


def solve_letters(question: str) -> tuple[str, int]:
    m = LETTERS_RE.fullmatch(question)
    assert m, f"not last letter wording: {question!r}"
    words = m[1].split()
    return "".join(w[-1] for w in words), len(words)


ADD_VERBS = ("buys", "finds", "gets", "picks up", "wins")
SUB_VERBS = ("gives", "loses", "sells", "uses")


def solve_arithmetic(question: str) -> tuple[int, int, list[int], list[int]]:
    """(answer, operations, numbers in the question, every running value) from the text alone."""
    sents = re.split(r"(?<=[.?])\s+", question)
    assert sents[-1].startswith("How many ") and sents[-1].endswith("?"), question
    numbers = [int(x) for x in re.findall(r"\d+", question)]
    m = re.fullmatch(r"[A-Z][a-z]+ has (\d+) [a-z]+ with (\d+) [a-z ]+ in each [a-z]+\.", sents[0])
    if m:
        total, ops = int(m[1]) * int(m[2]), 1
    else:
        m = re.fullmatch(r"[A-Z][a-z]+ has (\d+) [a-z ]+\.", sents[0])
        assert m, f"unrecognised first sentence {sents[0]!r}"
        total, ops = int(m[1]), 0
    values = [total]
    for s in sents[1:-1]:
        body = re.fullmatch(r"(?:Then |After that, )?(?:He|She|he|she) (.+)\.", s)
        assert body, f"unrecognised sentence {s!r}"
        body = body[1]
        if g := re.search(r"(\d+) [a-z]+ with (\d+) [a-z ]+ in each [a-z]+$", body):
            values.append(int(g[1]) * int(g[2]))
            total += int(g[1]) * int(g[2])
            ops += 2
        elif k := re.search(r"equally (?:into|among) (\d+) ", body):
            assert total % int(k[1]) == 0, question
            total //= int(k[1])
            ops += 1
            assert s is sents[-2], "sharing is the last step"
        else:
            v = re.match(r"(buys|finds|gets|picks up|wins|gives|loses|sells|uses) (?:more )?(\d+) ", body)
            assert v, f"unrecognised step {s!r}"
            total = total + int(v[2]) if v[1] in ADD_VERBS else total - int(v[2])
            ops += 1
        values.append(total)
    return total, ops, numbers, values


SOLVERS = {"coin_flip": solve_coin, "last_letters": solve_letters}


# --------------------------------------------------------------------------------------------------------


def test_registry():
    assert {k: (g.task, g.answer_type) for k, g in GENERATORS.items()} == {
        "arithmetic": ("multiarith", "number"),
        "coin_flip": ("coin_flip", "yes_no"),
        "last_letters": ("last_letter_concatenation", "text"),
        "word_problems": ("multiarith", "number"),
    }


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_generate_is_deterministic_and_distinct(generator):
    a = generate_examples(generator, 150, 3, seed=7, id_prefix="t:")
    b = generate_examples(generator, 150, 3, seed=7, id_prefix="t:")
    c = generate_examples(generator, 150, 3, seed=8, id_prefix="t:")
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert [e.question for e in a] != [e.question for e in c]
    assert len({e.question for e in a}) == 150
    assert [e.id for e in a] == [f"t:{i}" for i in range(150)]
    for e in a:
        assert e.meta == {"difficulty": 3, "generator": generator}
        assert e.answer_type == GENERATORS[generator].answer_type
        assert e.trace and all(isinstance(s, dict) for s in e.trace)
        json.dumps(e.to_dict())  # records are plain JSON


@pytest.mark.parametrize("generator", ["coin_flip", "last_letters"])
@pytest.mark.parametrize("difficulty", [1, 4, 6])
def test_kojima_wording_and_answers(generator, difficulty):
    exs = generate_examples(generator, 200, difficulty, seed=0)
    for e in exs:
        answer, count = SOLVERS[generator](e.question)
        assert (e.answer, count) == (answer, difficulty)
    if generator == "coin_flip" and difficulty > 1:
        assert 60 <= sum(e.answer == "yes" for e in exs) <= 140  # both answers, roughly balanced


@pytest.mark.parametrize("difficulty", [1, 2, 3, 5, 8])
def test_arithmetic_answers_recomputed_from_text(difficulty):
    exs = generate_examples("arithmetic", 200, difficulty, seed=1)
    for e in exs:
        answer, ops, numbers, values = solve_arithmetic(e.question)
        assert e.answer == str(answer)
        assert ops == difficulty, e.question
        assert max(numbers) <= 20, e.question  # small operands ...
        assert all(0 <= v <= 60 for v in values), e.question  # ... and small, non-negative values
    assert len({e.answer for e in exs}) >= 10


def test_arithmetic_varies_entities_and_step_kinds():
    exs = generate_examples("arithmetic", 300, 3, seed=0)
    kinds = Counter(s["kind"] for e in exs for s in e.trace)
    assert {"start", "start_groups", "add", "sub", "groups", "add_groups", "share"} <= set(kinds)
    assert len({e.trace[0]["name"] for e in exs}) >= 50
    assert len({e.trace[0]["object"] for e in exs}) >= 10
    pronouns = {w for e in exs for w in e.question.lower().split()}
    assert {"he", "she"} <= pronouns


def _cfg(**kw) -> BenchmarkConfig:
    base = {"name": "emb", "task": "multiarith", "source": "embedded", "generator": "arithmetic",
            "difficulty": 2, "n_train": 60, "n_val": 10, "n_test": 20, "data_seed": 0}
    return BenchmarkConfig(**{**base, **kw})


def test_load_embedded_splits():
    s = load_embedded(_cfg())
    assert s.task == "multiarith" and s.counts() == {"train": 60, "val": 10, "test": 20}
    for split in ("train", "val", "test"):
        assert [e.id for e in getattr(s, split)] == [
            f"emb:{split}:{i}" for i in range(len(getattr(s, split)))
        ]
    qs = {k: {e.question for e in getattr(s, k)} for k in ("train", "val", "test")}
    assert not (qs["train"] & qs["val"] or qs["train"] & qs["test"] or qs["val"] & qs["test"])
    again = load_benchmark(_cfg())  # the package entry point dispatches here
    assert [e.to_dict() for e in again.train] == [e.to_dict() for e in s.train]
    # A data-size ablation (other n_train) keeps val and test; another data_seed changes everything.
    bigger = load_embedded(_cfg(n_train=90))
    assert [e.question for e in bigger.test] == [e.question for e in s.test]
    assert [e.question for e in bigger.val] == [e.question for e in s.val]
    assert [e.question for e in bigger.train[:60]] == [e.question for e in s.train]
    other = load_embedded(_cfg(data_seed=1))
    assert [e.question for e in other.test] != [e.question for e in s.test]


def test_load_embedded_errors():
    with pytest.raises(ValueError, match="known: arithmetic, coin_flip, last_letters"):
        load_embedded(_cfg(generator="sudoku"))
    with pytest.raises(ValueError, match="does not match generator"):
        load_embedded(_cfg(generator="coin_flip"))  # task still multiarith
    with pytest.raises(ValueError, match="distinct questions"):
        generate_examples("coin_flip", 1000, 1, seed=0)  # only 2 x 320 such questions exist


def test_difficulty_mix_in_equal_shares_per_split():
    """benchmark.difficulty_mix: question i has mix[i % len], so each split holds each difficulty equally; the
    arithmetic's operation count (its trace) follows the example's own difficulty; a bad entry is refused."""
    s = load_embedded(_cfg(difficulty_mix=[1, 3], n_train=60, n_val=10, n_test=20))
    for split in ("train", "val", "test"):
        exs = getattr(s, split)
        assert Counter(e.meta["difficulty"] for e in exs) == {1: len(exs) // 2, 3: len(exs) // 2}
        for e in exs:  # operations in the trace: one per op, "groups" costs 2 (g * m, then add)
            assert sum(1 for st in e.trace if st.get("op")) == e.meta["difficulty"]
            assert variant(e, harder=True).meta["difficulty"] == e.meta["difficulty"] + 1
    plain = load_embedded(_cfg())
    assert {e.meta["difficulty"] for e in plain.train} == {plain.train[0].meta["difficulty"]}
    with pytest.raises(ValueError, match="difficulty_mix"):
        load_embedded(_cfg(difficulty_mix=[1, 0]))


@pytest.mark.parametrize("preset,generator,task,difficulty", [
    ("embedded_arithmetic", "arithmetic", "multiarith", 2),
    ("embedded_coin_flip", "coin_flip", "coin_flip", 4),
    ("embedded_last_letter", "last_letters", "last_letter_concatenation", 4),
])  # fmt: skip
def test_benchmark_presets(preset, generator, task, difficulty):
    from omegaconf import OmegaConf

    raw = OmegaConf.load(REPO / "conf" / "benchmark" / f"{preset}.yaml")
    cfg: BenchmarkConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BenchmarkConfig), raw))
    assert (cfg.name, cfg.source, cfg.generator, cfg.task, cfg.difficulty) == (
        preset,
        "embedded",
        generator,
        task,
        difficulty,
    )
    assert (cfg.n_val, cfg.n_test, cfg.data_seed) == (100, 200, 0) and cfg.n_train >= 1000
    s = load_embedded(replace(cfg, n_train=30, n_val=5, n_test=5))
    assert s.task == task and s.train[0].id == f"{preset}:train:0"
    assert all(e.meta["difficulty"] == difficulty for e in s.train)


def test_arithmetic_number_bounds_are_respected_and_inherited_by_variants():
    exs = generate_examples("arithmetic", 200, 3, seed=1, params={"max_operand": 8, "max_value": 25})
    for e in exs:
        values = [s["result"] for s in e.trace]
        assert max(values) <= 25 and min(values) >= 2
        assert all(a <= 8 for s in e.trace if s["kind"] in ("add", "sub") for a in s["args"][1:])
        v = variant(e, harder=True, seed=0)
        assert v.meta["params"] == {"max_operand": 8, "max_value": 25}
        assert max(s["result"] for s in v.trace) <= 25
    with pytest.raises(ValueError, match="max_operand"):
        generate_examples("arithmetic", 1, 2, seed=0, params={"max_operand": 2, "max_value": 30})


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_variant(generator):
    for e in generate_examples(generator, 30, 3, seed=2, id_prefix="v:"):
        hard, similar = variant(e, harder=True, seed=0), variant(e, harder=False, seed=0)
        assert hard.meta["difficulty"] == 4 and similar.meta["difficulty"] == 3
        assert hard.meta["parent"] == similar.meta["parent"] == e.id
        assert e.question not in (hard.question, similar.question)
        assert variant(e, harder=True, seed=0).to_dict() == hard.to_dict()
        assert variant(e, harder=True, seed=1).question != hard.question
        for v, d in ((hard, 4), (similar, 3)):
            if generator == "arithmetic":
                answer, ops, _, _ = solve_arithmetic(v.question)
                assert (v.answer, ops) == (str(answer), d)
            elif generator == "word_problems":  # arithmetic's trace in other words (the solver reads arithmetic's)
                assert (v.answer, sum(bool(s["op"]) for s in v.trace)) == (str(v.trace[-1]["result"]), d)
            else:
                assert SOLVERS[generator](v.question) == (v.answer, d)
        if generator in ("arithmetic", "word_problems"):  # similar = the same step kinds, new entities, numbers
            assert [s["kind"] for s in similar.trace] == [s["kind"] for s in e.trace]
            extra = Counter(s["kind"] for s in hard.trace) - Counter(s["kind"] for s in e.trace)
            assert sum(extra.values()) == 1 and set(extra) <= {"add", "sub"}


_EQ = re.compile(r"(\d+(?:\.\d+)?) ([-+*/]) (\d+(?:\.\d+)?) = (\d+(?:\.\d+)?)")


def _wrong_equations(text: str) -> int:
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}
    return sum(abs(ops[o](float(a), float(b)) - float(r)) > 0.01 for a, o, b, r in _EQ.findall(text))


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_rationale_sentences_right_and_corrupted(generator):
    rng = random.Random(0)
    for e in generate_examples(generator, 25, 3, seed=3):
        for phrasing in range(N_PHRASINGS):
            sents, ans = rationale_sentences(e, phrasing)
            text = " ".join(sents)
            assert ans == e.answer and rationale_answer(generator, text) == e.answer
            assert "Therefore, the answer is" not in text and "-->" not in text
            if generator in ("arithmetic", "word_problems"):
                assert _wrong_equations(text) == 0 and _EQ.search(text)
            for step in corruptible_steps(e.trace):
                bad, bad_ans = rationale_sentences(e, phrasing, corrupt_step=step, rng=rng)
                bad_text = " ".join(bad)
                assert bad_ans != e.answer and rationale_answer(generator, bad_text) == bad_ans
                if generator in ("arithmetic", "word_problems"):  # one wrong step, later steps computed honestly
                    assert _wrong_equations(bad_text) == 1
                    assert _EQ.findall(bad_text)[-1][3] == bad_ans
            wrong, wrong_ans = rationale_sentences(e, phrasing, rng=rng, wrong_final=True)
            assert wrong_ans != e.answer and rationale_answer(generator, " ".join(wrong)) == wrong_ans
            if generator == "arithmetic":
                assert _wrong_equations(" ".join(wrong)) == 0
    with pytest.raises(ValueError, match="cannot be corrupted"):
        rationale_sentences(generate_examples("arithmetic", 1, 2, seed=0)[0], 0, corrupt_step=0)


@pytest.mark.shared
def test_solvers_agree_with_the_public_files():
    """The test's template solvers reproduce Kojima et al.'s own gold answers, so they check our wording."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}")
    for generator, rel in (
        ("coin_flip", "data/coin_flip/coin_flip.json"),
        ("last_letters", "data/last_letters/last_letters.json"),
    ):
        rows = json.loads((SHARED / rel).read_text())["examples"]
        assert len(rows) == 500
        multi_word_names = 0
        for row in rows:
            got = SOLVERS[generator](row["question"])
            if generator == "last_letters" and got[1] == 5:
                multi_word_names += 1  # public quirk: "Jose Antonio" is one name; ours are single words
                continue
            assert got == (row["answer"], 4), row
        assert multi_word_names <= 15
