"""The reference teacher: Fine-tune-CoT's two-stage zero-shot-CoT prompts answered from embedded traces."""

from __future__ import annotations

import pytest

from sgft_lab.answers import score
from sgft_lab.benchmarks.embedded import GENERATORS, N_PHRASINGS, generate_examples, rationale_sentences
from sgft_lab.config import TeacherConfig
from sgft_lab.teachers import build_teacher
from sgft_lab.teachers.base import Request, SamplingParams
from sgft_lab.teachers.reference import UNSURE, PromptKind, ReferenceTeacher

GREEDY = SamplingParams(temperature=0.0, max_tokens=128)
DIVERSE = SamplingParams(temperature=0.7, max_tokens=128)


def stage1(question: str) -> str:  # methods.md 2.2, exact
    return f"Q: {question}\nA: Let's think step by step."


def stage2(stage1_prompt: str, rationale: str) -> str:
    return f"{stage1_prompt}{rationale}\nTherefore, the answer is"


def round_trip(teacher, examples, params, samples=1):
    """[(example, rationale, answer completion)] for every example x sample index."""
    reqs = [Request(stage1(e.question), params, k) for e in examples for k in range(samples)]
    rats = teacher.complete(reqs)
    answers = teacher.complete([Request(stage2(r.prompt, c.text), GREEDY) for r, c in zip(reqs, rats)])
    exs = [e for e in examples for _ in range(samples)]
    return list(zip(exs, [c.text for c in rats], [a.text for a in answers]))


@pytest.fixture(scope="module")
def data():
    return {
        g: generate_examples(g, 60, d, seed=5)
        for g, d in (("arithmetic", 3), ("coin_flip", 4), ("last_letters", 4), ("word_problems", 2))
    }


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_error_free_round_trip_gives_gold(data, generator):
    teacher = ReferenceTeacher(data[generator], error_rate=0.0, diversity=N_PHRASINGS)
    task = GENERATORS[generator].task
    for params, samples in ((GREEDY, 1), (DIVERSE, 8)):
        for ex, rationale, answer in round_trip(teacher, data[generator], params, samples):
            assert rationale.startswith(" ") and not rationale.startswith("  ")
            assert "Therefore, the answer is" not in rationale
            assert answer == f" {ex.answer}."
            assert score(task, "zs_cot", answer, ex.answer).correct  # the correctness filter's rule


def test_every_phrasing_of_every_task_reaches_gold(data):
    for exs in data.values():
        for ex in exs:
            texts = set()
            for phrasing in range(N_PHRASINGS):
                sents, _ = rationale_sentences(ex, phrasing)
                texts.add(" " + " ".join(sents))
            teacher = ReferenceTeacher(exs)
            for t in texts:
                assert (
                    teacher.complete([Request(stage2(stage1(ex.question), t), GREEDY)])[0].text
                    == f" {ex.answer}."
                )
            assert len(texts) == N_PHRASINGS


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_error_rate(generator):
    exs = generate_examples(generator, 200, 3, seed=9)
    half = ReferenceTeacher(exs, error_rate=0.5, diversity=3, seed=0)
    wrong = [a != f" {e.answer}." for e, _, a in round_trip(half, exs, DIVERSE, samples=2)]
    assert len(wrong) == 400
    assert 0.35 <= sum(wrong) / len(wrong) <= 0.65
    every = ReferenceTeacher(exs, error_rate=1.0)  # every injected error changes the answer
    assert all(a != f" {e.answer}." for e, _, a in round_trip(every, exs[:50], GREEDY))


def test_phrasings_and_determinism(data):
    exs = data["arithmetic"]
    ex = exs[0]
    t = ReferenceTeacher(exs, diversity=3, seed=0)
    diverse = [c.text for c in t.complete([Request(stage1(ex.question), DIVERSE, k) for k in range(12)])]
    assert 2 <= len(set(diverse)) <= 3
    assert diverse == [
        c.text
        for c in ReferenceTeacher(exs, diversity=3, seed=0).complete(
            [Request(stage1(ex.question), DIVERSE, k) for k in range(12)]
        )
    ]
    greedy = {c.text for c in t.complete([Request(stage1(ex.question), GREEDY, k) for k in range(5)])}
    assert greedy == {" " + " ".join(rationale_sentences(ex, 0)[0])}  # greedy: phrasing 0, any sample index
    one = ReferenceTeacher(exs, diversity=1)
    assert (
        len({c.text for c in one.complete([Request(stage1(ex.question), DIVERSE, k) for k in range(8)])}) == 1
    )
    # The seed changes which samples get errors.
    reqs = [Request(stage1(e.question), GREEDY) for e in exs]
    a = [c.text for c in ReferenceTeacher(exs, error_rate=0.5, seed=0).complete(reqs)]
    b = [c.text for c in ReferenceTeacher(exs, error_rate=0.5, seed=1).complete(reqs)]
    assert a != b


