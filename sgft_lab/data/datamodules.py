"""LightningDataModules: supervised (input -> label) pairs for training, questions for evaluation.

CoTDataModule serves Fine-tune-CoT samples (question -> rationale --> answer, or question -> answer for
vanilla fine-tuning); SGFT and FDD datasets are served by the same module with their own pairs.
Evaluation is generation-based (evaluation.py), so val/test are held as Examples, not as loss batches.

The training loader is a :class:`ResumableLoader`: a run resumed from a mid-epoch checkpoint trains on the
batches an uninterrupted run would have trained on next. Every batch carries ``sample_index`` (positions in
``train_pairs``), which the model ignores and debug records read (training.sample_recorder), and ``task`` (each
pair's ``Pair.task``), which only a multi-task student's loss reads (StudentModule ``task_weights``).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch

from ..benchmarks.record import Example
from .formats import Pair


class _Encoded(torch.utils.data.Dataset):
    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return {**self.items[i], "sample_index": i}


def _with_index(collate_fn, items: list[dict]) -> dict:
    """``collate_fn``'s batch plus ``sample_index`` (which training samples it holds) and ``task`` (each
    sample's task: Pair.task, 0 for single-task methods)."""
    batch = collate_fn(items)
    batch["sample_index"] = torch.tensor([x["sample_index"] for x in items], dtype=torch.long)
    batch["task"] = torch.tensor([x.get("task", 0) for x in items], dtype=torch.long)
    return batch


