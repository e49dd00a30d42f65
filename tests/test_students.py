"""The tiny student: tokenizer, model size, encoding/collation, training with Lightning, greedy generation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from sgft_lab.config import StudentConfig, TrainerConfig  # noqa: E402
from sgft_lab.students.build import build_student, count_parameters  # noqa: E402
from sgft_lab.students.encode import IGNORE_INDEX, collate, encode_pair, prompt_ids  # noqa: E402
from sgft_lab.students.generation import generate  # noqa: E402
from sgft_lab.students.module import StudentModule  # noqa: E402
from sgft_lab.students.tokenizer import train_tokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
from conftest import CORPUS, PAIRS  # noqa: E402



@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest.one_torch_thread)."""


def _loader(student, pairs, batch_size, shuffle=True):
    from torch.utils.data import DataLoader

    data = [encode_pair(student.tokenizer, student.family, i, y, 512, 512) for i, y in pairs]
    pad = student.tokenizer.pad_token_id
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle,
                      collate_fn=lambda b: collate(b, pad, student.family))


def _trainer(**kw):
    base = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False}
    base.update(kw)
    return pl.Trainer(**base)


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 512)


@pytest.fixture(scope="module")
def trained():
    """The default tiny student overfitted on PAIRS (a few seconds on CPU)."""
    pl.seed_everything(0)
    student = build_student(StudentConfig(), CORPUS)
    module = StudentModule(student, TrainerConfig(lr=3e-3, batch_size=6))
    _trainer(max_epochs=60).fit(module, _loader(student, PAIRS, 6))
    return module


def test_tokenizer_round_trip(tok):
    texts = [" 12 + 5 = 17. --> 17", "Q: How many? ###", "  two leading spaces", "-->", "###",
             "line\n\nbreaks\tand tabs ", "unicode é ü 日本", " 1234567890", ""]
    for x in texts:
        ids = tok(x, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == x, x
    # digits are split one per token
    pieces = tok.convert_ids_to_tokens(tok(" 1234", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if any(c.isdigit() for c in p)] == list("1234")
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == ("<pad>", "<s>", "</s>", "<unk>")
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(CORPUS, 100)


def test_tiny_student_size_and_adapters():
    torch.manual_seed(0)
    trainable, total = count_parameters(build_student(StudentConfig(), CORPUS).model)
    assert 500_000 <= total <= 1_500_000
    assert trainable == total
    lora_trainable, lora_total = count_parameters(build_student(StudentConfig(adapter="lora"), CORPUS).model)
    assert 0 < lora_trainable < lora_total / 5
    with pytest.raises(ValueError, match="corpus"):
        build_student(StudentConfig())


def test_tiny_student_reloads_from_work_dir(tmp_path):
    torch.manual_seed(0)
    first = build_student(StudentConfig(), CORPUS, work_dir=tmp_path)
    torch.manual_seed(1)  # a different seed: the saved init must win
    again = build_student(StudentConfig(), None, work_dir=tmp_path)
    assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    a, b = first.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_encode_decoder_masks_prompt_and_ends_with_eos(tok):
    prompt, label = "Sum 7 and 8 ###", " 7 + 8 = 15. --> 15"
    e = encode_pair(tok, "decoder", prompt, label, 512, 512)
    p = prompt_ids(tok, "decoder", prompt)
    n = len(p)
    assert e["input_ids"][:n] == p
    assert e["labels"][:n] == [IGNORE_INDEX] * n
    assert e["labels"][n:] == e["input_ids"][n:]
    assert e["labels"][-1] == tok.eos_token_id
    assert tok.decode(e["labels"][n:-1]) == label  # label tokenized on its own, leading space kept
    # truncation: input at max_input_tokens, label at max_label_tokens (a cut label loses its EOS)
    t = encode_pair(tok, "decoder", prompt, label, 3, 4)
    assert len(t["input_ids"]) == 7 and t["labels"][:3] == [IGNORE_INDEX] * 3
    assert tok.eos_token_id not in t["labels"]


def test_encode_uses_tokenizer_bos_for_prompt_only():
    from tokenizers import processors

    bos_tok = train_tokenizer(CORPUS, 512)
    bos_tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos_tok.bos_token_id)])
    e = encode_pair(bos_tok, "decoder", "Sum 7 and 8 ###", " 15", 512, 512)
    assert e["input_ids"][0] == bos_tok.bos_token_id
    assert e["input_ids"].count(bos_tok.bos_token_id) == 1


