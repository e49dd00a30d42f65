"""One process per run dir (sgft_lab/runlock.py): a second process exits at once naming the dir and the holder;
a lock left by a killed process is taken over; other ranks do not lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY, run_sgft
from sgft_lab.errors import RunDirBusy
from sgft_lab.paths import RunPaths
from sgft_lab.runlock import acquire, release


def test_a_second_process_on_a_busy_run_dir_exits_at_once_naming_the_holder(tmp_path):
    # dry_run names the run dir the same command will use, without making it
    run_sgft([*TINY, "dry_run=true"], tmp_path)
    (plan,) = (tmp_path / "outputs").rglob("plan.json")
    run_dir = Path(json.loads(plan.read_text())["run_dir"])
    plan.unlink()
    lock = acquire(RunPaths(run_dir))  # this test process holds the dir, as a running sgft_lab would
    try:
        p = run_sgft(TINY, tmp_path, check=False)
    finally:
        release(lock)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith(f"sgft_lab: {run_dir} is in use by another sgft_lab process (pid {os.getpid()} on ")
    assert not (run_dir / "config.yaml").exists()  # nothing was written into the busy dir


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    paths = RunPaths(tmp_path / "run")
    code = ("import sys, time; from pathlib import Path; from sgft_lab.paths import RunPaths; "
            "from sgft_lab.runlock import acquire; held = acquire(RunPaths(Path(sys.argv[1]))); "
            "print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(paths.run_dir)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid} on "):
            acquire(paths)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10  # the OS frees the lock when the holder dies
    while True:
        try:
            lock = acquire(paths)
            break
        except RunDirBusy:
            assert time.time() < deadline, "the dead holder's lock was not taken over"
            time.sleep(0.1)
    try:
        assert paths.lock_owner.read_text().startswith(f"pid {os.getpid()} on ")
    finally:
        release(lock)
    release(acquire(paths))  # released: free again


def test_only_rank_zero_locks(tmp_path):
    paths = RunPaths(tmp_path / "run")
    lock = acquire(paths)
    try:
        assert acquire(paths, rank=1) is None  # DDP's other ranks share rank 0's dir
    finally:
        release(lock)
