"""kill -9 at any point, rerun the same command: the run ends exactly where an uninterrupted one ends.

One uninterrupted run of ARGS (module fixture) is the reference. Each test starts the same command in a fresh
output folder (its own teacher cache), kills it with SIGKILL at one point, reruns the command to completion and
compares with the reference: results.json ``metrics`` and ``entries``, every metrics.csv row (each epoch's once;
timing columns aside), every predictions file, the final and the best weights -- all equal on CPU with one
thread. And it proves the rerun resumed instead of starting over: it went on from the step of the checkpoint
left at the kill (``speed.resumed_at_step``) and ran only the remaining optimizer steps (``speed.train_steps``);
a teacher-stage kill costs no teacher call for an answer stored before it.

The student is the tiny one with LoRA (dropout 0.05, so the random state must be restored too); LoRA
checkpoints hold only the adapter tensors and their optimizer state.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, TINY, run_sgft

torch = pytest.importorskip("torch")
pytest.importorskip("lightning.pytorch")

EPOCHS = 2
ARGS = [*TINY, "trainer.threads=1", "trainer.log_every_n_steps=2",
        "trainer.checkpoint_every_n_steps=1",  # a step checkpoint after every optimizer step
        "method.teacher_batch_size=1",  # one cache commit per teacher answer: a kill can land inside the stage
        "student.adapter=lora", "student.lora_target_modules=[q_proj,v_proj]"]
TIMING_COLUMNS = {"train_tokens_per_s", "peak_memory_gib"}  # wall-clock and RSS: never equal between runs


@dataclass
class Run:
    out: Path  # SGFT_LAB_OUTPUT_DIR
    run_dir: Path
    results: dict

    @property
    def rows(self) -> list[tuple]:
        """metrics.csv rows (timing columns aside), sorted."""
        with (self.run_dir / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        return sorted(tuple(sorted((k, v) for k, v in r.items() if k not in TIMING_COLUMNS and v != ""))
                      for r in rows)

    def checkpoint(self, name: str = "last.ckpt") -> dict:
        return torch.load(self.run_dir / "checkpoints" / name, map_location="cpu", weights_only=False)


def _load(out: Path) -> Run:
    (res_file,) = (out / "runs").rglob("results.json")
    res = json.loads(res_file.read_text())
    return Run(out, Path(res["run"]["run_dir"]), res)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Run:
    out = tmp_path_factory.mktemp("reference")
    run_sgft(ARGS, out)
    ref = _load(out / "outputs")
    assert ref.results["resumed_from_checkpoint"] is None
    return ref


def _start(out: Path, **env: str) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    full = dict(os.environ, SGFT_LAB_OUTPUT_DIR=str(out / "outputs"), PYTHONUNBUFFERED="1", **env)
    full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
    with (out / "killed.stderr").open("w") as err:  # a file: a full pipe would block the run
        return subprocess.Popen([sys.executable, "-m", "sgft_lab", *ARGS], cwd=out, env=full,
                                stdout=subprocess.DEVNULL, stderr=err)


def _kill_when(proc: subprocess.Popen, out: Path, ready, timeout: float = 180) -> None:
    """Poll ``ready()`` until it holds, then kill -9 the run; fail if the run ended first."""
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready():
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, \
        f"the run ended (exit {proc.returncode}) before the kill point: {(out / 'killed.stderr').read_text()[-3000:]}"
    assert not list((out / "outputs" / "runs").rglob("results.json"))


def _step_at_kill(run_dir: Path) -> int | None:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] if ckpt.is_file() else None


def _rerun_and_compare(out: Path, reference: Run, step_at_kill: int | None) -> Run:
    """Rerun the command to completion; assert it equals the reference and ran only the remaining steps."""
    run_sgft(ARGS, out)
    run = _load(out / "outputs")
    res, ref = run.results, reference.results
    assert res["metrics"] == ref["metrics"]
    assert res["entries"] == ref["entries"]
    # every epoch's rows once, the rows of steps before the kill kept, those after logged again, all equal
    assert run.rows == reference.rows
    epoch_rows = [dict(r)["epoch"] for r in run.rows if "train_loss_epoch" in dict(r)]
    assert sorted(epoch_rows) == [str(e) for e in range(EPOCHS)]
    for f in sorted((reference.run_dir / "predictions").iterdir()):
        assert (run.run_dir / "predictions" / f.name).read_text() == f.read_text(), f.name
    for name in ("last.ckpt", "best.pt"):
        mine, theirs = run.checkpoint(name), reference.checkpoint(name)
        weights = mine.get("state_dict", mine)
        assert weights.keys() == theirs.get("state_dict", theirs).keys()
        assert all(torch.equal(weights[k], theirs.get("state_dict", theirs)[k]) for k in weights), name
    # resumed, not restarted: only the steps after the checkpoint left at the kill ran again
    total = ref["speed"]["train_steps"]
    assert total == reference.checkpoint()["global_step"] > 0
    if step_at_kill is None:
        assert res["resumed_from_checkpoint"] is None and res["speed"]["train_steps"] == total
    else:
        assert res["resumed_from_checkpoint"] == str(run.run_dir / "checkpoints" / "last.ckpt")
        assert res["speed"]["resumed_at_step"] == step_at_kill
        assert res["speed"]["train_steps"] == total - step_at_kill
    leftovers = {".metrics.csv.resume", "last.ckpt.pending"}
    assert not [p for p in run.run_dir.rglob("*") if p.name in leftovers]
    return run


def _run_dir(reference: Run, out: Path) -> Path:
    """The same command's run dir under another output folder."""
    return out / "outputs" / reference.run_dir.relative_to(reference.out)


