"""The student as a LightningModule: loss on label tokens, AdamW + optional schedule, greedy generation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch

from sgft_lab.config import Adapter, TrainerConfig, to_plain
from sgft_lab.students.build import Student

MODEL_KEYS = ("input_ids", "attention_mask", "labels", "position_ids", "decoder_attention_mask")


OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
# Prefixes wrappers add to parameter names (FSDP, activation checkpointing, torch.compile).
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def make_optimizer(name: str, params: list, lr: float, weight_decay: float):
    """AdamW in one of its forms: torch's (``adamw``; ``adamw_fused`` on CUDA) or bitsandbytes' 8-bit / paged.

    bitsandbytes' optimizers run on CPU too (0.50: paged ones fall back to unpaged memory there, with a
    warning); they save memory only on CUDA, where the paged forms spill optimizer state to host memory.
    """
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw_fused":
        if not all(p.is_cuda for p in params):
            raise ValueError("trainer.optimizer=adamw_fused needs every trainable parameter on CUDA "
                             "(use trainer.optimizer=adamw on CPU)")
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    bnb_names = {"adamw_8bit": "AdamW8bit", "paged_adamw_8bit": "PagedAdamW8bit",
                 "paged_adamw_32bit": "PagedAdamW32bit"}
    if name in bnb_names:
        try:
            import bitsandbytes as bnb
        except ImportError as e:  # pragma: no cover - bitsandbytes is a dependency
            raise ValueError(f"trainer.optimizer={name} needs bitsandbytes (pip install bitsandbytes): "
                             f"{e}") from e
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Paged optimizers are not supported on CPU.*")
            return getattr(bnb.optim, bnb_names[name])(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"trainer.optimizer={name!r} is not one of {OPTIMIZERS}")


def clean_name(name: str) -> str:
    for p in _WRAPPER_PREFIXES:
        name = name.replace(p, "")
    return name


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing of every block, non-reentrant: works with frozen inputs (LoRA)
    without ``enable_input_require_grads``. transformers >= 5.2x names it activation_checkpointing_enable."""
    from sgft_lab.students.loss import unwrap

    hf = unwrap(model)
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _wants_checkpointing(student: Student, cfg: TrainerConfig) -> bool:
    if cfg.gradient_checkpointing is None:
        return student.cfg.adapter is Adapter.qlora  # peft's QLoRA recipe turns it on
    return bool(cfg.gradient_checkpointing)


