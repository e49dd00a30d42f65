"""FDD (issues 7, 16): dataset versioning, the reference teacher's FDD kinds, the easy/hard split and expansion,
the no-feedback control, out-of-domain reads, mixed CoT + PoT rationales, tiny end-to-end runs (CoT, PoT,
control, mixed), resuming without repeated teacher calls, and the real tier's dry run."""

from __future__ import annotations

import random
import shutil

import pytest

from pathlib import Path

from conftest import TINY, compose
from sgft_lab.benchmarks.embedded import generate_examples
from sgft_lab.data.fdd import COT_TRIGGER, POT_TRIGGER, FddDataset, FddProblem, NgramIndex, mixed_input, word_ngrams
from sgft_lab.data.formats import POT_SUFFIX, pot_prompt
from sgft_lab.io import read_json, read_jsonl
from sgft_lab.teachers.base import Request, SamplingParams
from sgft_lab.teachers.reference import UNSURE
from sgft_lab.teachers.reference import ReferenceTeacher
from sgft_lab.teachers.reference_fdd import arithmetic_program, fdd_kinds, fill, remember

EASY = "Solved:\n{question}\nHarder please."
HARD = "Failed:\n{question}\nSimilar please."
HOT = SamplingParams(temperature=0.7, max_tokens=256)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def arith():
    return generate_examples("arithmetic", 30, 2, seed=5, id_prefix="a:")


def teacher_for(examples, error_rate=0.0, seed=0):
    return ReferenceTeacher(examples, error_rate=error_rate, diversity=4, seed=seed, extra_kinds=fdd_kinds(EASY, HARD))


# ------------------------------------------------------------------------------------------ dataset


def test_ngrams_and_overlap():
    assert word_ngrams("A b c", 8) == {("a", "b", "c")}
    assert len(word_ngrams(" ".join(f"w{i}" for i in range(10)), 8)) == 3
    idx = NgramIndex(["Tom has 5 apples and he buys 3 more apples today at the shop."], n=8)
    assert idx.overlap("Tom has 5 apples and he buys 3 more apples today at the shop.") == 1.0
    # 14 words: 7 grams, only the last differs
    fair = "Tom has 5 apples and he buys 3 more apples today at the fair."
    assert idx.overlap(fair) == pytest.approx(6 / 7)
    assert idx.overlap("Mary has 7 pears and she sells 2 of them on the way home now.") == 0.0


def test_dataset_versioning_pairs_and_errors(tmp_path):
    ds = FddDataset([FddProblem("a", "Q one?", "3", rationale=" 1 + 2 = 3."),
                     FddProblem("b", "Q two?", "4"),
                     FddProblem("c", "Q three?", "5", "harder", 1, "a", "ans = 5", {"votes": [5, 5]})])
    assert ds.counts() == {"problems": 3, "with_rationale": 2, "train": 2, "harder": 1, "similar": 0}
    with pytest.raises(ValueError, match="duplicate problem id"):
        ds.add([FddProblem("a", "other", "1")])
    with pytest.raises(ValueError, match="repeats a question"):
        ds.add([FddProblem("d", "  q ONE? ", "1")])
    cot = ds.pairs("ft_cot_token", "decoder")
    assert [p.example_id for p in cot] == ["a", "c"]
    assert cot[0].input == "Q one? ###" and cot[0].label == " 1 + 2 = 3. --> 3"
    assert cot[1].source == "fdd:harder"
    pot = ds.pairs("pot", "decoder")
    assert pot[1].input == "Q three?" + POT_SUFFIX and pot[1].label == " ans = 5"
    # mixed: a PoT sample per program, a CoT sample per CoT rationale, each input naming its format
    both = FddDataset([*ds, FddProblem("m", "Q four?", "6", rationale="ans = 6", cot="3 + 3 = 6.")])
    mixed = {(p.example_id, p.source): p for p in both.pairs("mixed", "encoder_decoder")}
    assert set(mixed) == {("a", "fdd:train:pot"), ("c", "fdd:harder:pot"), ("m", "fdd:train:pot"),
                          ("m", "fdd:train:cot")}
    assert mixed["m", "fdd:train:pot"].input == "Question: Q four?\nLet\u2019s break down the code step by step\n"
    assert mixed["m", "fdd:train:cot"].input == "Question: Q four?\nLet's think step by step.\n"
    assert (mixed["m", "fdd:train:pot"].label, mixed["m", "fdd:train:cot"].label) == ("ans = 6", "3 + 3 = 6. --> 6")
    assert pot_prompt(" Q? ").endswith("(return ans) to solve the question.") and "Let\u2019s" in POT_SUFFIX

    ds.save(tmp_path / "round_1" / "dataset.jsonl")
    back = FddDataset.load(tmp_path / "round_1" / "dataset.jsonl")
    assert [p.to_dict() for p in back] == [p.to_dict() for p in ds]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q", "answer": "1"}\n{"id": "y", "question": 3, "answer": "1"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: row 2: field 'question'"):
        FddDataset.load(bad)
    bad.write_text('{"id": "x", "question": "q", "answer": "1", "origin": "alien"}\n')
    with pytest.raises(ValueError, match="row 1: .*origin 'alien'"):
        FddDataset.load(bad)


