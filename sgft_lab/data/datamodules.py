"""LightningDataModules: supervised (input -> label) pairs for training, questions for evaluation.

CoTDataModule serves Fine-tune-CoT samples (question -> rationale --> answer, or question -> answer for
vanilla fine-tuning); SGFT and FDD datasets are served by the same module with their own pairs.
Evaluation is generation-based (evaluation.py), so val/test are held as Examples, not as loss batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import lightning.pytorch as pl
import torch

from ..benchmarks.record import Example


@dataclass
class Pair:
    """One training sample: the student's input and its target, plus where it came from."""

    input: str
    label: str
    example_id: str = ""
    source: str = ""  # e.g. "teacher:0" (sample index), "gold"

    def to_dict(self) -> dict:
        return {"example_id": self.example_id, "source": self.source, "input": self.input, "label": self.label}


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


class CoTDataModule(pl.LightningDataModule):
    """Training pairs (tokenised once) for the student; val/test questions for generation-based evaluation."""

    def __init__(self, student, train_pairs: Sequence[Pair], val: Sequence[Example], test: Sequence[Example],
                 batch_size: int, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.student = student
        self.train_pairs = list(train_pairs)
        self.val_examples = list(val)
        self.test_examples = list(test)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._train: _Encoded | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        from ..students.encode import encode_pair

        cfg = self.student.cfg
        self._train = _Encoded([
            encode_pair(self.student.tokenizer, self.student.family, p.input, p.label,
                        cfg.max_input_tokens, cfg.max_label_tokens)
            for p in self.train_pairs
        ])

    def train_dataloader(self):
        from functools import partial

        from ..students.encode import collate

        if not self.train_pairs:
            raise ValueError("no training samples: the filter kept nothing (see teacher/filter_report.json)")
        self.setup()
        g = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(
            self._train, batch_size=self.batch_size, shuffle=True, generator=g, num_workers=self.num_workers,
            collate_fn=partial(collate, pad_id=self.student.tokenizer.pad_token_id, family=self.student.family),
        )

    def n_train_tokens(self) -> int:
        self.setup()
        return sum(len(x["input_ids"]) for x in self._train.items)  # type: ignore[union-attr]