def test_identity_changes_with_every_knob(data):
    exs = data["coin_flip"]
    ids = {
        ReferenceTeacher(exs, error_rate=e, diversity=d, seed=s).identity
        for e in (0.0, 0.1)
        for d in (1, 3)
        for s in (0, 1)
    }
    assert len(ids) == 8
    assert (
        ReferenceTeacher(exs, error_rate=0.1, diversity=3, seed=0).identity
        == "reference:v1:err=0.1:div=3:seed=0"
    )
    with pytest.raises(ValueError, match="error_rate"):
        ReferenceTeacher(exs, error_rate=1.5)


def test_stage2_reads_the_rationale_not_the_gold(data):
    ex = data["arithmetic"][0]
    t = ReferenceTeacher(data["arithmetic"])
    assert (
        t.complete([Request(stage2(stage1(ex.question), " 2 + 2 = 4. So she has 99 apples."), GREEDY)])[
            0
        ].text
        == " 99."
    )
    coin = data["coin_flip"][0]
    flipped = "no" if coin.answer == "yes" else "yes"
    state = "heads up" if flipped == "yes" else "tails up"
    t = ReferenceTeacher(data["coin_flip"])
    assert (
        t.complete([Request(stage2(stage1(coin.question), f" So the coin is {state}."), GREEDY)])[0].text
        == f" {flipped}."
    )


def test_unknown_prompts_and_completion_fields(data):
    exs = data["last_letters"]
    t = ReferenceTeacher(exs)
    unknown = stage1('Take the last letters of each words in "Nobody Here" and concatenate them.')
    prompts = [unknown, stage2(unknown, " whatever"), "Hello there", stage1(exs[0].question)]
    outs = t.complete([Request(p, GREEDY) for p in prompts])
    assert [o.text for o in outs[:3]] == [UNSURE] * 3
    for p, o in zip(prompts, outs):
        assert o.finish_reason == "stop"
        assert (o.prompt_tokens, o.completion_tokens) == (len(p.split()), len(o.text.split()))
    cut = t.complete([Request(stage1(exs[0].question), SamplingParams(max_tokens=5))])[0]
    assert cut.finish_reason == "length" and len(cut.text.split()) == 5 == cut.completion_tokens


def test_extra_prompt_kinds_come_first_and_change_identity(data):
    exs = data["arithmetic"]
    kind = PromptKind(
        "echo", lambda p: {"p": p} if p.startswith("Q: ") else None, lambda t, f, r, rng: " echo"
    )
    t = ReferenceTeacher(exs, extra_kinds=[kind])
    assert t.complete([Request(stage1(exs[0].question), GREEDY)])[0].text == " echo"
    assert t.identity != ReferenceTeacher(exs).identity and t.identity.endswith(":+echo")


def test_through_build_teacher_and_the_engine(data, tmp_path):
    from sgft_lab.teachers.cache import TeacherCache
    from sgft_lab.teachers.engine import TeacherAccounting, generate

    exs = data["coin_flip"][:10]
    teacher = build_teacher(TeacherConfig(name="reference", error_rate=0.0, diversity=2, seed=3), exs)
    assert isinstance(teacher, ReferenceTeacher) and teacher.identity == "reference:v1:err=0:div=2:seed=3"
    cache = TeacherCache(tmp_path / "cache.sqlite")
    prompts = [stage1(e.question) for e in exs]
    acc = TeacherAccounting()
    first = generate(
        teacher, cache, prompts, SamplingParams(temperature=0.7, n=2), accounting=acc, progress=False
    )
    again = generate(
        teacher, cache, prompts, SamplingParams(temperature=0.7, n=2), accounting=acc, progress=False
    )
    cache.close()
    assert [[c.text for c in cs] for cs in first] == [[c.text for c in cs] for cs in again]
    assert acc.to_dict()["total"]["teacher_calls"] == 20 and acc.to_dict()["total"]["cache_hits"] == 20