def test_datamodule_serves_the_round_version():
    from sgft_lab.config import StudentConfig
    from sgft_lab.data.datamodules import CoTDataModule
    from sgft_lab.students.build import build_student

    ds = FddDataset([FddProblem(str(i), f"Question {i}?", str(i), rationale=f"It is {i}.") for i in range(5)]
                    + [FddProblem("x", "No rationale?", "1")])
    pairs = ds.pairs("ft_cot_token", "decoder")
    tiny = StudentConfig(name_or_path=None, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                         vocab_size=300)
    student = build_student(tiny, corpus=[p.input + p.label for p in pairs])
    dm = CoTDataModule(student, pairs, [], [], batch_size=4)
    assert len(dm.train_pairs) == 5
    batches = list(dm.train_dataloader())
    assert [b["input_ids"].shape[0] for b in batches] == [4, 1]


def test_numeric_rule_and_majority():
    from sgft_lab.answers import fdd_numeric, format_number, majority, same_answer

    assert fdd_numeric(12.00005, "12") and fdd_numeric(1000, "1,000") and not fdd_numeric(12.001, "12")
    assert not fdd_numeric(True, "1") and not fdd_numeric("twelve", "12") and not fdd_numeric(None, "0")
    assert format_number(12.0) == "12" and format_number(2.5) == "2.5" and format_number(1 / 3) == "0.333333"
    near = lambda a, b: abs(a - b) <= 1e-4  # noqa: E731
    assert majority([3.0, None, 5.0, 5.00001], near) == (5.0, [2, 3])
    assert majority([1.0, 2.0], near) == (1.0, [0]) and majority([None, None], near) is None
    assert same_answer("multiarith", "18", "18") and not same_answer("multiarith", "18.0", "18")
    assert same_answer("svamp", "18.0", "18") and same_answer("coin_flip", "yes", "yes")


# ------------------------------------------------------------------------------ reference teacher


def test_variant_kinds_harder_and_similar(arith):
    t = teacher_for(arith)
    parent = arith[0]
    easy, hard = fill(EASY, parent.question), fill(HARD, parent.question)
    out = t.complete([Request(easy, HOT, 0), Request(hard, HOT, 0), Request(easy, HOT, 1)])
    harder, similar, harder2 = (o.text for o in out)
    assert len({parent.question, harder, similar, harder2}) == 4
    assert t.lookup(harder).meta["difficulty"] == parent.meta["difficulty"] + 1
    assert t.lookup(similar).meta["difficulty"] == parent.meta["difficulty"]
    # The teacher can now solve what it wrote, with both rationale kinds.
    assert t.complete([Request(f"Q: {similar}\nA: Let's think step by step.", HOT)])[0].text != UNSURE
    assert "ans =" in t.complete([Request(pot_prompt(similar), HOT)])[0].text
    # Unknown parents and other prompts: not sure.
    assert t.complete([Request(fill(EASY, "Who knows?"), HOT)])[0].text == UNSURE

    # A fresh teacher (a resumed run) re-learns a variant by replaying its request, without the cache.
    fresh = teacher_for(arith)
    assert fresh.lookup(harder) is None
    remember(fresh, [Request(easy, HOT, 0)])
    assert fresh.lookup(harder) is not None and fresh.lookup(harder).answer == t.lookup(harder).answer


def test_pot_programs_execute_to_the_gold_and_errors_are_wrong(arith):
    from sgft_lab.pot import extract_program, run_many

    exs = arith[:6]
    rng = random.Random(0)
    programs = [arithmetic_program(ex.trace, style) for ex in exs[:4] for style in range(4)]
    wrong = [arithmetic_program(ex.trace, 0, err, rng) for ex in exs[4:]
             for err in ("number", "operator", "crash")]
    teacher_out = teacher_for(exs).complete([Request(pot_prompt(exs[0].question), SamplingParams())])[0].text
    res = run_many(programs + wrong + [extract_program(teacher_out)], timeout_s=5)
    golds = [float(ex.answer) for ex in exs[:4] for _ in range(4)]
    assert all(r.ok and abs(r.answer - g) < 1e-9 for r, g in zip(res[:16], golds))
    assert teacher_out.startswith("```python\n") and res[-1].ok and res[-1].answer == float(exs[0].answer)
    for r, ex in zip(res[16:22], [e for e in exs[4:] for _ in range(3)]):
        assert not r.ok or abs(r.answer - float(ex.answer)) > 1e-9
    assert "NameError" in res[18].error


