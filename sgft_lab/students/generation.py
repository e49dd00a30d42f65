"""Batched greedy decoding for students (Fine-tune-CoT evaluation, methods.md 2.5)."""

from __future__ import annotations

from sgft_lab.students.encode import prompt_ids


def _eos_ids(model, tokenizer) -> list[int]:
    """EOS ids to stop at: the tokenizer's (labels end with it) and any in the model's generation config."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in ([gen_eos] if isinstance(gen_eos, int) else (gen_eos or [])):
        if i not in ids:
            ids.append(i)
    return ids


def generate(model, tokenizer, family: str, prompts: list[str], max_new_tokens: int, batch_size: int = 64,
             progress: bool = False, max_input_tokens: int | None = None) -> list[str]:
    """Greedy completions of ``prompts`` (new text only, special tokens skipped), in input order.

    Prompts are tokenized by ``encode.prompt_ids`` (the ids the student was trained on; cut at
    ``max_input_tokens``), sorted longest first so each batch holds similar lengths (and an out-of-memory
    error shows in the first batch), and left-padded by hand for decoders. Decoding stops per sequence at EOS.
    Departs from Fine-tune-CoT in bounding new tokens (``max_new_tokens``) rather than prompt + new
    (``max_length=1024``). The model runs in eval mode under ``torch.no_grad`` and gets its mode back.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("tokenizer has neither a pad nor an eos token")
    eos = _eos_ids(model, tokenizer)
    encoded = [prompt_ids(tokenizer, family, p, max_input_tokens) for p in prompts]
    empty = [i for i, ids in enumerate(encoded) if not ids]
    if empty:
        raise ValueError(f"generate: prompt(s) at index {empty[:5]} encode to no tokens")
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    left = family == "decoder"  # a decoder's new tokens must follow its prompt directly
    device = next(model.parameters()).device
    outputs: list[str | None] = [None] * len(prompts)

    bar = task = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        task = bar.add_task("generating", total=len(prompts))
    was_training = model.training
    model.eval()
    try:
        if bar is not None:
            bar.start()
        with torch.no_grad():  # not inference_mode: bnb/peft may cache tensors that training later reuses
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                seqs = [encoded[i] for i in idx]
                width = max(len(s) for s in seqs)
                input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
                attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for r, s in enumerate(seqs):
                    sl = slice(width - len(s), width) if left else slice(0, len(s))
                    input_ids[r, sl] = torch.tensor(s, dtype=torch.long)
                    attention_mask[r, sl] = 1
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad_id,
                    eos_token_id=eos,
                )
                new = out[:, width:] if family == "decoder" else out
                texts = tokenizer.batch_decode(new.tolist(), skip_special_tokens=True)
                for i, t in zip(idx, texts, strict=True):
                    outputs[i] = t
                if bar is not None:
                    bar.advance(task, len(idx))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.stop()
    return outputs  # type: ignore[return-value]
