"""What a person sees while a run trains: the epoch bar carries the last evaluation's accuracies."""

from __future__ import annotations

import types

import lightning.pytorch as pl
import torch

from sgft_lab import evaluation
from sgft_lab.evaluation import EvalSpec, make_callback
from sgft_lab.paths import RunPaths


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(2, 1)
        self.student = types.SimpleNamespace(model=self.w, save_trainable=lambda path: None)

    def training_step(self, batch, _):
        return self.w(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)


def test_epoch_bar_shows_the_last_val_and_test_accuracy(tmp_path, monkeypatch):
    verdicts = {"val": [True, False, False, False], "test": [True, True, True, False]}

    def fake_predict(student, examples, spec, split, progress, epoch):
        return [{"split": split, "id": i, "correct": c} for i, c in enumerate(verdicts[split])]

    monkeypatch.setattr(evaluation, "predict", fake_predict)
    cb = make_callback({"val": [object()] * 4, "test": [object()] * 4}, EvalSpec("multiarith", "ft_cot_token", 8, 4),
                       RunPaths(tmp_path), progress=False)
    trainer = pl.Trainer(max_epochs=2, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(_Tiny())
    bar = trainer.progress_bar_metrics
    assert bar["val_accuracy"] == 0.25 and bar["test_accuracy"] == 0.75, bar
    assert sorted(p.name for p in RunPaths(tmp_path).predictions_dir.glob("*.jsonl")) == [
        "epoch_000.jsonl", "epoch_001.jsonl"]