# --------------------------------------------------------------------------- feedback and expansion


def _setup(tmp_path, examples, **fdd):
    """An FDD loop over ``examples`` (the training set) with the reference teacher at error rate 0.2
    (method=fdd_pot when ``rationale`` is mixed)."""
    from sgft_lab.benchmarks.record import Splits
    from sgft_lab.config import validate
    from sgft_lab.methods.fdd import Loop
    from sgft_lab.paths import RunPaths
    from sgft_lab.pot import Programs
    from sgft_lab.run import RunContext

    fdd = {"max_new_per_round": "null", **fdd}  # cap = |original train| (methods.md 4.2)
    method = "fdd_pot" if fdd.get("rationale") == "mixed" else "fdd"
    cfg = validate(compose([f"method={method}", f"paths.output_dir={tmp_path}", "trainer.enable_progress_bar=false",
                            f"paths.cache_dir={tmp_path}/cache", *[f"method.{k}={v}" for k, v in fdd.items()]]))
    cfg.method.easy_prompt, cfg.method.hard_prompt = EASY, HARD
    ctx = RunContext(cfg, RunPaths(tmp_path / "run"), Splits("multiarith", list(examples), [], []))
    ctx._teacher = teacher_for(examples, error_rate=0.2)
    return Loop(ctx, Programs(5.0, 512, 2), NgramIndex([], 8))


def _pool(examples):
    return FddDataset(FddProblem(ex.id, ex.question, ex.answer, rationale="r") for ex in examples)


def test_easy_hard_split_and_variant_counts(tmp_path, arith):
    from sgft_lab.methods.fdd import expand, select_for_expansion

    s = _setup(tmp_path, arith)
    pool = _pool(arith[:20])
    # The split: a completion reaching the gold after '-->' is easy, anything else hard.
    completions = [f"x --> {p.answer}" if i % 3 == 0 else "x --> 999" for i, p in enumerate(pool)]
    feedback = s.spec().score(list(pool), completions, "pool")
    easy = {r["id"] for r in feedback if r["correct"]}
    assert len(easy) == 7 and all(r["correct_format"] for r in feedback)

    grown, counts, cands = expand(s, 1, pool, feedback)
    assert (counts["easy"], counts["hard"]) == (7, 13)
    assert (counts["requested"], counts["requested_harder"], counts["requested_similar"]) == (20, 7, 13)
    assert counts["requested"] == counts["generated"] + counts["unusable"] and counts["unusable"] == 0
    assert counts["generated"] == counts["kept"] + counts["rejected"] == 20
    assert counts["rejected"] == counts["rejected_by"]["unverified"] > 0  # error_rate 0.2: some disagree
    assert len(grown) == 20 + counts["kept"] and len(pool) == 20  # the old version is untouched
    for c in cands:
        assert c.kind == ("harder" if c.parent_id in easy else "similar")
        diff = s.ctx.teacher().lookup(c.question).meta["difficulty"]
        assert diff == 2 + (c.kind == "harder")
        if c.status == "kept":  # 2-of-3 agreement at error rate 0.2 is right in these cases
            assert c.answer == s.ctx.teacher().lookup(c.question).answer and c.rationale
    assert s.ctx.accounting.stages["variant"].teacher_calls == 20
    # 2 samples each, a third only where the first two disagree (2-of-3 agreement decided early).
    calls = s.ctx.accounting.stages["rationale"].teacher_calls
    assert calls == sum(len(c.votes) for c in cands) and 2 * 20 < calls < 3 * 20
    for c in cands:
        agree = max(sum(v == w for w in c.votes) for v in c.votes)
        assert (c.status == "kept") == (agree >= 2) and (len(c.votes) == 2) == (c.votes[0] == c.votes[1])

    # The pool outgrew the cap (|original train| = 30): a seeded sample of 30 is expanded next round.
    chosen = select_for_expansion(s, 2, grown)
    assert len(chosen) == min(len(grown), 30) and chosen == select_for_expansion(s, 2, grown)
    # Asked again (next round), each problem gets the next sample: new questions, none cached.
    again, counts2, cands2 = expand(s, 2, grown, feedback)
    assert counts2["requested"] == 20
    firsts = {c.parent_id: c.question for c in cands}
    assert all(c.sample_index == 1 and c.question != firsts[c.parent_id]
               for c in cands2 if c.parent_id in firsts)


