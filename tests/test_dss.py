"""Distilling Step-by-Step (method=dss): the two task-prefixed formats, the weighted multi-task loss, the pairs
the method trains on, inference by the label task alone, and one end-to-end run on each student family."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from conftest import CORPUS, TINY, compose

from sgft_lab.answers import PREFIXES, extract, score, score_strict
from sgft_lab.benchmarks.record import Example
from sgft_lab.config import StudentConfig, TrainerConfig, validate
from sgft_lab.data.datamodules import CoTDataModule
from sgft_lab.data.formats import TASK_LABEL, TASK_RATIONALE, Pair, student_input, student_label
from sgft_lab.io import read_jsonl
from sgft_lab.methods.dss import multitask_pairs
from sgft_lab.rationales import TeacherSample
from sgft_lab.students.build import build_student
from sgft_lab.students.module import StudentModule


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest.one_torch_thread)."""


# --- formats and answer extraction ----------------------------------------------------------------------------


def test_task_prefixed_formats_for_both_families():
    assert student_input("dss_predict", " 3 plus 4? ", "decoder") == "predict: 3 plus 4? ###"
    assert student_input("dss_explain", " 3 plus 4? ", "decoder") == "explain: 3 plus 4? ###"
    assert student_input("dss_predict", " 3 plus 4? ", "encoder_decoder") == "predict: 3 plus 4?"
    assert student_input("dss_explain", " 3 plus 4? ", "encoder_decoder") == "explain: 3 plus 4?"
    assert student_label("dss_predict", " 7 ", "decoder") == " 7"
    assert student_label("dss_predict", " 7 ", "encoder_decoder") == "7"
    # The rationale task's target is the rationale alone: no '-->', no answer appended.
    assert student_label("dss_explain", "7", "decoder", rationale=" 3 + 4 = 7. ") == " 3 + 4 = 7."
    assert student_label("dss_explain", "7", "encoder_decoder", rationale="3 + 4 = 7.") == "3 + 4 = 7."
    with pytest.raises(ValueError, match="needs a rationale"):
        student_label("dss_explain", "7", "decoder")


def test_label_task_answer_is_read_from_the_whole_completion():
    assert PREFIXES["dss_predict"] is None  # the whole completion is the answer, as ft_token
    assert extract("multiarith", "dss_predict", "17 and then 4") == "17"  # no prefix: the first candidate
    assert score("multiarith", "dss_predict", "17", "17").correct
    assert not score("multiarith", "dss_predict", "4 --> 17", "17").correct  # '-->' means nothing here
    assert score_strict("multiarith", "dss_predict", "17.", "17").correct
    assert not score("coin_flip", "dss_predict", "no", "yes").correct


# --- the pairs ---------------------------------------------------------------------------------------------------


def _sample(ex: Example, correct: bool) -> TeacherSample:
    return TeacherSample(ex.id, 0, ex.question, ex.answer, "p", f" reasoning for {ex.id}. ", " x.", "x", correct)


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
def test_pairs_predict_every_question_and_explain_the_kept_rationales(family):
    train = [Example(f"q{i}", f"question {i}?", str(i), "number") for i in range(4)]
    kept = [_sample(train[1], True), _sample(train[3], True)]
    pairs = multitask_pairs(train, kept, family)
    sep = " ###" if family == "decoder" else ""
    sp = " " if family == "decoder" else ""
    label = [p for p in pairs if p.task == TASK_LABEL]
    rationale = [p for p in pairs if p.task == TASK_RATIONALE]
    assert len(pairs) == 6 and (TASK_LABEL, TASK_RATIONALE) == (0, 1)
    assert [(p.example_id, p.input, p.label, p.source) for p in label] == [
        (ex.id, f"predict: {ex.question}{sep}", f"{sp}{ex.answer}", "gold") for ex in train]
    assert [(p.example_id, p.input, p.label, p.source) for p in rationale] == [
        (s.example_id, f"explain: {s.question}{sep}", f"{sp}reasoning for {s.example_id}.", "teacher:0") for s in kept]
    assert pairs[0].to_dict()["task"] == 0 and pairs[-1].to_dict()["task"] == 1


