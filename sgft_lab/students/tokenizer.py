"""A small BPE tokenizer trained on the task's own text (for the tiny student).

Byte-level BPE, so any text round-trips exactly (``decode(encode(x)) == x``: leading spaces, newlines,
``-->``, ``###``), with every digit its own pre-token so numbers are spelled digit by digit (arithmetic tasks
need this far more than they need a compact vocabulary).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (digits split) on ``corpus``; return it wrapped for transformers.

    The vocabulary holds the 4 special tokens, the 256 byte symbols and up to ``vocab_size - 260`` merges
    (fewer when the corpus is small). No BOS/EOS is added on encode: callers append EOS to labels themselves.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    min_size = len(SPECIAL_TOKENS) + 256
    if vocab_size < min_size:
        raise ValueError(f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {min_size} "
                         "(256 bytes + 4 special tokens)")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever <unk>
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,  # the clean-up would eat spaces before punctuation
    )