def test_dedupe_against_pool_and_test_and_cap(tmp_path, arith):
    from sgft_lab.methods.fdd import expand, select_for_expansion

    s = _setup(tmp_path, arith, max_new_per_round=3)
    pool = _pool(arith[:4])
    assert len(select_for_expansion(s, 1, pool)) == 3
    feedback = [{"id": p.id, "correct": False} for p in select_for_expansion(s, 1, pool)]
    _, counts, cands = expand(s, 1, pool, feedback)
    assert counts["requested"] == 3 and len({c.parent_id for c in cands}) == 3

    # Make the teacher's new problems collide: one with a test question, one with the pool.
    s2 = _setup(tmp_path / "b", arith, max_new_per_round=10)
    cands_q = [c.question for c in cands]
    s2.test_index = NgramIndex([cands_q[0]], 8)
    pool2 = FddDataset(list(pool) + [FddProblem("dup", cands_q[1], "1")])
    _, counts2, cands2 = expand(s2, 1, pool2, feedback + [{"id": "dup", "correct": True}])
    status = {c.question: c.status for c in cands2}
    assert status[cands_q[0]] == "duplicate_eval" and status[cands_q[1]] == "duplicate_pool"
    assert counts2["rejected_by"]["duplicate_eval"] >= 1 and counts2["rejected_by"]["duplicate_pool"] >= 1
    # Dropped problems are never sent to the teacher for labelling.
    assert all(c.votes == [] for c in cands2 if c.status.startswith("duplicate"))
    assert s2.ctx.accounting.stages["rationale"].teacher_calls == sum(len(c.votes) for c in cands2)


def test_control_draws_without_feedback(tmp_path, arith):
    """The no-feedback control expands as many problems as FDD would (the same seeded draw of the pool, never
    the student's answers) and asks the similar (hard) prompt for each."""
    from sgft_lab.methods.fdd import expand, no_feedback, select_for_expansion

    s = _setup(tmp_path, arith, max_new_per_round=10, feedback="false")
    pool = _pool(arith[:20])
    drawn = select_for_expansion(s, 1, pool)
    assert len(drawn) == 10 and drawn == select_for_expansion(s, 1, pool)  # seeded: a resumed run asks the same
    s.ctx.cfg.seed = 1
    assert [p.id for p in select_for_expansion(s, 1, pool)] != [p.id for p in drawn]  # a seeded random draw
    s.ctx.cfg.seed = 0
    _, counts, cands = expand(s, 1, pool, no_feedback(drawn))
    assert [c.parent_id for c in cands] == [p.id for p in drawn]
    assert all(c.kind == "similar" and c.prompt == fill(HARD, pool_q) for c, pool_q in
               zip(cands, [p.question for p in drawn]))
    assert (counts["easy"], counts["hard"], counts["drawn"], counts["requested"]) == (None, None, 10, 10)
    # FDD on the same pool asks exactly as many (its split decides only the prompts).
    fdd = _setup(tmp_path / "fdd", arith, max_new_per_round=10)
    chosen = select_for_expansion(fdd, 1, pool)
    _, fdd_counts, _ = expand(fdd, 1, pool, [{"id": p.id, "correct": i % 2 == 0} for i, p in enumerate(chosen)])
    assert chosen == drawn and fdd_counts["requested"] == counts["requested"] and fdd_counts["easy"] == 5


def test_ood_sets_resolve_per_tier():
    """Real OOD benchmarks load from the data dir (capped); an embedded in-domain benchmark reads the stand-ins,
    sized like its test split; a non-numeric task reads none; bad lists fail before anything runs."""
    from sgft_lab.benchmarks import load_benchmark
    from sgft_lab.config import ConfigError, validate
    from sgft_lab.fdd_evaluation import ood_sets

    def sets(*ov):
        cfg = validate(compose(["method=fdd_pot", *ov]))
        return ood_sets(cfg, load_benchmark(cfg.benchmark, cfg.paths.data_dir))

    real = sets("benchmark=gsm8k", f"paths.data_dir={FIXTURES}", "trainer.max_eval_examples=3")
    assert [(s.asked, s.name, s.task) for s in real] == [(b, b, b) for b in ("asdiv", "svamp", "multiarith")]
    assert all(0 < len(s.examples) <= 3 and s.examples[0].id.startswith(s.name) for s in real)
    emb = sets("benchmark.n_test=7")
    assert [s.name for s in emb] == ["embedded_arithmetic_deeper", "embedded_arithmetic_bignum",
                                     "embedded_arithmetic_onestep"]
    assert [len(s.examples) for s in emb] == [7, 7, 7]
    assert [s.examples[0].meta["difficulty"] for s in emb] == [3, 2, 1]
    test_q = {x.question for x in load_benchmark(validate(compose([])).benchmark).test}
    assert not test_q & {x.question for s in emb for x in s.examples}  # other questions than the in-domain test
    assert sets("method=fdd", "benchmark=embedded_coin_flip") == []
    with pytest.raises(ConfigError, match="no embedded stand-in"):
        sets("method.ood_benchmarks=[gsm8k]")
    with pytest.raises(ConfigError, match="distinct benchmarks"):
        sets("method.ood_benchmarks=[embedded_arithmetic]")


