"""A real OpenAI-compatible server in the loop: `transformers serve` with ../shared's TinyStories-656K on CPU.

The project's own fake server (fake_openai_server.py) injects faults; this test checks the real thing:
`python -m sgft_lab teacher=openai teacher.endpoint=completions` against the server transformers ships
(extra `transformers[serving]`: fastapi, uvicorn, starlette), on 127.0.0.1. The checkpoint has no chat
template, so only /v1/completions works; the server is pinned to the model and names it by its path.

A 656K-parameter story model cannot do arithmetic, so the correctness filter keeps nothing and the run ends
with its one-line FilterError (status 2) after the whole teacher stage ran: 2 x n_train real completions
(stage 1 rationale + stage 2 answer), cached and written to teacher/samples.jsonl. A rerun of the same command
with the server stopped must reach the same point from the cache alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import SHARED, TINY, run_sgft

MODEL = SHARED / "models" / "TinyStories-656K"
N_TRAIN = 8

pytestmark = [
    pytest.mark.shared,
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL / "config.json").is_file(), reason=f"needs ../shared ({MODEL})"),
    pytest.mark.skipif(
        not all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "starlette")),
        reason="transformers serve needs its serving extra: pip install 'transformers[serving]' "
               "(part of sgft-lab[dev])"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(MODEL), "--host", "127.0.0.1",
           "--port", str(port), "--device", "cpu", "--dtype", "float32", "--log-level", "info"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"transformers serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as r:
                models = json.loads(r.read())
            assert [m["id"] for m in models["data"]] == [str(MODEL)], models
            return proc
        except OSError:
            time.sleep(0.3)
    _stop(proc)
    raise AssertionError(f"transformers serve not ready after 90 s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cache_rows(outputs: Path) -> list[tuple]:
    with sqlite3.connect(outputs / "cache" / "teacher_cache.sqlite") as c:
        q = "SELECT teacher, prompt, sample_index, text FROM completions ORDER BY key"
        return c.execute(q).fetchall()


def test_fine_tune_cot_against_transformers_serve(tmp_path: Path):
    port = _free_port()
    log = tmp_path / "serve.log"
    args = [*TINY, f"benchmark.n_train={N_TRAIN}", "trainer.max_epochs=1", "teacher=openai",
            "teacher.endpoint=completions", f"teacher.base_url=http://127.0.0.1:{port}/v1",
            f"teacher.model={MODEL}", "teacher.request_timeout_s=60"]
    t0 = time.monotonic()
    server = _start_server(port, log)
    try:
        first = run_sgft(args, tmp_path, check=False, timeout=300)
    finally:
        _stop(server)
    # The teacher stage ran through; the filter (rightly) kept nothing from a story model.
    assert first.returncode == 2, first.stderr[-3000:]
    err = first.stderr.strip().splitlines()
    expected = f"sgft_lab: the correctness filter kept 0 of {N_TRAIN} teacher samples"
    assert err and err[-1].startswith(expected), first.stderr[-3000:]
    assert "Traceback" not in first.stderr

    # Server side: one completions request per prompt (stage 1 rationales, stage 2 answers), all answered.
    served = [line for line in log.read_text().splitlines() if "POST /v1/completions" in line]
    assert len(served) == 2 * N_TRAIN and all("200" in line for line in served), served

    outputs = tmp_path / "outputs"
    rows = _cache_rows(outputs)
    teachers = {r[0] for r in rows}
    assert len(teachers) == 1 and f"127.0.0.1:{port}/v1" in next(iter(teachers)) and str(MODEL) in next(
        iter(teachers)), teachers
    assert len(rows) == 2 * N_TRAIN
    (samples_path,) = (outputs / "runs").rglob("teacher/samples.jsonl")
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()]
    assert len(samples) == N_TRAIN
    # The model's own text: a story model often ends the rationale at once (its end-of-story token, which the
    # server decodes as text), then tells a story as the "answer".
    assert all(s["reasoning_completion"] and s["answer_completion"] for s in samples), samples
    assert sum(len(s["answer_completion"]) > 20 for s in samples) >= N_TRAIN // 2, samples
    assert len({r[3] for r in rows}) >= N_TRAIN, rows
    # Stage 2 prompts carry stage 1's rationale: the cache holds both kinds of prompt.
    assert all(s["reasoning_prompt"] in {r[1] for r in rows} for s in samples)
    t_first = time.monotonic() - t0

    # Rerun with the server gone: everything comes from the cache, same outcome, same samples.
    before = samples_path.read_bytes()
    t1 = time.monotonic()
    again = run_sgft(args, tmp_path, check=False, timeout=300)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1] == err[-1], again.stderr[-3000:]
    assert _cache_rows(outputs) == rows
    assert samples_path.read_bytes() == before
    print(f"server + first run {t_first:.1f} s, cached rerun {time.monotonic() - t1:.1f} s")
