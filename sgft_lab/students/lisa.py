"""LISA (Layerwise Importance Sampled AdamW, Pan et al. 2024, arXiv 2403.17919) as a Lightning callback.

SGFT fine-tunes its guide model with LISA (methods.md 3.2, 3.6): full-parameter AdamW on the parameters
outside the transformer blocks (embeddings, final norm, LM head: always trainable), while only ``n_active``
(gamma) randomly chosen blocks are trainable at a time; the choice is re-drawn every ``interval`` (K)
optimizer steps. A block that becomes active again starts with fresh AdamW state (its moments are dropped),
so stale moments from an earlier activation never drive its first updates.

Use: build the student with ``adapter=none`` (LISA *is* the full fine-tuning), so every parameter is in the
optimizer; pass ``LISACallback(...)`` to the Trainer (``training.fit(..., callbacks=[...])``). Frozen blocks
get ``requires_grad=False`` and ``grad=None``, so AdamW skips them entirely (no update, no weight decay) and
no weight gradient is computed for them.

Departures / choices (ours): uniform sampling over blocks (LISA's paper samples uniformly too); the draw
is a pure function of (seed, optimizer step), so a resumed run draws the same blocks; the active set is
saved in the checkpoint (callback state) and restored on resume.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

BLOCK_LIST_NAMES = ("layers", "h", "block", "blocks")  # Llama/Qwen/Mistral, GPT-2, T5 (enc + dec), others


def find_blocks(model) -> list[Any]:
    """The transformer blocks of ``model``, in order: every ``torch.nn.ModuleList`` named like a block list
    (``layers``, ``h``, ``block``, ``blocks``) and not nested in another one (T5: encoder then decoder)."""
    import torch

    lists = [(name, m) for name, m in model.named_modules()
             if isinstance(m, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in BLOCK_LIST_NAMES]
    outer = [(n, m) for n, m in lists if not any(n != o and n.startswith(o + ".") for o, _ in lists)]
    blocks = [b for _, m in outer for b in m]
    if not blocks:
        raise ValueError(f"LISA: no transformer block list ({', '.join(BLOCK_LIST_NAMES)}) found in "
                         f"{type(model).__name__}")
    return blocks


class LISACallback(pl.Callback):
    """Every ``interval`` optimizer steps: freeze all blocks, unfreeze ``n_active`` random ones, reset the
    optimizer state of the newly activated parameters. Non-block parameters are never frozen."""

    def __init__(self, n_active: int = 2, interval: int = 20, seed: int = 0):
        if n_active < 1:
            raise ValueError(f"LISA: n_active (gamma) must be >= 1, got {n_active}")
        if interval < 1:
            raise ValueError(f"LISA: interval (K) must be >= 1, got {interval}")
        self.n_active, self.interval, self.seed = int(n_active), int(interval), int(seed)
        self.active: list[int] | None = None  # indices of the trainable blocks
        self.last_draw_step: int | None = None
        self.history: list[tuple[int, list[int]]] = []  # (optimizer step, active blocks) per draw
        self._blocks: list[Any] | None = None

    # --- the core, usable without a Trainer ------------------------------------------------------------
    def blocks(self, model) -> list[Any]:
        if self._blocks is None:
            self._blocks = find_blocks(model)
        return self._blocks

    def draw(self, step: int, n_blocks: int) -> list[int]:
        """The blocks active from optimizer step ``step``: a pure function of (seed, step)."""
        rng = random.Random(f"lisa:{self.seed}:{step}")
        return sorted(rng.sample(range(n_blocks), min(self.n_active, n_blocks)))

    def apply(self, model, active: Sequence[int], optimizer=None, reset_state: bool = True) -> list[int]:
        """Make exactly ``active`` blocks trainable; drop optimizer state of the newly activated ones.
        Returns the newly activated block indices."""
        blocks = self.blocks(model)
        previous = set(self.active) if self.active is not None else set()
        for i, block in enumerate(blocks):
            on = i in active
            for p in block.parameters():
                p.requires_grad_(on)
                if not on:
                    p.grad = None
        newly = [i for i in active if i not in previous]
        if optimizer is not None and reset_state:
            for i in newly:
                for p in blocks[i].parameters():
                    optimizer.state.pop(p, None)
        self.active = sorted(active)
        return newly

    def unfreeze_all(self, model) -> None:
        for block in self.blocks(model):
            for p in block.parameters():
                p.requires_grad_(True)

    # --- Lightning hooks --------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module) -> None:
        if self.active is not None:  # restored from a checkpoint: same blocks, optimizer state kept
            self.apply(pl_module.model, self.active, reset_state=False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == self.last_draw_step or (step % self.interval and self.active is not None):
            return
        n = len(self.blocks(pl_module.model))
        active = self.draw(step, n)
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.apply(pl_module.model, active, optimizer)
        self.last_draw_step = step
        self.history.append((step, active))

    def on_train_end(self, trainer, pl_module) -> None:
        self.unfreeze_all(pl_module.model)  # leave the model as it came (every parameter trainable)

    def state_dict(self) -> dict[str, Any]:
        return {"active": self.active, "last_draw_step": self.last_draw_step, "n_active": self.n_active,
                "interval": self.interval, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.active = state_dict.get("active")
        self.last_draw_step = state_dict.get("last_draw_step")
