"""The training loss without full logits: hidden states from the base model, then LM head + CE in chunks.

A decoder's own loss (``model(**batch).loss``) materialises logits for every position, upcast to fp32:
batch x seq x vocab x 4 bytes, 10 GB for 16 x 1024 tokens over Qwen's 152k vocabulary, and several copies
of it live at once in the backward pass. Here only the positions that carry a label (not the prompt, not
padding) go through the LM head, a chunk of ``chunk_size`` tokens at a time; each chunk's logits are
recomputed in the backward pass (activation checkpointing), so at most one chunk's logits exist at a time.
The result is the same loss (mean over label tokens, fp32 logits) and the same gradients as the model's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

IGNORE_INDEX = -100

# Decoders whose logits are exactly ``lm_head(base_model(...).last_hidden_state)``: no logit scaling,
# soft-capping or extra head (checked again below); any other model keeps its own loss.
CHUNKABLE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gpt2", "phi3", "olmo2", "smollm3")
# Below this many fp32 logit entries per chunk the recomputation is not worth it (tiny models, CPU tests).
_CHECKPOINT_MIN_ENTRIES = 1 << 22


def unwrap(model):
    """The transformers model inside a peft wrapper (the model itself otherwise)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def decoder_parts(model) -> tuple[Any, Any] | None:
    """``(base_model, lm_head)`` of a decoder whose logits are ``lm_head(base_model(...)[0])``, else None.

    Works through peft: LoRA layers are injected in place, so calling the inner modules runs the adapters too.
    """
    hf = unwrap(model)
    config = getattr(hf, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    if getattr(config, "model_type", None) not in CHUNKABLE_MODEL_TYPES:
        return None
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in
           ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")):
        return None
    prefix = getattr(hf, "base_model_prefix", "")
    inner = getattr(hf, prefix, None) if prefix else None
    head = hf.get_output_embeddings() if hasattr(hf, "get_output_embeddings") else None
    if inner is None or inner is hf or head is None:
        return None
    return inner, head


def _chunk_ce(x, y, head):
    import torch.nn.functional as F

    return F.cross_entropy(head(x).float(), y, reduction="sum")


def chunked_causal_lm_loss(model, input_ids, attention_mask, labels, chunk_size: int = 4096,
                           inner_fn: Callable | None = None, task=None, task_weights=None):
    """Mean cross-entropy over the label tokens (``labels != -100``, shifted by one as in transformers).

    ``inner_fn``: replaces the base model call (e.g. its ``torch.compile``d form). Raises ValueError for a
    model ``decoder_parts`` does not cover. ``task`` (one task id per row) with ``task_weights``: the
    multi-task loss of :func:`task_weighted_loss` instead, from the same hidden states.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    parts = decoder_parts(model)
    if parts is None:
        raise ValueError(f"chunked loss: {type(unwrap(model)).__name__} is not a supported decoder "
                         f"({', '.join(CHUNKABLE_MODEL_TYPES)})")
    if chunk_size < 1:
        raise ValueError(f"chunked loss: chunk_size must be >= 1, got {chunk_size}")
    inner, head = parts
    call = inner_fn if inner_fn is not None else inner  # (an OptimizedModule has no truth value)
    out = call(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    x = hidden[:, :-1][keep]  # only positions that predict a label token
    y = target[keep]
    n = y.numel()
    if n == 0:  # transformers returns nan here; a zero that keeps the graph is kinder to a training loop
        return hidden.sum() * 0.0
    vocab = head.weight.shape[0] if hasattr(head, "weight") else unwrap(model).config.vocab_size

    def ce_sum(x, y):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, y.numel(), chunk_size):
            xs, ys = x[s:s + chunk_size], y[s:s + chunk_size]
            if torch.is_grad_enabled() and xs.shape[0] * vocab >= _CHECKPOINT_MIN_ENTRIES:
                total = total + checkpoint(_chunk_ce, xs, ys, head, use_reentrant=False)
            else:
                total = total + _chunk_ce(xs, ys, head)
        return total

    if task_weights is None:
        return ce_sum(x, y) / n
    row_task = task.to(labels.device)[:, None].expand_as(target)[keep]  # each label token's task
    loss = hidden.sum() * 0.0
    for k, w in enumerate(task_weights):
        mine = row_task == k
        m = int(mine.sum())
        if m and w:
            loss = loss + w * (ce_sum(x[mine], y[mine]) / m)
    return loss


def task_weighted_loss(logits, labels, task, task_weights, shift: bool):
    """The multi-task loss of Distilling Step-by-Step (Hsieh et al. 2023, ``TaskPrefixTrainer``):
    ``sum_k task_weights[k] * CE_k``, where ``CE_k`` is the mean cross-entropy over the label tokens of the
    batch's rows of task ``k`` (``task``: one id per row) -- the loss the model itself would give on those rows
    alone. With two tasks and weights ``(alpha, 1 - alpha)``: ``alpha * label loss + (1 - alpha) * rationale
    loss``. A task with no row in the batch adds nothing (its term is zero, not re-weighted: each task keeps
    its weight whatever the batch's mix). ``shift``: decoders predict token t+1 at position t (labels shifted
    by one, as transformers does); encoder-decoders' logits line up with their labels."""
    import torch.nn.functional as F

    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    per_token = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="none").view(labels.shape)
    counted = labels != IGNORE_INDEX
    row_task = task.to(labels.device)[:, None].expand_as(labels)
    loss = logits.sum() * 0.0  # keeps the graph when no weighted task has a token here
    for k, w in enumerate(task_weights):
        mine = counted & (row_task == k)
        m = int(mine.sum())
        if m and w:
            loss = loss + w * (per_token[mine].sum() / m)
    return loss