def test_mixed_reads_name_their_format(tmp_path, arith):
    from sgft_lab.evaluation import EvalSpec

    s = _setup(tmp_path, arith, rationale="mixed")
    assert [(name, sp.metric) for name, sp in s.reads()] == [("student", "fdd_numeric"), ("cot", "ftcot")]
    pot, cot = (sp.prompts(arith[:1], "decoder")[0] for _, sp in s.reads())
    assert (pot, cot) == (mixed_input(arith[0].question, POT_TRIGGER), mixed_input(arith[0].question, COT_TRIGGER))
    assert s.spec() is not None and isinstance(s.spec(), EvalSpec) and s.spec().scorer is not None


# --------------------------------------------------------------------------------------- end to end

FAST = [o for o in TINY if not o.startswith(("benchmark.n_train", "trainer.max_epochs"))] + [
    "benchmark.n_train=24", "method.epochs_per_round=1", "method.eval_every_n_epochs=null",
    "method.rounds=2", "method.max_new_per_round=null", "student.max_new_tokens=40"]


def _run(tmp_path, *overrides):
    from sgft_lab.config import validate
    from sgft_lab.run import execute

    cfg = validate(compose([*FAST, f"paths.output_dir={tmp_path}", *overrides]))
    return execute(cfg, run_dir=tmp_path / "run")


@pytest.fixture(scope="module")
def cot_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fdd_cot")
    return tmp, _run(tmp, "method=fdd")


@pytest.mark.slow
def test_cot_end_to_end_records_every_round(cot_run):
    tmp, res = cot_run
    d = res["details"]
    assert d["metric"] == "ftcot" and d["rationale"] == "cot" and len(d["rounds"]) == 3
    sizes = [b["dataset_problems"] for b in d["rounds"]]
    assert sizes[0] == 24 and sizes[0] < sizes[1] < sizes[2]
    # Per round: its model selected on a 5% dev split of the round's own data (methods.md 4.2), test read once
    # at that epoch; each the round's own number, the headline the last round's.
    for b in d["rounds"]:
        (e,) = [e for e in res["entries"] if e["round"] == b["round"] and e["split"] == "test" and not e["benchmark"]]
        (v,) = [e for e in res["entries"] if e["round"] == b["round"] and e["split"] == "val"]
        assert (e["selection"], e["protocol"], v["selection"]) == ("dev_selected", "clean", "dev_selected")
        assert e["accuracy"] == b["metrics"]["accuracy"] and e["n"] == 8 and e["epoch"] == v["epoch"]
        n_solved = b["train_samples"] + b["dev_problems"]  # one rationale per problem that has one
        assert v["n"] == b["dev_problems"] == max(1, round(0.05 * n_solved))
    assert res["metrics"] == d["rounds"][-1]["metrics"]
    for r in (1, 2):
        c = d["rounds"][r]["counts"]
        assert c["easy"] + c["hard"] == c["requested"] == min(sizes[r - 1], 24)  # capped at |train|
        assert c["kept"] == sizes[r] - sizes[r - 1]
        rd = tmp / "run" / "rounds" / f"round_{r}"
        for name in ("dataset.jsonl", "counts.json", "feedback.jsonl", "generated.jsonl", "data/train.jsonl",
                     "summary.json", "student/weights.pt", "predictions/epoch_000.jsonl", "predictions/test.jsonl"):
            assert (rd / name).is_file(), name
        assert len(read_jsonl(rd / "dataset.jsonl")) == sizes[r]
    rows = read_jsonl(tmp / "run" / "rounds" / "round_2" / "data" / "train.jsonl")
    assert all(" --> " in p["label"] for p in rows)
    csv = (tmp / "run" / "metrics.csv").read_text().splitlines()
    assert "round_test_accuracy_ftcot" in csv[0] and len(csv) == 4
    assert res["teacher"]["calls"] > 0