def _cache_rows(out: Path) -> int:
    db = out / "outputs" / "cache" / "teacher_cache.sqlite"
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("SELECT count(*) FROM completions").fetchone()[0]
    except sqlite3.Error:  # the run is creating it
        return 0


@pytest.mark.slow
def test_kill_during_the_teacher_stage(reference: Run, tmp_path: Path):
    run_dir = _run_dir(reference, tmp_path)
    _kill_when(_start(tmp_path), tmp_path, lambda: _cache_rows(tmp_path) > 0)
    stored, calls = _cache_rows(tmp_path), reference.results["teacher"]["calls"]
    assert not (run_dir / "teacher" / "samples.jsonl").exists() and 0 < stored < calls, \
        f"the kill did not land inside the teacher stage ({stored} of {calls} answers stored)"
    assert _step_at_kill(run_dir) is None

    run = _rerun_and_compare(tmp_path, reference, None)
    # no stored answer was asked for again
    assert run.results["teacher"]["calls"] == calls - stored
    assert run.results["teacher"]["cache_hits"] == stored


@pytest.mark.slow
def test_kill_mid_epoch_after_a_step_checkpoint(reference: Run, tmp_path: Path):
    run_dir = _run_dir(reference, tmp_path)
    ckpt, seen = run_dir / "checkpoints" / "last.ckpt", {}

    def step_checkpoint() -> bool:  # LoRA: a checkpoint at step 0 comes first; wait for a later one
        try:
            st = ckpt.stat()
        except FileNotFoundError:
            return False
        if (st.st_ino, st.st_mtime_ns) not in seen:
            seen[(st.st_ino, st.st_mtime_ns)] = _step_at_kill(run_dir)
        return (seen[(st.st_ino, st.st_mtime_ns)] or 0) > 0

    _kill_when(_start(tmp_path), tmp_path, step_checkpoint)
    step = _step_at_kill(run_dir)
    per_epoch = reference.results["speed"]["train_steps"] // EPOCHS
    assert 0 < step < per_epoch, f"not killed within the first epoch (checkpoint at step {step})"
    assert not (run_dir / "predictions").exists()
    _rerun_and_compare(tmp_path, reference, step)


@pytest.mark.slow
def test_kill_between_epochs(reference: Run, tmp_path: Path):
    run_dir = _run_dir(reference, tmp_path)
    _kill_when(_start(tmp_path), tmp_path, (run_dir / "predictions" / "epoch_000.jsonl").is_file)
    step = _step_at_kill(run_dir)
    per_epoch = reference.results["speed"]["train_steps"] // EPOCHS
    # epoch 0 evaluated, epoch 1 not: resumed from the last step checkpoint of epoch 0 (its evaluation runs
    # again) or from epoch 0's own checkpoint, or from a step of epoch 1
    assert not (run_dir / "predictions" / "epoch_001.jsonl").exists() and step >= per_epoch - 1
    _rerun_and_compare(tmp_path, reference, step)


@pytest.mark.slow
def test_kill_during_the_evaluation(reference: Run, tmp_path: Path):
    """The evaluator's test hook stops the process inside epoch 1's evaluation (generated and scored, best
    weights saved if better, predictions not written); kill -9 it there."""
    run_dir = _run_dir(reference, tmp_path)
    proc = _start(tmp_path, SGFT_LAB_TEST_STOP_IN_EVAL=str(EPOCHS - 1))
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), f"the run ended instead: {(tmp_path / 'killed.stderr').read_text()[-3000:]}"
    _kill_when(proc, tmp_path, lambda: True)
    assert (run_dir / "predictions" / "epoch_000.jsonl").is_file()
    assert not (run_dir / "predictions" / f"epoch_{EPOCHS - 1:03d}.jsonl").exists()
    step = _step_at_kill(run_dir)
    assert step == reference.results["speed"]["train_steps"] - 1  # the step checkpoint before the last batch
    _rerun_and_compare(tmp_path, reference, step)


@pytest.mark.slow
def test_lora_checkpoints_hold_only_the_adapter(reference: Run):
    final = reference.checkpoint()
    keys = set(final["state_dict"])
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys), sorted(keys)[:5]
    assert len(keys) == 4  # A and B of q_proj and v_proj, one layer
    (opt,) = final["optimizer_states"]
    assert len(opt["state"]) == len(keys)
    assert final["epoch"] == EPOCHS - 1