class _SkipOnce:
    """An index sampler whose first iteration skips ``skip`` items (batches, for a batch sampler)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        it = iter(self.sampler)
        for _ in zip(range(skip), it):  # drawn lazily: after Lightning's set_epoch
            pass
        yield from it


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader that resumes mid-epoch, through Lightning's stateful-loader protocol (``state_dict`` /
    ``load_state_dict``): Lightning saves the state with the fit loop in every checkpoint;
    ``training.resume_callback`` saves it too and restores it before a resumed fit draws its first batch
    (Lightning's own restore misses a loader built early, see there).

    The state is the loader's ``generator`` as it was when the current epoch's iterator started (the shuffle
    order of a RandomSampler and the workers' base seed come from it) and the number of batches yielded since;
    a resumed iterator starts from that generator state and skips those batches by index, so nothing is loaded
    or collated twice. After an epoch's last batch the state is the generator as it is now and no batches: the
    next epoch's start. Samplers that shuffle by ``set_epoch`` (DistributedSampler, LengthGroupedSampler)
    need no generator: Lightning sets the epoch before the first index is drawn.
    Counting at the loader, not the sampler, is exact with workers too (they prefetch indices); Lightning does
    not prefetch batches from a loader with a length.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoch_start = None  # the generator's state when the current epoch's iterator started
        self._yielded = 0  # batches yielded by that iterator (the skipped ones included)
        self._skip = 0  # batches the next iterator skips
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        g = self.generator
        if self._epoch_start is None or self._yielded >= len(self):
            return {"generator": None if g is None else g.get_state(), "batches": 0}
        return {"generator": self._epoch_start, "batches": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    def __iter__(self):
        # A generator function: the iterator (and its generator draws) is made at the first batch, after
        # Lightning restored this loader's state and set the sampler's epoch.
        skip = 0
        if self._resume is not None:
            state, self._resume = self._resume, None
            if state.get("generator") is not None and self.generator is not None:
                self.generator.set_state(state["generator"])
            skip = int(state.get("batches", 0))
        self._epoch_start = None if self.generator is None else self.generator.get_state()
        self._yielded = self._skip = skip
        it = super().__iter__()
        self._skip = 0
        for batch in it:
            self._yielded += 1
            yield batch

    @property
    def _index_sampler(self):
        # torch's DataLoader draws indices from this property (the batch sampler); a resumed iterator takes a
        # copy that skips the batches already trained on.
        sampler = super()._index_sampler
        return _SkipOnce(sampler, self._skip) if self._skip else sampler


class LengthGroupedSampler(torch.utils.data.DistributedSampler):
    """Sample indices so that consecutive ``batch_size`` runs have similar lengths; batch order shuffled.

    Each epoch (``set_epoch``): a seeded permutation is cut into groups of
    ``batch_size * world * group_batches`` samples, each group is sorted by length and cut into batches, and
    the batches are shuffled (the longest batch first, so an out-of-memory error shows at the first step, as
    in transformers' LengthGroupedSampler).
    Batch b goes to rank ``b % world``; the batch list is padded with repeats to a multiple of the world size,
    and the one partial batch is its rank's last, so a DataLoader with the same ``batch_size`` rebuilds the
    batches exactly. A DistributedSampler subclass, so Lightning's DDP does not wrap (and reshuffle) it.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, num_replicas: int = 1,
                 rank: int = 0, group_batches: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.group_batches = group_batches

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch."""
        n, bs, world = len(self.lengths), self.batch_size, self.num_replicas
        if n == 0:
            return []
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(n, generator=g).tolist()
        group = bs * world * self.group_batches
        batches: list[list[int]] = []
        for s in range(0, n, group):
            chunk = sorted(perm[s:s + group], key=lambda i: -self.lengths[i])
            batches += [chunk[k:k + bs] for k in range(0, len(chunk), bs)]
        full = [b for b in batches if len(b) == bs]
        partial = [b for b in batches if len(b) < bs]
        order = torch.randperm(len(full), generator=g).tolist()
        full = [full[i] for i in order]
        if full:
            longest = max(range(len(full)), key=lambda i: max(self.lengths[j] for j in full[i]))
            full.insert(0, full.pop(longest))
        # Every rank gets as many batches (repeats fill up); the one partial batch stays last overall.
        short = -(len(full) + len(partial)) % world
        source = full or partial
        batches = full + [source[i % len(source)] for i in range(short)] + partial
        return batches[self.rank::world]

    def __iter__(self):
        return iter([i for b in self.batches() for i in b])

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches())


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of padded positions when each batch is padded to its longest sequence."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1.0 - real / total if total else 0.0


class CoTDataModule(pl.LightningDataModule):
    """Training pairs (tokenised once) for the student; val/test questions for generation-based evaluation.

    ``group_by_length``: batches of similar length (``LengthGroupedSampler``) instead of plain shuffling, so
    little compute goes to padding; None = off unless ``training.fit`` sets it from
    ``trainer.group_by_length``.
    """

    def __init__(self, student, train_pairs: Sequence[Pair], val: Sequence[Example], test: Sequence[Example],
                 batch_size: int, num_workers: int = 0, seed: int = 0, group_by_length: bool | None = None):
        super().__init__()
        self.student = student
        self.train_pairs = list(train_pairs)
        self.val_examples = list(val)
        self.test_examples = list(test)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.group_by_length = group_by_length
        self._train: _Encoded | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        from ..students.encode import encode_pair

        cfg = self.student.cfg
        self._train = _Encoded([
            {**encode_pair(self.student.tokenizer, self.student.family, p.input, p.label,
                           cfg.max_input_tokens, cfg.max_label_tokens, chat=self.student.chat), "task": p.task}
            for p in self.train_pairs
        ])

    def train_dataloader(self):
        from functools import partial

        from ..students.encode import collate

        if not self.train_pairs:
            raise ValueError("no training samples: the filter kept nothing (see teacher/filter_report.json)")
        self.setup()
        collate_fn = partial(collate, pad_id=self.student.tokenizer.pad_token_id, family=self.student.family)
        if self.student.cfg.official_padding and self.student.family == "decoder":
            from ..students.encode import collate_official

            width = max(len(x["input_ids"]) for x in self._train.items)  # type: ignore[union-attr]
            collate_fn = partial(collate_official, pad_id=self.student.tokenizer.pad_token_id, width=width)
        collate_fn = partial(_with_index, collate_fn)
        # The loader's own generator: the shuffle order (RandomSampler) and the workers' base seed come from it,
        # never from the global RNG, so a resumed loader draws exactly what an uninterrupted one would.
        g = torch.Generator().manual_seed(self.seed)
        if self.group_by_length:
            trainer = getattr(self, "trainer", None)
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = LengthGroupedSampler(self.lengths(), self.batch_size, seed=self.seed,
                                           num_replicas=world, rank=rank)
            return ResumableLoader(self._train, batch_size=self.batch_size, sampler=sampler, generator=g,
                                   num_workers=self.num_workers, collate_fn=collate_fn)
        return ResumableLoader(self._train, batch_size=self.batch_size, shuffle=True, generator=g,
                               num_workers=self.num_workers, collate_fn=collate_fn)

    def lengths(self) -> list[int]:
        """Padded length that each training sample imposes on its batch (decoder: prompt + label tokens)."""
        self.setup()
        return [max(len(x["input_ids"]), len(x["labels"])) for x in self._train.items]  # type: ignore[union-attr]

    def n_train_tokens(self) -> int:
        self.setup()
        return sum(len(x["input_ids"]) for x in self._train.items)  # type: ignore[union-attr]
