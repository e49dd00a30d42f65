"""kill -9 during training, rerun the same command: the run resumes from checkpoints/last.ckpt.

LoRA checkpoints hold only the adapter tensors (and their optimizer state); checkpoints are written to a
temporary file and renamed, so a kill while writing never leaves a truncated last.ckpt behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY, run_sgft

torch = pytest.importorskip("torch")
pytest.importorskip("lightning.pytorch")

EPOCHS = 8
# ~25 steps an epoch (seconds of training in all), evaluation only after the last epoch.
ARGS = [*(a for a in TINY if not a.startswith(("benchmark.n_train=", "trainer.max_epochs="))),
        "benchmark.n_train=200", f"trainer.max_epochs={EPOCHS}", f"trainer.eval_every_n_epochs={EPOCHS}",
        "trainer.threads=1", "student.adapter=lora", "student.lora_target_modules=[q_proj,v_proj]"]


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    env = dict(os.environ, SGFT_LAB_OUTPUT_DIR=str(tmp_path / "outputs"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "sgft_lab", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after_first_checkpoint(args: list[str], tmp_path: Path) -> Path:
    """Start a run, kill -9 it as soon as a checkpoint exists; return a copy of that checkpoint."""
    proc = _start(args, tmp_path)
    deadline = time.time() + 120
    ckpt = run_dir = None
    try:
        while time.time() < deadline and proc.poll() is None:
            if run_dir is None:  # the run dir appears (config.yaml) long before training starts
                run_dir = next((f.parent for f in (tmp_path / "outputs" / "runs").rglob("config.yaml")), None)
            elif (run_dir / "checkpoints" / "last.ckpt").is_file():
                ckpt = run_dir / "checkpoints" / "last.ckpt"
                break
            time.sleep(0.01)
        assert ckpt is not None, f"no checkpoint appeared (exit {proc.poll()}): {proc.stderr.read()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not list((tmp_path / "outputs" / "runs").rglob("results.json"))
    saved = tmp_path / "at_kill.ckpt"
    shutil.copy(ckpt, saved)
    return saved


@pytest.mark.slow
def test_kill_9_then_rerun_resumes_from_the_last_checkpoint(tmp_path: Path):
    at_kill = torch.load(_kill_after_first_checkpoint(ARGS, tmp_path), map_location="cpu", weights_only=False)
    assert 0 < at_kill["global_step"] and at_kill["epoch"] < EPOCHS - 1

    p = run_sgft(ARGS, tmp_path)  # the same command
    (res_file,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    res = json.loads(res_file.read_text())
    run_dir = Path(res["run"]["run_dir"])
    assert res["resumed_from_checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert "resuming from checkpoint" in p.stdout
    assert (run_dir / "predictions" / f"epoch_{EPOCHS - 1:03d}.jsonl").is_file()

    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    steps_per_epoch = at_kill["global_step"] // (at_kill["epoch"] + 1)
    assert final["epoch"] == EPOCHS - 1 and final["global_step"] == EPOCHS * steps_per_epoch
    # LoRA: the checkpoint holds the adapter (A and B of q_proj and v_proj, one layer) and its optimizer
    # state.
    keys = set(final["state_dict"])
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys), sorted(keys)[:5]
    assert len(keys) == 4
    (opt,) = final["optimizer_states"]
    assert len(opt["state"]) == len(keys)
    # the adapter moved on after the resume
    assert any(not torch.equal(final["state_dict"][k], at_kill["state_dict"][k]) for k in keys)


@pytest.mark.slow
def test_mid_epoch_checkpoint_resume(tmp_path: Path):
    args = [*ARGS, "trainer.checkpoint_every_n_steps=2"]
    at_kill = torch.load(_kill_after_first_checkpoint(args, tmp_path), map_location="cpu", weights_only=False)
    assert at_kill["global_step"] >= 2
    run_sgft(args, tmp_path)
    (res_file,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    res = json.loads(res_file.read_text())
    assert res["resumed_from_checkpoint"] and len(res["details"]["history"]) == 1
    final = torch.load(Path(res["run"]["run_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    assert final["global_step"] > at_kill["global_step"]
