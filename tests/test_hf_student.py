"""A real Hugging Face checkpoint (../shared/models/TinyStories-656K) through from_pretrained, LoRA, QLoRA."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
CHECKPOINT = SHARED / "models" / "TinyStories-656K"

pytestmark = [
    pytest.mark.shared,
    pytest.mark.skipif(not (CHECKPOINT / "config.json").is_file(),
                       reason=f"needs ../shared (real checkpoint {CHECKPOINT} absent)"),
]

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from sgft_lab.config import StudentConfig, TrainerConfig  # noqa: E402
from sgft_lab.students.build import build_student, count_parameters  # noqa: E402
from sgft_lab.students.encode import IGNORE_INDEX, collate, encode_pair  # noqa: E402
from sgft_lab.students.module import StudentModule  # noqa: E402

PAIRS = [("Once upon a time there was a cat ###", " The cat liked milk. --> milk"),
         ("Lily had a red ball ###", " She played with it. --> ball")]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest.one_torch_thread)."""


def _fit_and_generate(adapter: str, tmp_path):
    pl.seed_everything(0)
    cfg = StudentConfig(name="hf", name_or_path=str(CHECKPOINT), adapter=adapter, dtype="float32")
    student = build_student(cfg)
    tok = student.tokenizer
    assert tok.pad_token_id is not None and tok.padding_side == "left"
    trainable, total = count_parameters(student.model)
    assert 0 < trainable < total

    items = [encode_pair(tok, "decoder", i, y, 512, 512) for i, y in PAIRS]
    for item in items:  # the real tokenizer adds BOS: once, at the prompt's start; the label ends with EOS
        assert item["input_ids"][0] == tok.bos_token_id and item["input_ids"].count(tok.bos_token_id) == 1
        assert item["labels"][0] == IGNORE_INDEX and item["labels"][-1] == tok.eos_token_id
    batch = collate(items, tok.pad_token_id, "decoder")

    def loss() -> float:
        student.model.eval()
        with torch.no_grad():
            return student.model(**batch).loss.item()

    loss0 = loss()  # eval-mode no-grad forward before training (the QLoRA CPU trap)
    module = StudentModule(student, TrainerConfig(lr=1e-2))
    trainer = pl.Trainer(accelerator="cpu", max_steps=30, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    from torch.utils.data import DataLoader

    trainer.fit(module, DataLoader([batch] * 30, batch_size=None))
    loss1 = loss()
    assert loss1 < 0.5 * loss0, (loss0, loss1)
    out = module.generate([i for i, _ in PAIRS] + ["Tom"], max_new_tokens=24, batch_size=2)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert [o.strip() for o in out[:2]] == [y.strip() for _, y in PAIRS]  # 30 steps memorise two pairs
    return student


def test_hf_student_lora(tmp_path):
    student = _fit_and_generate("lora", tmp_path)
    saved = student.save(tmp_path / "adapter")
    assert (saved / "adapter_config.json").is_file() and (saved / "tokenizer_config.json").is_file()


def test_hf_student_qlora(tmp_path):
    bnb = pytest.importorskip("bitsandbytes")
    student = _fit_and_generate("qlora", tmp_path)
    linears = [m for m in student.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert linears and all(m.support_avx512bf16_for_cpu is False for m in linears)
