"""QLoRA learns on CPU (guards the bitsandbytes AVX512-BF16 repack trap) and adapter-only checkpoints."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")
bnb = pytest.importorskip("bitsandbytes")

from sgft_lab.config import StudentConfig, TrainerConfig  # noqa: E402
from sgft_lab.students.build import build_student  # noqa: E402
from sgft_lab.students.encode import collate, encode_pair  # noqa: E402
from sgft_lab.students.module import StudentModule  # noqa: E402

PAIRS = [(f"What is {a} plus {b}? ###", f" {a} + {b} = {a + b}. --> {a + b}")
         for a, b in [(3, 4), (12, 5), (7, 8)]]
CORPUS = [t for pair in PAIRS for t in pair]
# LoRA on lm_head too: the frozen random-init head (std 0.02) caps the logits of a random model so low that
# adapters on the 4-bit layers alone barely move the loss (fp32 LoRA does no better there).
SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "vocab_size": 300,
         "lora_dropout": 0.0, "lora_target_modules": ["q_proj", "v_proj", "down_proj", "lm_head"]}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest.one_torch_thread)."""


def _batch(student):
    items = [encode_pair(student.tokenizer, "decoder", i, y, 512, 512) for i, y in PAIRS]
    return collate(items, student.tokenizer.pad_token_id, "decoder")


def _loss(model, batch) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(**batch).loss.item()
    model.train(was)
    return out


def _lora_grads(model, batch) -> dict:
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    grads = {n: (None if p.grad is None else p.grad.clone())
             for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    return grads


def _trainer(tmp_path, steps: int, checkpoint: bool = False):
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, enable_checkpointing=checkpoint, default_root_dir=tmp_path)


def _loader(batch, n: int):
    from torch.utils.data import DataLoader

    return DataLoader([batch] * n, batch_size=None)


def test_qlora_learns_on_cpu_after_an_eval_forward(tmp_path):
    pl.seed_everything(0)
    student = build_student(StudentConfig(adapter="qlora", **SMALL), CORPUS, work_dir=tmp_path / "student")
    model = student.model
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7  # every projection of both layers is 4-bit
    assert all(m.support_avx512bf16_for_cpu is False for m in linears)
    batch = _batch(student)

    # lora_B starts at zero, so lora_A's gradient is zero; perturb B to compare every adapter gradient.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    before_eval = _lora_grads(model, batch)
    loss0 = _loss(model, batch)  # the eval-mode no-grad forward that triggers the repack trap
    after_eval = _lora_grads(model, batch)
    assert before_eval.keys() == after_eval.keys() and len(before_eval) == 2 * (2 * 3 + 1)
    for n, g in before_eval.items():
        assert g is not None and g.abs().sum() > 0, n
        assert after_eval[n] is not None and torch.allclose(g, after_eval[n], rtol=1e-4, atol=1e-6), n

    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    module = StudentModule(student, TrainerConfig(lr=1e-2))
    _trainer(tmp_path, steps=30).fit(module, _loader(batch, 30))
    loss1 = _loss(model, batch)
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, start[n])]
    assert len(changed) == len(start)
    assert all(m.support_avx512bf16_for_cpu is False for m in linears)


def test_lora_checkpoint_holds_only_adapter_tensors(tmp_path):
    pl.seed_everything(0)
    cfg = StudentConfig(adapter="qlora", **SMALL)
    student = build_student(cfg, CORPUS, work_dir=tmp_path / "student")
    batch = _batch(student)
    module = StudentModule(student, TrainerConfig(lr=1e-2))
    trainer = _trainer(tmp_path, steps=5, checkpoint=True)
    trainer.fit(module, _loader(batch, 5))
    path = next(tmp_path.rglob("*.ckpt"))
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(state) == trainable and all("lora_" in k for k in state)

    # A fresh student from the same run dir (same init) + the adapter checkpoint = the trained model.
    again = StudentModule(build_student(cfg, None, work_dir=tmp_path / "student"), TrainerConfig())
    assert again.strict_loading is False
    again.load_state_dict(state, strict=again.strict_loading)
    assert _loss(again.model, batch) == pytest.approx(_loss(student.model, batch), rel=1e-5)