@pytest.mark.slow
def test_resume_skips_finished_rounds_without_teacher_calls(cot_run):
    tmp, first = cot_run
    run_dir = tmp / "run"
    r2 = run_dir / "rounds" / "round_2"
    before = read_jsonl(r2 / "dataset.jsonl")
    # A kill inside round 2's expansion: only round 2's feedback survived.
    for p in r2.iterdir():
        if p.name != "feedback.jsonl":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    res = _run(tmp, "method=fdd")
    assert res["teacher"]["calls"] == 0 and res["teacher"]["cache_hits"] > 0
    assert [b.get("resumed", False) for b in res["details"]["rounds"]] == [True, True, False]
    assert read_jsonl(r2 / "dataset.jsonl") == before  # same problems, labels and rationales
    # Rerun once more: everything is finished, nothing is recomputed.
    again = _run(tmp, "method=fdd")
    assert again["teacher"]["calls"] == 0 and all(b["resumed"] for b in again["details"]["rounds"])
    assert again["entries"] == res["entries"]
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 4  # rounds logged once each


class Killed(BaseException):
    """Stands in for a kill: nothing after it runs (BaseException, so no handler swallows it)."""


@pytest.mark.slow
def test_killed_mid_labelling_repeats_no_teacher_call(tmp_path, monkeypatch):
    from sgft_lab import fdd_expansion as fdd
    from sgft_lab.teachers.cache import TeacherCache

    real_label = fdd.label

    def dying(s, cands):  # round 2: half of the new problems get labelled (cached), then the run dies
        if cands and cands[0].id.startswith("fdd:r2:"):
            real_label(s, cands[: len(cands) // 2])
            raise Killed
        real_label(s, cands)

    monkeypatch.setattr(fdd, "label", dying)
    with pytest.raises(Killed):
        _run(tmp_path, "method=fdd")
    monkeypatch.setattr(fdd, "label", real_label)
    cache_file = tmp_path / "cache" / "teacher_cache.sqlite"
    at_kill = len(TeacherCache(cache_file))
    res = _run(tmp_path, "method=fdd")
    assert [b.get("resumed", False) for b in res["details"]["rounds"]] == [True, True, False]
    # Each call of the resumed run added a new cache row: nothing asked before the kill was asked again.
    assert 0 < res["teacher"]["calls"] == len(TeacherCache(cache_file)) - at_kill
    assert res["teacher"]["cache_hits"] > 0


@pytest.mark.slow
def test_pot_end_to_end(tmp_path):
    res = _run(tmp_path, "method=fdd_pot", "logger.wandb=true", "logger.offline=true")
    d = res["details"]
    assert d["metric"] == "fdd_numeric" and d["rationale"] == "pot" and len(d["rounds"]) == 3
    assert {e["metric"] for e in res["entries"]} == {"fdd_numeric"}
    d0 = tmp_path / "run" / "rounds" / "round_0"
    samples = read_jsonl(d0 / "teacher" / "samples.jsonl")
    assert all(s["correct"] == (s["ok"] and float(s["executed"]) == float(s["answer"])) for s in samples)
    train = read_jsonl(d0 / "data" / "train.jsonl")
    assert train and all(p["input"].endswith(POT_SUFFIX) and "ans =" in p["label"] for p in train)
    preds = read_jsonl(d0 / "predictions" / "epoch_000.jsonl")
    assert {p["split"] for p in preds} == {"val"} and all("error" in p for p in preds)  # dev only per epoch
    assert {p["split"] for p in read_jsonl(d0 / "predictions" / "test.jsonl")} == {"test"}
    gen = read_jsonl(tmp_path / "run" / "rounds" / "round_1" / "generated.jsonl")
    kept = [g for g in gen if g["status"] == "kept"]
    assert kept and all(sum(v is not None and abs(v - float(g["answer"])) <= 1e-4 for v in g["votes"]) >= 2
                        for g in kept)
    assert read_json(tmp_path / "run" / "rounds" / "round_1" / "counts.json")["requested"] == 24
    # W&B (offline): one run for the whole FDD run (every round's fit logs into it), its summary the headline.
    runs = sorted(p.parts[-4] for p in (tmp_path / "run").rglob("*.wandb"))  # <dir>/wandb/offline-run-*/
    assert runs == ["run"]


@pytest.fixture(scope="module")
def control_run(tmp_path_factory):
    """The no-feedback control at cot_run's settings (method=fdd), its eval sets capped at 6; a student
    feedback call would fail the run."""
    from sgft_lab.methods import fdd

    tmp = tmp_path_factory.mktemp("fdd_control")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fdd, "student_feedback", lambda *a: pytest.fail("the control read the student's answers"))
        return tmp, _run(tmp, "method=fdd", "method.feedback=false", "trainer.max_eval_examples=6")


OOD = ("embedded_arithmetic_deeper", "embedded_arithmetic_bignum", "embedded_arithmetic_onestep")


@pytest.mark.slow
def test_control_asks_as_many_without_feedback(control_run, cot_run):
    from sgft_lab.config import FDD_HARD_PROMPT

    tmp, res = control_run
    d, fdd_rounds = res["details"], cot_run[1]["details"]["rounds"]
    assert (d["feedback"], d["system"], len(d["rounds"])) == (False, "no_feedback", 3)
    assert {e["system"] for e in res["entries"]} == {"no_feedback"}
    for r in (1, 2):
        c, fc = d["rounds"][r]["counts"], fdd_rounds[r]["counts"]
        assert c["requested"] == c["requested_similar"] == fc["requested"] == 24  # FDD's number, all similar
        assert (c["easy"], c["hard"], c["drawn"]) == (None, None, 24) and fc["easy"] + fc["hard"] == 24
        rd = tmp / "run" / "rounds" / f"round_{r}"
        assert all(row["correct"] is None for row in read_jsonl(rd / "feedback.jsonl"))
        gen = read_jsonl(rd / "generated.jsonl")
        assert all(g["kind"] == "similar" and g["prompt"].startswith(FDD_HARD_PROMPT.split("{")[0]) for g in gen)
    csv = (tmp / "run" / "metrics.csv").read_text().splitlines()
    assert "drawn" in csv[0] and ",easy," not in csv[0]
    # Killed inside round 2 (its whole folder lost): the rerun draws the same problems and asks the teacher
    # nothing new.
    r2 = tmp / "run" / "rounds" / "round_2"
    before = read_jsonl(r2 / "dataset.jsonl")
    shutil.rmtree(r2)
    again = _run(tmp, "method=fdd", "method.feedback=false", "trainer.max_eval_examples=6")
    assert again["teacher"]["calls"] == 0 and read_jsonl(r2 / "dataset.jsonl") == before
    assert again["entries"] == res["entries"]


@pytest.mark.slow
def test_ood_entries_every_round(control_run, cot_run):
    """One OOD entry per round per OOD set, capped like the in-domain test, with the run's metric, and equal to
    the accuracy of the saved predictions on that set's questions."""
    for (tmp, res), cap in ((control_run, 6), (cot_run, 8)):
        for b in res["details"]["rounds"]:
            r = b["round"]
            ood = {e["benchmark"]: e for e in res["entries"] if e["round"] == r and e["benchmark"]}
            assert set(ood) == set(OOD) and set(res["details"]["ood"]) == {"asdiv", "svamp", "multiarith"}
            for name, e in ood.items():
                rows = read_jsonl(tmp / "run" / "rounds" / f"round_{r}" / "predictions" / f"test_{name}.jsonl")
                assert (e["n"], e["metric"], e["split"], e["selection"]) == (cap, "ftcot", "test", "dev_selected")
                assert e["accuracy"] == sum(x["correct"] for x in rows) / len(rows)
                assert all(x["id"].startswith(f"{name}:test:") for x in rows) and len(rows) == cap
            assert {x["benchmark"] for x in b["reads"]} == set(OOD)
    header = (cot_run[0] / "run" / "metrics.csv").read_text().splitlines()[0]
    assert all(f"round_test_accuracy_ftcot_{name}" in header for name in OOD)


@pytest.mark.slow
def test_report_rows_per_round_and_system_with_ood_columns(control_run, cot_run):
    from sgft_lab.report.collect import entries, load_runs
    from sgft_lab.report.table import RENDERERS, build_table

    table = build_table(entries(load_runs([control_run[0], cot_run[0]])), n_boot=50)
    labels = {r.label for r in table.rows}
    assert {f"fdd round {r}" for r in range(3)} | {f"fdd:no_feedback round {r}" for r in range(3)} == labels
    assert set(table.benchmarks) == {"embedded_arithmetic", *OOD}
    text = RENDERERS["md"](table)
    assert "fdd:no_feedback round 2" in text and "embedded_arithmetic_bignum" in text


@pytest.mark.slow
def test_mixed_trains_both_formats_and_reads_both(tmp_path):
    from sgft_lab.benchmarks.embedded import rationale_answer

    res = _run(tmp_path, "method=fdd_pot", "method.rationale=mixed", "method.rounds=1")
    rd = tmp_path / "run" / "rounds"
    for r in (0, 1):
        pairs = read_jsonl(rd / f"round_{r}" / "data" / "train.jsonl")
        pot = [p for p in pairs if p["source"].endswith(":pot")]
        cot = [p for p in pairs if p["source"].endswith(":cot")]
        assert pot and cot and len(pot) + len(cot) == len(pairs)
        assert all(p["input"].startswith("Question: ") and p["input"].endswith(f"\n{POT_TRIGGER}\n")
                   and "ans =" in p["label"] for p in pot)
        assert all(p["input"].endswith(f"\n{COT_TRIGGER}\n") and " --> " in p["label"] for p in cot)
    assert {p["format"] for p in read_jsonl(rd / "round_0" / "teacher" / "samples.jsonl")} == {"pot", "cot"}
    gen = [g for g in read_jsonl(rd / "round_1" / "generated.jsonl") if g["status"] == "kept"]
    assert any(g["cot"] for g in gen)  # a CoT rationale that reaches the programs' label, or none
    assert all(g["cot"] is None or rationale_answer("arithmetic", g["cot"]) == g["answer"] for g in gen)
    assert all("error" in x for x in read_jsonl(rd / "round_1" / "feedback.jsonl"))  # feedback: programs run
    for r in (0, 1):
        got = {(e["system"], e["benchmark"], e["metric"]) for e in res["entries"] if e["round"] == r
               and e["split"] == "test"}
        assert got == {(s, b, m) for s, m in (("student", "fdd_numeric"), ("cot", "ftcot")) for b in (None, *OOD)}
    assert res["metrics"]["accuracy"] == next(e["accuracy"] for e in res["entries"] if e["round"] == 1 and
                                               e["system"] == "student" and e["split"] == "test" and not e["benchmark"])


def test_real_tier_dry_run_codet5(tmp_path):
    """The real tier composes and plans: CodeT5+ students, GSM8K with the real OOD sets (fixture files)."""
    from sgft_lab.config import validate
    from sgft_lab.run import execute

    for student, size in (("codet5p-770m-py", "770m"), ("codet5p-220m-py", "220m")):
        cfg = validate(compose(["method=fdd_pot", f"student={student}", "benchmark=gsm8k", "dry_run=true",
                                f"paths.data_dir={FIXTURES}", f"paths.output_dir={tmp_path}"]))
        assert (cfg.student.name_or_path, cfg.student.family.value) == (f"Salesforce/codet5p-{size}-py",
                                                                         "encoder_decoder")
        plan = execute(cfg, run_dir=tmp_path / student)
        assert (tmp_path / student / "plan.json").is_file() and plan["student"]["name"] == student
    tiny = validate(compose(["+experiment=fdd/control", "tier=embedded", "student=codet5p-220m-py"]))
    assert tiny.student.name == "tiny_small" and tiny.method.ood_benchmarks == ["asdiv", "svamp", "multiarith"]


def test_config_errors(tmp_path):
    from sgft_lab.config import ConfigError

    with pytest.raises(ConfigError, match=r"method\.rationale"):
        _run(tmp_path, "method=fdd", "method.rationale=both")
    with pytest.raises(ConfigError, match="needs numeric answers"):
        _run(tmp_path, "method=fdd_pot", "benchmark=embedded_coin_flip")
    with pytest.raises(ConfigError, match="needs teacher=reference"):
        _run(tmp_path, "method=fdd", "method.verify=reference", "teacher=replay")
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing written on a config error


def test_retrain_continue_starts_each_round_from_the_previous_rounds_student(tmp_path, monkeypatch):
    """method.retrain=continue (methods.md 4.2's option, the effects/fdd preset's choice): round r's student
    is loaded with round r-1's selected weights before it trains; retrain=base starts from the base student."""
    from sgft_lab.methods import fdd as fdd_method

    loads: list[tuple[int, str]] = []
    built = []
    real = fdd_method.base_student

    def spy(lp, corpus):
        student = real(lp, corpus)
        built.append(student)
        k, load = len(built), student.load_trainable
        student.load_trainable = lambda path, *a, **kw: (loads.append((k, str(path))), load(path, *a, **kw))[1]
        return student

    monkeypatch.setattr(fdd_method, "base_student", spy)
    _run(tmp_path / "c", "method=fdd_pot", "method.retrain=continue", "method.rounds=1")
    first = {}
    for k, path in loads:
        first.setdefault(k, path)
    # student 1 = round 0's (its first load: its own best epoch), student 2 = round 1's: round 0's weights first
    assert first[2].endswith("rounds/round_0/student/weights.pt") and "student/weights.pt" not in first[1]
    loads.clear(), built.clear()
    _run(tmp_path / "b", "method=fdd_pot", "method.retrain=base", "method.rounds=1")
    assert not any("round_0/student/weights.pt" in p for k, p in loads if k == 2)