def test_datamodule_items_and_batches_carry_the_task():
    student = build_student(StudentConfig(name_or_path=None, hidden_size=32, num_layers=1, num_heads=2,
                                          intermediate_size=64, vocab_size=300), CORPUS)
    pairs = [Pair("predict: a ###", " 1", task=0), Pair("explain: a ###", " b c.", task=1),
             Pair("predict: d ###", " 2")]
    dm = CoTDataModule(student, pairs, [], [], batch_size=3)
    dm.setup()
    assert [x["task"] for x in dm._train.items] == [0, 1, 0]
    (batch,) = list(dm.train_dataloader())
    assert sorted(zip(batch["sample_index"].tolist(), batch["task"].tolist())) == [(0, 0), (1, 1), (2, 0)]


# --- the loss -----------------------------------------------------------------------------------------------------


def _by_hand(logits, labels, task, alpha: float, shift: bool) -> torch.Tensor:
    """alpha * (mean CE over label-task tokens) + (1 - alpha) * (mean CE over rationale-task tokens), written out."""
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    logp = torch.log_softmax(logits.double(), -1)
    sums, counts = [0.0, 0.0], [0, 0]
    for r in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            y = int(labels[r, t])
            if y != -100:
                sums[int(task[r])] -= float(logp[r, t, y])
                counts[int(task[r])] += 1
    return torch.tensor(alpha * sums[0] / counts[0] + (1 - alpha) * sums[1] / counts[1], dtype=torch.float64)


def _batch(student, pairs):
    from sgft_lab.students.encode import collate, encode_pair

    items = [encode_pair(student.tokenizer, student.family, i, y, 512, 512) for i, y, _ in pairs]
    b = collate(items, student.tokenizer.pad_token_id, student.family)
    b["task"] = torch.tensor([t for *_, t in pairs])
    return b


MIXED = [("predict: 3 plus 4 ###", " 7", 0), ("explain: 3 plus 4 ###", " 3 + 4 = 7. so 7", 1),
         ("predict: Sum 7 and 8 please ###", " 15", 0), ("explain: 1 plus 9 ###", " 1 + 9 = 10.", 1)]