def test_encode_encoder_decoder(tok):
    e = encode_pair(tok, "encoder_decoder", "Sum 7 and 8", "7 + 8 = 15. --> 15", 512, 512)
    assert tok.decode(e["input_ids"]) == "Sum 7 and 8"
    assert e["labels"][-1] == tok.eos_token_id and IGNORE_INDEX not in e["labels"]
    short = encode_pair(tok, "encoder_decoder", "x", "y", 512, 512)
    assert short["labels"] == tok("y", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    b = collate([e, short], tok.pad_token_id, "encoder_decoder")
    assert b["labels"][1, 2:].eq(IGNORE_INDEX).all() and b["labels"].shape[1] == len(e["labels"])
    assert b["attention_mask"][1].tolist() == [1] + [0] * (len(e["input_ids"]) - 1)


def test_encode_encoder_decoder_keeps_tokenizer_eos_when_truncating():
    from tokenizers import processors

    t5_like = train_tokenizer(CORPUS, 512)  # a tokenizer that appends </s> itself, as T5's does
    t5_like._tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", t5_like.eos_token_id)])
    e = encode_pair(t5_like, "encoder_decoder", "Sum 7 and 8 please", " 7 + 8 = 15. --> 15", 4, 5)
    assert len(e["input_ids"]) == 4 and e["input_ids"][-1] == t5_like.eos_token_id
    assert len(e["labels"]) == 5 and e["labels"][-1] == t5_like.eos_token_id
    assert e["labels"].count(t5_like.eos_token_id) == 1


def test_collate_pads_right_with_ignored_labels(tok):
    items = [encode_pair(tok, "decoder", i, y, 512, 512) for i, y in PAIRS[:3]]
    b = collate(items, tok.pad_token_id, "decoder")
    lengths = [len(x["input_ids"]) for x in items]
    assert b["input_ids"].shape == (3, max(lengths)) == b["labels"].shape == b["attention_mask"].shape
    for r, (x, n) in enumerate(zip(items, lengths, strict=True)):
        assert b["input_ids"][r, :n].tolist() == x["input_ids"]
        assert b["labels"][r, :n].tolist() == x["labels"]
        assert b["attention_mask"][r].tolist() == [1] * n + [0] * (max(lengths) - n)
        assert b["input_ids"][r, n:].eq(tok.pad_token_id).all() and b["labels"][r, n:].eq(IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="lacks"):
        collate([{"input_ids": [1]}], 0, "decoder")


def test_overfit_then_generate_reproduces_labels(trained):
    assert trained.trainer.callback_metrics["train_loss_epoch"] < 0.1
    prompts = [i for i, _ in PAIRS]
    assert trained.generate(prompts, max_new_tokens=24, batch_size=4) == [y for _, y in PAIRS]


def test_generation_keeps_input_order_and_batching_is_invisible(trained):
    s = trained.student
    order = list(range(len(PAIRS))) * 2
    random.Random(0).shuffle(order)
    prompts = [PAIRS[i][0] for i in order]
    batched = generate(s.model, s.tokenizer, s.family, prompts, max_new_tokens=24, batch_size=5)
    single = [generate(s.model, s.tokenizer, s.family, [p], max_new_tokens=24, batch_size=1)[0]
              for p in prompts]
    assert batched == single == [PAIRS[i][1] for i in order]
    assert generate(s.model, s.tokenizer, s.family, [], 8) == []


def test_generate_restores_mode_and_stops_at_max_new_tokens(trained):
    s = trained.student
    s.model.train()
    out = generate(s.model, s.tokenizer, s.family, [PAIRS[0][0]], max_new_tokens=2)
    assert s.model.training
    assert len(s.tokenizer(out[0], add_special_tokens=False)["input_ids"]) == 2
    s.model.eval()
    generate(s.model, s.tokenizer, s.family, [PAIRS[0][0]], max_new_tokens=2, progress=True)
    assert not s.model.training


def test_warmup_linear_schedule_and_full_checkpoint(tmp_path):
    pl.seed_everything(0)
    student = build_student(StudentConfig(num_layers=1), CORPUS)
    module = StudentModule(student, TrainerConfig(lr=1e-3, scheduler="linear", warmup_ratio=0.5))
    lrs: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = _trainer(max_epochs=4, callbacks=[Record()], enable_checkpointing=True,
                       default_root_dir=tmp_path)
    trainer.fit(module, _loader(student, PAIRS, 2))  # 3 steps/epoch -> 12 steps, 6 warm-up
    assert len(lrs) == 12
    assert lrs[0] == 0.0 and lrs[6] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:6], lrs[1:7], strict=True))
    assert all(a > b for a, b in zip(lrs[6:-1], lrs[7:], strict=True))
    # full fine-tuning: the checkpoint holds every weight
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), map_location="cpu", weights_only=False)
    assert set(ckpt["state_dict"]) == set(module.state_dict())


def test_student_configs_match_schema():
    from omegaconf import OmegaConf

    schema = OmegaConf.structured(StudentConfig)
    tiny = OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.load(REPO / "conf/student/tiny.yaml")))
    assert tiny.name == "tiny" and tiny.name_or_path is None and tiny.adapter == "none"
    raw = OmegaConf.load(REPO / "conf/student/hf.yaml")
    assert OmegaConf.is_missing(raw, "name_or_path")  # required: the preset names no model
    hf = OmegaConf.merge(schema, raw)  # unknown keys would raise here
    assert hf.name == "hf" and hf.adapter == "lora"
    # the schema makes name_or_path required: the hf preset cannot become a config without a model name
    assert OmegaConf.is_missing(hf, "name_or_path")
    with pytest.raises(Exception, match="name_or_path"):
        OmegaConf.to_object(hf)


def test_encoder_decoder_student_trains_and_generates(tmp_path):
    """The seq2seq path (encode, collate, build from a checkpoint, generate) on a random tiny T5."""
    from transformers import T5Config, T5ForConditionalGeneration

    pairs = [("Sum 7 and 8", "7 + 8 = 15. --> 15"), ("1 plus 9", "1 + 9 = 10. --> 10"),
             ("Tom has 12 apples and buys 5 more. How many?", "12 + 5 = 17. --> 17")]
    tok = train_tokenizer([t for p in pairs for t in p], 300)
    pl.seed_everything(0)
    config = T5Config(vocab_size=300, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                      decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    cfg = StudentConfig(family="encoder_decoder", name_or_path=str(tmp_path), padding_side="right")
    student = build_student(cfg)
    module = StudentModule(student, TrainerConfig(lr=5e-3))
    _trainer(max_epochs=60).fit(module, _loader(student, pairs, 3))
    assert module.generate([i for i, _ in pairs], max_new_tokens=20, batch_size=2) == [y for _, y in pairs]