class StudentModule(pl.LightningModule):
    """Fine-tunes ``student.model`` on ``encode.collate`` batches (Fine-tune-CoT's loss: label tokens only).

    The loss: for supported decoders (``loss.decoder_parts``) with ``trainer.loss_chunk_size`` set, the LM
    head and cross-entropy run in chunks over the label positions only (``loss.chunked_causal_lm_loss``: the
    same loss and gradients, no full fp32 logits); otherwise the model's own loss. Options from the trainer
    config: gradient checkpointing, ``torch.compile`` of the forward, the optimizer and the schedule.
    ``task_weights`` (multi-task students, Distilling Step-by-Step): the loss is instead the weighted sum of
    each task's mean label-token cross-entropy, the rows told apart by the batch's ``task``
    (``loss.task_weighted_loss``); unset, the loss above is untouched.

    For LoRA/QLoRA students, checkpoints hold only the trainable (adapter) tensors and load non-strictly, so a
    checkpoint is the size of the adapter, not of the base model.

    Logged: ``train_loss_step`` every ``log_every_n_steps`` optimizer steps and ``train_loss_epoch`` (the
    batch-size-weighted mean, as Lightning's ``on_epoch`` computes it). Both are kept exact across a resume:
    the step row is written to the loggers inside the step (Lightning writes its step rows only after
    ``on_train_batch_end``, where a step checkpoint is saved, so a kill in between would lose the row), and the
    epoch's running sum travels in the checkpoint (Lightning's own aggregate does not: after a mid-epoch resume
    it would average only the remaining batches).
    """

    def __init__(self, student: Student, trainer_cfg: TrainerConfig, task_weights: Sequence[float] | None = None):
        super().__init__()
        from sgft_lab.students.loss import decoder_parts

        self.student = student
        self.model = student.model
        self.trainer_cfg = trainer_cfg
        self.adapter_only = student.cfg.adapter is not Adapter.none
        if self.adapter_only:
            self.strict_loading = False  # checkpoints lack the frozen base weights
        if trainer_cfg.optimizer not in OPTIMIZERS:
            raise ValueError(f"trainer.optimizer={trainer_cfg.optimizer!r} is not one of {OPTIMIZERS}")
        chunk = trainer_cfg.loss_chunk_size
        if chunk is not None and chunk < 1:
            raise ValueError(f"trainer.loss_chunk_size must be >= 1 or null, got {chunk}")
        self.parts = decoder_parts(self.model) if (chunk and student.family == "decoder") else None
        self.gradient_checkpointing = _wants_checkpointing(student, trainer_cfg)
        if self.gradient_checkpointing:
            enable_checkpointing(self.model)
        # Compiled callables live in a plain dict: as attributes they would register as submodules and
        # change the checkpoint's parameter names.
        self._compiled: dict[str, Any] = {}
        if trainer_cfg.compile:
            import torch

            kw = {"backend": trainer_cfg.compile_backend}
            if trainer_cfg.compile_mode:
                kw["mode"] = trainer_cfg.compile_mode
            target = self.parts[0] if self.parts is not None else self.model
            self._compiled["forward"] = torch.compile(target, **kw)
        # Multi-task students (Distilling Step-by-Step): one weight per task id of the batches' ``task``.
        self.task_weights = None if task_weights is None else tuple(float(w) for w in task_weights)
        if self.task_weights is not None and (not self.task_weights or min(self.task_weights) < 0):
            raise ValueError(f"task_weights must be non-negative weights, one per task, got {task_weights!r}")
        hparams = {"student": to_plain(student.cfg), "trainer": to_plain(trainer_cfg)}
        if self.task_weights is not None:
            hparams["task_weights"] = list(self.task_weights)
        self.save_hyperparameters(hparams)
        self._epoch_loss: tuple[Any, Any] | None = None  # (sum of loss * batch size, samples) this epoch

    @property
    def uses_chunked_loss(self) -> bool:
        return self.parts is not None

    def forward(self, **batch):
        return self.model(**batch)

    def _loss(self, batch: dict[str, Any]):
        if self.task_weights is not None:
            return self._task_weighted_loss(batch)
        if self.parts is not None:
            from sgft_lab.students.loss import chunked_causal_lm_loss

            return chunked_causal_lm_loss(self.model, batch["input_ids"], batch["attention_mask"],
                                          batch["labels"], self.trainer_cfg.loss_chunk_size,
                                          inner_fn=self._compiled.get("forward"))
        model = self._compiled.get("forward", self.model)
        return model(**{k: v for k, v in batch.items() if k in MODEL_KEYS}).loss

    def _task_weighted_loss(self, batch: dict[str, Any]):
        """``sum_k task_weights[k] * (mean CE over the label tokens of the task-k rows)`` (loss.task_weighted_loss);
        through the chunked LM head when the plain loss would use it."""
        from sgft_lab.students.loss import chunked_causal_lm_loss, task_weighted_loss

        if "task" not in batch:
            raise ValueError("StudentModule: task_weights are set but the batch has no 'task' "
                             "(CoTDataModule batches carry each pair's task)")
        task = batch["task"]
        if int(task.max()) >= len(self.task_weights) or int(task.min()) < 0:
            raise ValueError(f"StudentModule: a batch holds task {int(task.max())}, but task_weights has "
                             f"{len(self.task_weights)} weights")
        if self.parts is not None:
            return chunked_causal_lm_loss(self.model, batch["input_ids"], batch["attention_mask"],
                                          batch["labels"], self.trainer_cfg.loss_chunk_size,
                                          inner_fn=self._compiled.get("forward"), task=task,
                                          task_weights=self.task_weights)
        model = self._compiled.get("forward", self.model)
        inputs = {k: v for k, v in batch.items() if k in MODEL_KEYS}
        encoder_decoder = self.student.family == "encoder_decoder"
        if not encoder_decoder:  # a decoder needs no labels for its logits (and computes no loss then)
            inputs.pop("labels")
        logits = model(**inputs).logits  # an encoder-decoder builds its decoder inputs from the labels
        return task_weighted_loss(logits, batch["labels"], task, self.task_weights, shift=not encoder_decoder)

    def on_fit_start(self) -> None:
        # Lightning keeps the mode modules arrive in; a student that was evaluated before fit must train.
        self.model.train()

    def on_train_epoch_start(self) -> None:
        self._epoch_loss = None  # not called when a fit resumes mid-epoch: the restored sum goes on

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        loss = self._loss(batch)
        n = batch["input_ids"].shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=n)
        # Lightning's mean reduction, in the same dtypes and order: sum(loss * n) in float32 / sum(n).
        total, count = self._epoch_loss if self._epoch_loss is not None else (torch.tensor(0.0), torch.tensor(0))
        self._epoch_loss = (total.to(loss.device) + loss.detach().float() * n, count.to(loss.device) + n)
        self._log_step(loss, batch_idx)
        return loss

    def _log_step(self, loss, batch_idx: int) -> None:
        """The step row Lightning would log after this step (same step number, same condition), written now."""
        trainer = self.trainer
        accumulate = trainer.accumulate_grad_batches
        steps = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 >= trainer.num_training_batches
        if not steps or (self.global_step + 1) % trainer.log_every_n_steps:
            return
        row = {"train_loss_step": loss.item(), "epoch": self.current_epoch}
        for lg in self.loggers:
            lg.log_metrics(row, step=self.global_step)  # the optimizer steps before this one, as Lightning's
            lg.save()

    def on_train_epoch_end(self) -> None:
        if self._epoch_loss is not None:
            total, count = self._epoch_loss
            self.log("train_loss_epoch", total / count, on_step=False, on_epoch=True, batch_size=1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.adapter_only:
            keep = self.trainable_state_keys()
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                        if clean_name(k) in keep}
        if self._epoch_loss is not None:
            checkpoint["sgft_lab_epoch_loss"] = [t.detach().cpu() for t in self._epoch_loss]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("sgft_lab_epoch_loss")
        self._epoch_loss = None if state is None else (state[0], state[1])  # moved to the loss' device in use

    def configure_optimizers(self):
        from transformers import get_scheduler

        cfg = self.trainer_cfg
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ValueError("StudentModule: the student has no trainable parameters")
        # Fine-tune-CoT: torch.optim.AdamW(lr=3e-4), default weight decay 0.01 on every parameter.
        optimizer = make_optimizer(cfg.optimizer, params, cfg.lr, cfg.weight_decay)
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
        return {clean_name(n) for n, p in self.named_parameters() if p.requires_grad}

    def generate(self, prompts: list[str], max_new_tokens: int | None = None,
                 batch_size: int | None = None, progress: bool = False) -> list[str]:
        """Greedy completions of ``prompts`` in input order (``Student.generate``, the trainer's batch size)."""
        cfg = self.student.cfg
        return self.student.generate(
            prompts, max_new_tokens if max_new_tokens is not None else cfg.max_new_tokens,
            batch_size=batch_size if batch_size is not None else self.trainer_cfg.eval_batch_size,
            progress=progress, max_input_tokens=cfg.max_input_tokens)