def _tiny_t5(path: Path):
    from transformers import T5Config, T5ForConditionalGeneration

    from sgft_lab.students.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS + [t for p in MIXED for t in p[:2]], 300)
    torch.manual_seed(0)
    config = T5Config(vocab_size=300, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                      decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    T5ForConditionalGeneration(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def students(tmp_path_factory):
    torch.manual_seed(0)
    decoder = build_student(StudentConfig(name_or_path=None, hidden_size=32, num_layers=1, num_heads=2,
                                          intermediate_size=64, vocab_size=300),
                            CORPUS + [t for p in MIXED for t in p[:2]])
    t5 = _tiny_t5(tmp_path_factory.mktemp("t5"))
    encdec = build_student(StudentConfig(family="encoder_decoder", name_or_path=str(t5), adapter="none",
                                         padding_side="right"))
    students = {"decoder": decoder, "encoder_decoder": encdec}
    with torch.no_grad():  # peaky random logits: token losses far apart, so the ways of averaging them differ
        for s in students.values():
            s.model.get_output_embeddings().weight.mul_(40.0)
    return students


# (family, loss_chunk_size): the decoder through the chunked LM head (the default) and through its logits
PATHS = [("decoder", 4096), ("decoder", None), ("encoder_decoder", 4096)]


@pytest.mark.parametrize("family,chunk", PATHS)
def test_weighted_loss_is_alpha_label_plus_one_minus_alpha_rationale(students, family, chunk):
    student = students[family]
    student.model.eval()  # no dropout: equal inputs give equal losses
    tc = TrainerConfig(loss_chunk_size=chunk)
    batch = _batch(student, MIXED)
    label_only = _batch(student, [p for p in MIXED if p[2] == 0])
    rationale_only = _batch(student, [p for p in MIXED if p[2] == 1])
    plain = StudentModule(student, tc)  # no task weights: the model's own loss, every token pooled
    with torch.no_grad():
        logits = student.model(**{k: v for k, v in batch.items() if k != "task"}).logits
        hand = _by_hand(logits, batch["labels"], batch["task"], 0.3, shift=family == "decoder")
        mixed = StudentModule(student, tc, task_weights=(0.3, 0.7))._loss(batch)
        assert float(mixed) == pytest.approx(float(hand), rel=1e-5)
        # alpha = 1: the label task's loss alone; alpha = 0: the rationale task's alone
        assert float(StudentModule(student, tc, task_weights=(1.0, 0.0))._loss(batch)) == pytest.approx(
            float(plain._loss(label_only)), rel=1e-5)
        assert float(StudentModule(student, tc, task_weights=(0.0, 1.0))._loss(batch)) == pytest.approx(
            float(plain._loss(rationale_only)), rel=1e-5)
        # not the pooled token mean, not a mean of the two without weights
        # (and the batch tells them apart: 10x the tolerance above at least)
        assert float(mixed) != pytest.approx(float(plain._loss(batch)), rel=1e-4)
        assert float(mixed) != pytest.approx(float(_by_hand(logits, batch["labels"], batch["task"], 0.5,
                                                            shift=family == "decoder")), rel=1e-4)
        assert float(plain._loss(label_only)) != pytest.approx(float(plain._loss(rationale_only)), rel=1e-2)
        # a batch holding one task only: that task's weighted loss, the absent task adding nothing
        one = StudentModule(student, tc, task_weights=(0.5, 0.5))._loss(label_only)
        assert float(one) == pytest.approx(0.5 * float(plain._loss(label_only)), rel=1e-5)


def test_the_weighted_loss_trains_and_without_weights_the_loss_is_unchanged(students):
    from sgft_lab.students.loss import chunked_causal_lm_loss

    student = students["decoder"]
    batch = _batch(student, MIXED)
    model_keys = {k: v for k, v in batch.items() if k != "task"}
    with torch.no_grad():  # task_weights unset: exactly the loss every other method trains on
        assert torch.equal(StudentModule(student, TrainerConfig())._loss(batch), chunked_causal_lm_loss(
            student.model, batch["input_ids"], batch["attention_mask"], batch["labels"], 4096))
        assert torch.equal(StudentModule(student, TrainerConfig(loss_chunk_size=None))._loss(batch),
                           student.model(**model_keys).loss)
    module = StudentModule(student, TrainerConfig(), task_weights=(0.5, 0.5))
    loss = module._loss(batch)
    loss.backward()
    assert all(p.grad is not None for p in student.model.parameters() if p.requires_grad)
    student.model.zero_grad()
    with pytest.raises(ValueError, match="no 'task'"):
        module._loss(model_keys)
    with pytest.raises(ValueError, match="task 2"):
        module._loss({**batch, "task": torch.tensor([0, 1, 2, 0])})
    with pytest.raises(ValueError, match="non-negative"):
        StudentModule(student, TrainerConfig(), task_weights=(-0.5, 1.5))


# --- the method end to end -----------------------------------------------------------------------------------------


def test_config_schema_and_plan():
    from sgft_lab.plan import teacher_stages

    c = validate(compose(["method=dss"]))
    assert (c.method.name, c.method.template, c.method.alpha, c.method.only_correct) == ("dss", "dss_predict", 0.5,
                                                                                         True)
    assert c.method.uses_teacher()
    with pytest.raises(Exception, match="alpha"):
        validate(compose(["method=dss", "method.alpha=1.5"]))

    splits = SimpleNamespace(train=[Example("a", "Q1?", "1", "number"), Example("b", "Q2?", "2", "number")])
    stages = teacher_stages(c, splits)
    assert [(s.stage, s.samples, s.temperature) for s in stages] == [("rationale", 1, 0.0), ("answer", 1, 0.0)]
    assert stages[0].prompts == ["Q: Q1?\nA: Let's think step by step.", "Q: Q2?\nA: Let's think step by step."]


def _run_dss(tmp_path: Path, monkeypatch, *overrides: str) -> tuple[dict, list[str]]:
    """An in-process run (``python -m sgft_lab method=dss ...``); returns results.json and every prompt the
    student was asked to complete."""
    from sgft_lab.run import execute
    from sgft_lab.students.build import Student

    asked: list[str] = []
    generate = Student.generate

    def spy(self, prompts, *a, **kw):
        asked.extend(prompts)
        return generate(self, prompts, *a, **kw)

    monkeypatch.setattr(Student, "generate", spy)
    over = ["trainer.max_epochs=1", "student.max_new_tokens=8", *overrides]
    keys = {o.split("=")[0] for o in over}
    over = ["method=dss", *[o for o in TINY if o.split("=")[0] not in keys], *over,
            f"paths.output_dir={tmp_path / 'outputs'}"]
    res = execute(validate(compose(over), task_overrides=over), run_dir=tmp_path / "run")
    return res, asked


def test_end_to_end_decoder_student(tmp_path, monkeypatch):
    res, asked = _run_dss(tmp_path, monkeypatch)
    run = tmp_path / "run"
    assert json.loads((run / "results.json").read_text())["entries"] == res["entries"]
    assert (res["run"]["method"], res["run"]["teacher"], res["run"]["student"]) == ("dss", "reference", "tiny")
    (t,) = [e for e in res["entries"] if e["split"] == "test"]
    (v,) = [e for e in res["entries"] if e["split"] == "val"]
    assert (t["system"], t["selection"], t["n"], t["metric"], t["protocol"]) == (
        "student", "dev_selected", 8, "ftcot", "clean")
    assert t["accuracy"] == res["metrics"]["accuracy"] and v["n"] == 8
    # The pairs: the label task for all 48 questions, the rationale task for the filter's kept rationales only.
    samples = read_jsonl(run / "teacher" / "samples.jsonl")
    pairs = read_jsonl(run / "data" / "train.jsonl")
    label = [p for p in pairs if p["task"] == 0]
    rationale = [p for p in pairs if p["task"] == 1]
    kept = {s["example_id"] for s in samples if s["correct"]}
    assert len(samples) == 48 and 0 < len(kept) < 48  # the reference teacher's errors: the filter works
    assert sorted(p["example_id"] for p in label) == sorted(s["example_id"] for s in samples)
    assert sorted(p["example_id"] for p in rationale) == sorted(kept)
    gold = {s["example_id"]: s for s in samples}
    assert all(p["input"].startswith("predict: ") and p["input"].endswith(" ###")
               and p["label"] == " " + gold[p["example_id"]]["answer"] for p in label)
    assert all(p["input"].startswith("explain: ") and p["input"].endswith(" ###")
               and p["label"] == " " + gold[p["example_id"]]["reasoning_completion"].strip() for p in rationale)
    assert res["data"]["n_label_samples"] == 48 and res["data"]["n_rationale_samples"] == len(kept)
    assert res["teacher"]["calls"] == 96 and res["details"]["filter"]["kept"] == len(kept)
    # Trained with alpha = 0.5, evaluated with the label task alone: val (8) then test (8), never 'explain:'.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["hyper_parameters"]["task_weights"] == [0.5, 0.5]
    assert len(asked) == 16 and all(p.startswith("predict: ") and p.endswith(" ###") for p in asked)
    assert not any("explain:" in p for p in asked)


def test_end_to_end_encoder_decoder_student(tmp_path, monkeypatch):
    t5 = _tiny_t5(tmp_path / "t5")
    res, asked = _run_dss(tmp_path, monkeypatch, "student=hf", f"student.name_or_path={t5}",
                          "student.family=encoder_decoder", "student.adapter=none", "student.padding_side=right",
                          "method.alpha=0.7", "benchmark.n_train=16")
    pairs = read_jsonl(tmp_path / "run" / "data" / "train.jsonl")
    assert {p["input"].split(":")[0] for p in pairs} == {"predict", "explain"}
    assert all(not p["input"].endswith("###") and not p["label"].startswith(" ") for p in pairs)
    assert res["run"]["method"] == "dss" and res["details"]["alpha"] == 0.7
    assert {(e["system"], e["split"]) for e in res["entries"]} == {("student", "test"), ("student", "val")}
    assert len(asked) == 16 and all(p.startswith("predict: ") for p in asked)
