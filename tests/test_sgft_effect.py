"""SGFT's embedded effect (experiments/effects/sgft.md): the word_problems task, the response model's pool
and undirected guided wording, tuning on val, and the transfer response model."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from conftest import run_sgft
from test_sgft import SGFT_TINY, _results

from sgft_lab.benchmarks.embedded import (
    WORD_ADD,
    WORD_SUB,
    gen_arithmetic,
    gen_word_problems,
    generate_examples,
)
from sgft_lab.benchmarks.record import Example
from sgft_lab.config import BenchmarkConfig, ResponsePretrain
from sgft_lab.data.sg import problem_skeleton, response_pool, response_pretraining_pairs, undirected_question
from sgft_lab.teachers.reference_sg import reference_guidance

BOUNDS = {"max_operand": 10, "max_value": 30}


def _pattern(template: str) -> re.Pattern:
    """A WORD_* sentence template as a regex (any pronoun, relative, number)."""
    parts = re.split(r"(\{\w+\})", template)
    return re.compile("".join(r"[\w ]+?" if p.startswith("{") and p != "{n}" else r"\d+" if p == "{n}"
                              else re.escape(p) for p in parts), re.IGNORECASE)


ADD = [_pattern(t[0]) for t in WORD_ADD]
SUB = [_pattern(t[0]) for t in WORD_SUB]


def test_word_problems_are_the_arithmetic_problems_retold():
    for seed in range(60):
        a = Example("a", *_fields(gen_arithmetic(random.Random(seed), 2, **BOUNDS)))
        w = Example("w", *_fields(gen_word_problems(random.Random(seed), 2, **BOUNDS)))
        assert w.answer == a.answer and w.question != a.question
        assert problem_skeleton(w) == problem_skeleton(a)
        assert reference_guidance(w) == reference_guidance(a)  # the same plan, so the same SG


def _fields(out):
    question, answer, trace = out
    return question, answer, "number", None, None, trace


def test_opposite_verbs_map_to_the_right_operations():
    seen = {"gives_add": 0, "buys_sub": 0}
    for ex in generate_examples("word_problems", 300, 2, 3, params=BOUNDS):
        sentences = re.split(r"(?<=\.) ", ex.question)[1:]  # after the start sentence
        events = [s for s in ex.trace[1:] if s["kind"] != "add_groups"]
        assert len(sentences) == len(events) + 1  # + the question
        for sentence, step in zip(sentences, events):
            if step["kind"] not in ("add", "sub"):
                continue
            is_add = any(p.search(sentence) for p in ADD)
            is_sub = any(p.search(sentence) for p in SUB)
            assert is_add != is_sub, sentence
            assert (step["kind"] == "add") == is_add, (sentence, step["kind"])
            assert str(step["args"][1]) in sentence
            seen["gives_add"] += is_add and " gives " in sentence
            seen["buys_sub"] += is_sub and " buys " in sentence
        steps = reference_guidance(ex)
        for sg, step in zip(steps[1:], events):
            assert sg.startswith({"add": "Add", "sub": "Subtract", "groups": "Multiply",
                                  "share": "Divide"}[step["kind"]])
    # the verbs the arithmetic wording uses for the other operation do occur
    assert seen["gives_add"] > 10 and seen["buys_sub"] > 10


def test_response_pool_holds_no_benchmark_problem_in_any_wording():
    from sgft_lab.benchmarks.embedded import load_embedded

    # a tiny number space, so that the pool's generator draws benchmark problems (retold) by chance
    bounds = {"max_operand": 8, "max_value": 16}
    b = BenchmarkConfig(name="wp", generator="word_problems", difficulty=2, n_train=20, n_val=10, n_test=10,
                        **bounds)
    splits = load_embedded(b)
    bench = {problem_skeleton(ex) for ex in (*splits.train, *splits.val, *splits.test)}
    rp = ResponsePretrain(n_questions=30, difficulties=[2])
    drawn = generate_examples("arithmetic", 400, 2, rp.pool_seed + b.data_seed, params=bounds)
    assert bench & {problem_skeleton(ex) for ex in drawn}  # unfiltered, they would be there
    pool = response_pool(b, splits, rp, "arithmetic", bounds)
    assert len(pool) == 30 and all(ex.meta["generator"] == "arithmetic" for ex in pool)
    assert not bench & {problem_skeleton(ex) for ex in pool}
    assert all(ex.meta["params"] == bounds for ex in pool)


def test_one_operation_response_pool_is_symmetric():
    """At difficulty 1 the benchmark covers every skeleton, so the pool holds them all, each (start, number)
    with every operation that fits the bounds: the arithmetic, not which operation a wording means."""
    from sgft_lab.benchmarks.embedded import load_embedded
    from sgft_lab.data.sg import one_step_key, one_step_kinds

    b = BenchmarkConfig(name="wp", generator="word_problems", difficulty=1, n_train=300, n_val=50, n_test=50,
                        **BOUNDS)
    splits = load_embedded(b)
    bench = (*splits.train, *splits.val, *splits.test)
    pool = response_pool(b, splits, ResponsePretrain(n_questions=600, difficulties=[1]), "arithmetic", BOUNDS)
    assert len(pool) == 600 and all(ex.meta["difficulty"] == 1 for ex in pool)
    assert not {ex.question for ex in bench} & {ex.question for ex in pool}  # none in its own wording
    ops: dict[tuple, set[str]] = {}
    for ex in pool:
        ops.setdefault(one_step_key(ex), set()).add(problem_skeleton(ex)[-1][0])
    both = 0
    for key, kinds in ops.items():
        if key[0] != "start_groups":
            assert kinds == one_step_kinds(*key, BOUNDS), key
            both += {"add", "sub"} <= kinds
    assert both >= 20
    # every add / sub benchmark problem's numbers are in the pool with both operations where both fit
    for ex in bench:
        key = one_step_key(ex)
        if key[0] != "start_groups" and {"add", "sub"} <= one_step_kinds(*key, BOUNDS):
            assert {"add", "sub"} <= ops[key]
    assert one_step_kinds(9, 3, BOUNDS) == {"add", "sub", "share"} and one_step_kinds(3, 9, BOUNDS) == {"add"}


def test_undirected_guided_wording_says_no_direction_and_keeps_the_numbers():
    pool = generate_examples("arithmetic", 80, 2, 1, params=BOUNDS)
    for ex in pool:
        q = undirected_question(ex)
        assert re.findall(r"\d+", q) == re.findall(r"\d+", ex.question)
        assert q.endswith(ex.question[ex.question.rindex("How many"):])
        n_updown = sum(s["kind"] in ("add", "sub") for s in ex.trace)
        assert q.count("changes by") == n_updown
        assert not re.search(r"\b(buys|finds|picks up|wins|gets|gives|loses|sells|uses) \d+ (?!bags|boxes|packs|baskets)",
                             q)
    rp = ResponsePretrain(formats={"guided": 1.0})
    pairs = response_pretraining_pairs(pool, rp, "Q: {question}\n{sg}\nA:", "decoder", 0, "undirected")
    same = response_pretraining_pairs(pool, rp, "Q: {question}\n{sg}\nA:", "decoder", 0)
    assert all("changes by" in p.input for p, ex in zip(pairs, pool) if "changes by" in undirected_question(ex))
    assert [p.label for p in pairs] == [p.label for p in same]  # the same work, only the question reworded
    assert all(p.input.startswith(f"Q: {ex.question}") for p, ex in zip(same, pool))


def test_eval_split_val_and_the_transfer_response_model(tmp_path: Path):
    run_sgft([*SGFT_TINY, "benchmark=embedded_word_problems", "benchmark.n_train=32", "benchmark.n_val=5",
              "benchmark.n_test=6", "method.response_pool_generator=arithmetic",
              "method.response_guided_wording=undirected", "method.eval_split=val", "method.cot_ft=false",
              "+student@method.transfer_response=tiny_small", "method.transfer_response.hidden_size=32",
              "method.transfer_response.num_layers=2", "method.transfer_response.num_heads=2",
              "method.transfer_response.intermediate_size=64", "method.transfer_response.vocab_size=300",
              "method.transfer_response.max_new_tokens=8"], tmp_path)
    (res,) = _results(tmp_path / "outputs" / "runs")
    systems = {e["system"]: e for e in res["entries"]}
    assert set(systems) == {"student", "response_zero_shot", "response_zero_shot_cot", "teacher_sg",
                            "transfer_student", "transfer_response_zero_shot", "transfer_response_zero_shot_cot",
                            "transfer_teacher_sg"}
    assert all(e["split"] == "val" and e["n"] == 5 for e in systems.values())
    run_dir = Path(res["run"]["run_dir"])
    for name in ("guided", "zero_shot", "transfer_guided", "transfer_zero_shot_cot"):
        rows = [json.loads(x) for x in (run_dir / "response" / f"{name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == [f"embedded_word_problems:val:{i}" for i in range(5)]
        assert all(r["split"] == "val" for r in rows)
    guided = [json.loads(x) for x in (run_dir / "response" / "guided.jsonl").read_text().splitlines()]
    transfer = [json.loads(x) for x in (run_dir / "response" / "transfer_guided.jsonl").read_text().splitlines()]
    assert [r["guidance"] for r in guided] == [r["guidance"] for r in transfer]  # the same guide's SG
    d = res["details"]
    assert d["response"]["dir"] != d["transfer_response"]["dir"]
    assert res["models"]["transfer_response"]["parameters"]["total"] != res["models"]["response"]["parameters"][
        "total"]
    ident = json.loads((Path(d["response"]["dir"]) / "identity.json").read_text())
    assert ident["pool"][0] == "arithmetic" and ident["guided_wording"] == "undirected"
    assert json.loads((Path(d["transfer_response"]["dir"]) / "identity.json").read_text())["seed"] == 1000
