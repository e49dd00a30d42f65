"""The student as a LightningModule: loss on label tokens, AdamW + optional schedule, greedy generation."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl

from sgft_lab.config import TrainerConfig
from sgft_lab.students.build import Student

MODEL_KEYS = ("input_ids", "attention_mask", "labels", "position_ids", "decoder_attention_mask")


class StudentModule(pl.LightningModule):
    """Fine-tunes ``student.model`` on ``encode.collate`` batches (Fine-tune-CoT's loss: label tokens only).

    For LoRA/QLoRA students, checkpoints hold only the trainable (adapter) tensors and load non-strictly, so a
    checkpoint is the size of the adapter, not of the base model.
    """

    def __init__(self, student: Student, trainer_cfg: TrainerConfig):
        super().__init__()
        self.student = student
        self.model = student.model
        self.trainer_cfg = trainer_cfg
        self.adapter_only = student.cfg.adapter != "none"
        if self.adapter_only:
            self.strict_loading = False  # checkpoints lack the frozen base weights
        self.save_hyperparameters({"student": asdict(student.cfg), "trainer": asdict(trainer_cfg)})

    def forward(self, **batch):
        return self.model(**batch)

    def _loss(self, batch: dict[str, Any]):
        return self.model(**{k: v for k, v in batch.items() if k in MODEL_KEYS}).loss

    def on_fit_start(self) -> None:
        # Lightning keeps the mode modules arrive in; a student that was evaluated before fit must train.
        self.model.train()

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        import torch
        from transformers import get_scheduler

        cfg = self.trainer_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("StudentModule: the student has no trainable parameters")
        # Fine-tune-CoT: torch.optim.AdamW(lr=3e-4), default weight decay 0.01 on every parameter.
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.scheduler == "constant" and cfg.warmup_ratio == 0:
            return optimizer  # Fine-tune-CoT's setting: no scheduler
        total = int(self.trainer.estimated_stepping_batches)
        warmup = round(cfg.warmup_ratio * total)
        name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}.get(cfg.scheduler)
        if name is None:
            raise ValueError(f"trainer.scheduler={cfg.scheduler!r} is not one of "
                             "('constant', 'linear', 'cosine')")
        scheduler = get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def trainable_state_keys(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.adapter_only:
            keep = self.trainable_state_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    def generate(self, prompts: list[str], max_new_tokens: int | None = None,
                 batch_size: int | None = None, progress: bool = False) -> list[str]:
        """Greedy completions of ``prompts`` in input order (see ``generation.generate``)."""
        from sgft_lab.students.generation import generate

        cfg = self.student.cfg
        return generate(
            self.model, self.student.tokenizer, self.student.family, prompts,
            max_new_tokens=max_new_tokens if max_new_tokens is not None else cfg.max_new_tokens,
            batch_size=batch_size if batch_size is not None else self.trainer_cfg.eval_batch_size,
            progress=progress,
            max_input_tokens=cfg.max_input_tokens,
        )
