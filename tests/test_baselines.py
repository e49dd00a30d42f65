"""Prompting baselines (zero_shot, zero_shot_cot, few_shot_cot) and the golden-rationale reference teacher."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import TINY, compose, run_sgft
from sgft_lab.answers import score
from sgft_lab.benchmarks.embedded import generate_examples, rationale_sentences
from sgft_lab.benchmarks.loaders import default_config, load_real
from sgft_lab.config import validate
from sgft_lab.data.formats import zs_cot_stage1, zs_cot_stage2
from sgft_lab.io import read_jsonl
from sgft_lab import prompting as bl
from sgft_lab.run import execute
from sgft_lab.teachers.base import Request, SamplingParams
from sgft_lab.teachers.reference import UNSURE, ReferenceTeacher

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FEW_SHOT_JSON = SHARED_DATA / "fine_tune_cot_splits" / "few_shot_cot_prompts.json"
GREEDY = SamplingParams(temperature=0.0, max_tokens=128)


# --- exact prompt strings (methods.md 2.4 and 5) ------------------------------------------------------------


def test_zero_shot_prompts():
    assert bl.zero_shot_prompt(" How many? ", "decoder") == "Q: How many?\n\nA:"
    assert bl.zero_shot_prompt("How many?", "encoder_decoder") == "question: How many?"


def test_zero_shot_cot_prompt_are_the_teachers_two_stages():
    s1 = bl.zero_shot_cot_prompt("How many?")
    assert s1 == "Q: How many?\nA: Let's think step by step." == zs_cot_stage1("How many?")
    s2 = bl.zero_shot_cot_prompt("How many?", " 2 and 3 make 5.")
    assert s2 == "Q: How many?\nA: Let's think step by step. 2 and 3 make 5.\nTherefore, the answer is"
    assert s2 == zs_cot_stage2(s1, " 2 and 3 make 5.")  # stage 2 is not stripped


def test_few_shot_cot_prompt():
    block = "Q: a?\nA: b. The answer is 1.\nQ: c?\nA: d. The answer is 2."
    assert bl.few_shot_cot_prompt(block, " e? ") == block + "\nQ: e?\nA:"


def test_embedded_exemplars_use_reference_rationales():
    train = generate_examples("arithmetic", 5, 2, seed=1)
    block = bl.embedded_few_shot_prompt(train, 2)
    first = " ".join(rationale_sentences(train[0], 0)[0])
    assert block.startswith(f"Q: {train[0].question}\nA: {first} The answer is {train[0].answer}.\nQ: ")
    assert block.count("\nA: ") == 2 and train[2].question not in block
    with pytest.raises(ValueError, match="needs 8 training examples"):
        bl.embedded_few_shot_prompt(train, 8)


def test_load_few_shot_prompt_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="few_shot_cot_prompts.json"):
        bl.load_few_shot_prompt(tmp_path, "gsm8k")
    f = tmp_path / bl.FEW_SHOT_FILE
    f.parent.mkdir(parents=True)
    f.write_text('{"gsm8k": {"prompt": "Q: x?\\nA: y. The answer is 1."},\n'
                 ' "svamp": {"comment": "no prompt"}}')
    assert bl.load_few_shot_prompt(tmp_path, "gsm8k") == "Q: x?\nA: y. The answer is 1."
    with pytest.raises(ValueError, match=r"tracking_shuffled_objects.*'-'.*known: gsm8k, svamp"):
        bl.load_few_shot_prompt(tmp_path, "tracking_shuffled_objects")
    with pytest.raises(ValueError, match=r"'svamp', field 'prompt'"):
        bl.load_few_shot_prompt(tmp_path, "svamp")
    f.write_text('{"gsm8k":\n  {"prompt": }}')
    with pytest.raises(ValueError, match=r"few_shot_cot_prompts.json:2: not valid JSON"):
        bl.load_few_shot_prompt(tmp_path, "gsm8k")


# --- runs ---------------------------------------------------------------------------------------------------

TINY_STAGES = ["trainer.threads=1"]  # zero_shot_cot's own stage lengths are not keys of the other two


@pytest.mark.slow
def test_each_baseline_runs_untrained_on_the_embedded_benchmark(tmp_path: Path):
    run_sgft(["-m", "method=zero_shot,zero_shot_cot,few_shot_cot", *TINY, *TINY_STAGES], tmp_path)
    found = (json.loads(p.read_text()) for p in (tmp_path / "outputs").rglob("results.json"))
    results = {r["run"]["method"]: r for r in found}
    assert set(results) == {"zero_shot", "zero_shot_cot", "few_shot_cot"}
    templates = {"zero_shot": "zs", "zero_shot_cot": "zs_cot", "few_shot_cot": "fs_cot"}
    for name, r in results.items():
        assert r["teacher"]["calls"] == 0 and r["run"]["teacher"] is None
        assert r["details"]["template"] == templates[name] and (r["data"]["n_val"], r["data"]["n_test"]) == (8, 8)
        run_dir = Path(r["run"]["run_dir"])
        rows = read_jsonl(run_dir / "predictions" / "epoch_000.jsonl")
        assert [row["split"] for row in rows] == ["val"] * 8 + ["test"] * 8
        # Evaluated once: one entry per split, the same number under every protocol.
        test = [e for e in r["entries"] if e["split"] == "test"]
        assert [(e["system"], e["selection"], e["n"]) for e in test] == [("student", "single", 8)]
        assert test[0]["accuracy"] == r["metrics"]["accuracy"] == sum(row["correct"] for row in rows[8:]) / 8
        assert not (run_dir / "checkpoints").exists()  # nothing was trained
        if name == "zero_shot_cot":
            assert all("rationale" in row for row in rows)
        if name == "few_shot_cot":
            block = (run_dir / "data" / "few_shot_prompt.txt").read_text()
            assert block.startswith("Q: ") and block.count("The answer is") == 4
            d = r["details"]
            assert d["few_shot_source"].startswith("embedded") and d["max_input_length"] == 768


def _cfg(overrides: list[str]):
    return validate(compose(overrides))


def test_zero_shot_cot_refuses_encoder_decoder_students_before_writing(tmp_path: Path):
    with pytest.raises(ValueError, match="decoder-only"):
        _cfg(["method=zero_shot_cot", "student=hf", "student.name_or_path=t5-small",
              "student.family=encoder_decoder"])


def test_few_shot_cot_without_a_prompt_fails_before_writing(tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    prompts = {"coin_flip": {"prompt": "Q: x?\nA: The answer is yes."}}
    (data / bl.FEW_SHOT_FILE).write_text(json.dumps(prompts))
    cfg = _cfg(["method=few_shot_cot", "benchmark=tracking_shuffled_objects", f"paths.data_dir={data}",
                f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="no few-shot CoT prompt for 'tracking_shuffled_objects'"):
        execute(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "run" / "student").exists()


def _fake_generate(calls: list[list[str]], reply: str):
    def generate(model, tokenizer, family, prompts, max_new_tokens, batch_size=64, progress=False,
                 max_input_tokens=None, **kw):
        calls.append(list(prompts))
        return [reply] * len(prompts)
    return generate


def _few_shot_run(monkeypatch, tmp_path: Path, data_dir: Path, benchmark: str, reply: str):
    calls: list[list[str]] = []
    monkeypatch.setattr("sgft_lab.students.generation.generate", _fake_generate(calls, reply))
    cfg = _cfg(["method=few_shot_cot", f"benchmark={benchmark}", f"paths.data_dir={data_dir}",
                "trainer.max_eval_examples=4", "print_table=false", "trainer.enable_progress_bar=false",
                "student.hidden_size=32", "student.num_layers=1", "student.num_heads=2",
                "student.intermediate_size=64", "student.vocab_size=300", f"paths.output_dir={tmp_path}"])
    res = execute(cfg, run_dir=tmp_path / "run")
    (prompts,) = calls
    return res, prompts, read_jsonl(tmp_path / "run" / "predictions" / "epoch_000.jsonl")


def test_few_shot_cot_on_a_fixture_benchmark(monkeypatch, tmp_path: Path):
    data = tmp_path / "data"
    shutil.copytree(FIXTURES, data)
    block = "Q: Is it?\nA: It is. The answer is yes."
    (data / bl.FEW_SHOT_FILE).write_text(json.dumps({"strategy_qa": {"prompt": block}}))
    # The completion the (faked) student writes: scored with the prefix, first candidate after it.
    reply = " No wait. The answer is yes. no"
    res, prompts, rows = _few_shot_run(monkeypatch, tmp_path, data, "strategy_qa", reply)
    assert prompts == [bl.few_shot_cot_prompt(block, r["question"]) for r in rows]
    assert all(p.startswith(block + "\nQ: ") and p.endswith("\nA:") for p in prompts)
    assert [r["correct"] for r in rows] == [r["answer"].lower() == "yes" for r in rows]
    assert all(r["extracted"] == "yes" for r in rows)
    assert res["teacher"]["calls"] == 0 and res["details"]["few_shot_source"].endswith("[strategy_qa]")


@pytest.mark.shared
@pytest.mark.skipif(not FEW_SHOT_JSON.is_file(),
                    reason=f"{FEW_SHOT_JSON} (../shared beside the repo) is absent")
def test_few_shot_cot_on_a_real_benchmark_uses_the_official_exemplars(monkeypatch, tmp_path: Path):
    official = json.loads(FEW_SHOT_JSON.read_text())["coin_flip"]["prompt"]
    res, prompts, rows = _few_shot_run(monkeypatch, tmp_path, SHARED_DATA, "coin_flip", " The answer is no.")
    assert len(prompts) == len(rows) == res["data"]["n_val"] + res["data"]["n_test"] > 0
    for p, r in zip(prompts, rows):
        assert p == f"{official}\nQ: {r['question']}\nA:"
    assert (Path(res["run"]["run_dir"]) / "data" / "few_shot_prompt.txt").read_text() == official


# --- golden rationales (teacher=reference on real benchmarks) -----------------------------------------------


def _ask(teacher, question: str) -> tuple[str, str]:
    p1 = zs_cot_stage1(question)
    (c1,) = teacher.complete([Request(p1, GREEDY)])
    (c2,) = teacher.complete([Request(zs_cot_stage2(p1, c1.text), GREEDY)])
    return c1.text, c2.text


def test_golden_rationale_for_gsm8k_fixture():
    cfg = default_config("gsm8k")
    cfg.val_fraction = 0.0
    splits = load_real(cfg, FIXTURES)
    teacher = ReferenceTeacher(splits.train, error_rate=0.5)  # error_rate does not touch golden rationales
    ex = next(e for e in splits.train if e.answer == "1,000")
    assert "<<" in ex.rationale
    rationale, answer = _ask(teacher, ex.question)
    assert rationale == " It makes 250 * 4 = 1000 dollars."  # calculator annotation removed
    assert answer == " 1,000." and score("gsm8k", "zs_cot", answer, ex.answer).correct
    multi = next(e for e in splits.train if e.answer == "26")
    assert _ask(teacher, multi.question)[0] == " Lia buys 3 * 12 = 36 eggs.\nShe has 36 - 10 = 26 left."
    # The answer stage gives the gold whatever rationale the prompt holds; unknown questions stay unsure.
    p2 = zs_cot_stage2(zs_cot_stage1(multi.question), " something else entirely")
    assert teacher.complete([Request(p2, GREEDY)])[0].text == " 26."
    assert _ask(teacher, splits.test[0].question) == (UNSURE, UNSURE)
    assert teacher.identity.endswith(":golden-g1")


def test_golden_rationale_for_strategy_qa_and_embedded_identity_unchanged():
    splits = load_real(default_config("strategy_qa"), FIXTURES)
    teacher = ReferenceTeacher(splits.train + splits.test)
    for ex in splits.train + splits.test:
        rationale, answer = _ask(teacher, ex.question)
        assert rationale == " " + ex.rationale.strip()
        assert score("strategy_qa", "zs_cot", answer, ex.answer).correct
    embedded = ReferenceTeacher(generate_examples("coin_flip", 3, 4, seed=0), error_rate=0.0, diversity=3)
    assert embedded.identity == "reference:v1:err=0:div=3:seed=0"  # embedded cache entries stay valid
