"""(input_text, label_text) pairs -> token ids -> padded batches, as Fine-tune-CoT does (methods.md 2.5).

Decoder: input and label are tokenized *separately* and their ids concatenated; the loss covers only the label
(input positions are -100) and the label ends with EOS. Because the prompt is tokenized on its own, the ids a
decoder sees at generation time (``prompt_ids``) are exactly those it was trained on.
Encoder-decoder: standard seq2seq, padded label positions -100.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FAMILIES = ("decoder", "encoder_decoder")
IGNORE_INDEX = -100

_specials: weakref.WeakKeyDictionary[Any, tuple[list[int], list[int]]] = weakref.WeakKeyDictionary()


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Ids ``tokenizer`` puts before and after a text when ``add_special_tokens=True`` (Llama: [BOS], [])."""
    try:
        return _specials[tokenizer]
    except (KeyError, TypeError):
        pass
    probe = "x"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(bare) + 1):
        if full[i:i + len(bare)] == bare:
            out = (list(full[:i]), list(full[i + len(bare):]))
            break
    else:  # a tokenizer whose specials change the text's own ids: add none ourselves
        out = ([], [])
    try:
        _specials[tokenizer] = out
    except TypeError:
        pass
    return out


def _hf_encode(tokenizer, text: str, max_tokens: int | None) -> list[int]:
    if max_tokens is None:
        return tokenizer(text, add_special_tokens=True)["input_ids"]
    return tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"student.family={family!r} is not one of {FAMILIES}")


def prompt_ids(tokenizer, family: str, text: str, max_input_tokens: int | None = None, chat: bool = False
               ) -> list[int]:
    """Token ids of a model input, exactly as ``encode_pair`` tokenizes it (used for training and generation).

    Decoder: the tokenizer's special prefix (e.g. Llama's BOS; none for GPT-2 or the tiny tokenizer) + the
    text's ids, never a trailing EOS, cut from the right at ``max_input_tokens``; ``chat``: the text as one
    user message in the tokenizer's chat template (``student.chat_template``, Instruct students).
    Encoder-decoder: the tokenizer's own encoding with ``truncation=True`` (T5 keeps its </s>), as
    Fine-tune-CoT does.
    """
    _check_family(family)
    if family == "encoder_decoder":
        return _hf_encode(tokenizer, text, max_input_tokens)
    if chat:
        ids = chat_prompt_ids(tokenizer, text)
    else:
        prefix, _ = special_affixes(tokenizer)
        ids = prefix + tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:max_input_tokens] if max_input_tokens is not None else ids


def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    """``text`` as one user message in the tokenizer's chat template, ending with the assistant header (the
    template adds its own BOS). Used when ``student.chat_template`` (Instruct students): training
    (``encode_pair``) and generation pass ``chat`` alike, so both wrap prompts the same way."""
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True)
    if hasattr(out, "keys") and "input_ids" in out:  # transformers 5 may return a BatchEncoding
        out = out["input_ids"]
    return [int(i) for i in out]


def label_ids(tokenizer, family: str, text: str, max_label_tokens: int | None = None) -> list[int]:
    """Token ids of a target, ending with EOS unless truncation cut it off."""
    _check_family(family)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no eos_token: labels must end with EOS")
    if family == "encoder_decoder":
        _, suffix = special_affixes(tokenizer)
        if eos in suffix:  # T5 appends EOS itself (and truncation keeps it)
            return _hf_encode(tokenizer, text, max_label_tokens)
        ids = tokenizer(text, add_special_tokens=True)["input_ids"] + [eos]
    else:
        # Departs from Fine-tune-CoT only for tokenizers that add a BOS (Llama): it tokenized the label with
        # specials, so a BOS would sit mid-sequence; GPT-2 (theirs) adds none, so there the ids are identical.
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
    # As in Fine-tune-CoT (EOS appended to the text, then truncated): a cut label loses its EOS, so the
    # student is never taught to stop mid-rationale.
    return ids[:max_label_tokens] if max_label_tokens is not None else ids


def encode_pair(tokenizer, family: str, input_text: str, label_text: str, max_input_tokens: int | None = 512,
                max_label_tokens: int | None = 512, chat: bool = False) -> dict[str, list[int]]:
    """One training example as id lists: ``{"input_ids", "labels"}`` (unpadded; ``collate`` pads).

    Decoder: ``input_ids = prompt + label`` and ``labels = [-100] * len(prompt) + label``.
    Encoder-decoder: ``input_ids = prompt`` and ``labels = label``.
    """
    p = prompt_ids(tokenizer, family, input_text, max_input_tokens, chat=chat)
    y = label_ids(tokenizer, family, label_text, max_label_tokens)
    if family == "decoder":
        return {"input_ids": p + y, "labels": [IGNORE_INDEX] * len(p) + y}
    return {"input_ids": p, "labels": y}


def _pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    import torch

    n = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            out[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(batch: list[dict], pad_id: int, family: str) -> dict[str, torch.Tensor]:
    """Pad ``encode_pair`` outputs to the batch's longest: ``input_ids``, ``attention_mask``, ``labels``.

    Training batches are right-padded (Fine-tune-CoT left-pads), so each sequence's tokens sit at positions
    0..n-1 without passing position_ids; labels are padded with -100. Extra keys in the items are ignored.
    """
    _check_family(family)
    if not batch:
        raise ValueError("collate: empty batch")
    for i, item in enumerate(batch):
        if "input_ids" not in item or "labels" not in item:
            raise ValueError(f"collate: batch item {i} lacks 'input_ids' or 'labels' (keys: {sorted(item)})")
        if family == "decoder" and len(item["input_ids"]) != len(item["labels"]):
            raise ValueError(f"collate: batch item {i}: decoder input_ids and labels differ in length")
    ids = [list(b["input_ids"]) for b in batch]
    input_ids = _pad(ids, pad_id)
    attention_mask = _pad([[1] * len(s) for s in ids], 0)
    labels = _pad([list(b["labels"]) for b in batch], IGNORE_INDEX)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_official(batch: list[dict], pad_id: int, width: int) -> dict[str, torch.Tensor]:
    """Fine-tune-CoT's GPT-2 batches (src/custom/data_module.py): every decoder sequence left-padded with
    ``pad_id`` to ``width`` -- the longest sequence of the whole split, not of the batch -- attention 0 and
    labels -100 on the pads; no position ids are passed, so positions count the pads too (as theirs did)."""
    import torch

    if not batch:
        raise ValueError("collate: empty batch")
    ids, mask, labels = [], [], []
    for item in batch:
        n = len(item["input_ids"])
        if n > width:
            raise ValueError(f"collate_official: a sequence of {n} tokens exceeds the split's width {width}")
        ids.append([pad_id] * (width - n) + list(item["input_ids"]))
        mask.append([0] * (width - n) + [1] * n)
        labels.append([IGNORE_INDEX] * (width - n) + list(item["labels"]))
    return {"input_ids": torch.tensor(ids, dtype=torch.long), "attention_mask": torch.tensor(mask, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long)}

