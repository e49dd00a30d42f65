"""Shared test helpers: offline switches, ../shared discovery, Hydra composition, CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONF = REPO / "conf"

for _k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("WANDB_MODE", "offline")

requires_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} (../shared beside the repo) is absent")


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (../shared beside the repo) is absent")
    return SHARED


def compose(overrides: list[str] | None = None, *, hydra_cfg: bool = False):
    """Compose conf/config.yaml exactly as `python -m sgft_lab` does (including the +experiment rewrite)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    from sgft_lab.__main__ import normalize_overrides  # also registers the config schema

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return _compose("config", overrides=normalize_overrides(list(overrides or [])), return_hydra_config=hydra_cfg)


def run_sgft(args: list[str], tmp_path: Path, *, module: str = "sgft_lab", timeout: int = 600,
             check: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m sgft_lab ARGS` with outputs under tmp_path; returns the completed process."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SGFT_LAB_OUTPUT_DIR=str(tmp_path / "outputs"), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", module, *args], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\nSTDOUT:\n{p.stdout[-4000:]}\nSTDERR:\n{p.stderr[-4000:]}")
    return p


@pytest.fixture
def server():
    """``server(**kw)`` starts a fault-injecting fake OpenAI-compatible server (tests/fake_openai_server.py) on
    127.0.0.1; every server started is stopped after the test."""
    from fake_openai_server import FakeOpenAIServer

    servers = []

    def make(**kw):
        s = FakeOpenAIServer(**kw).start()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on 2 shared cores run several times faster on one thread than on two contended ones."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# Settings that make an end-to-end run take seconds: tiny data, 2 epochs, small student.
TINY = [
    "benchmark.n_train=48", "benchmark.n_val=8", "benchmark.n_test=8", "trainer.max_epochs=2",
    "trainer.batch_size=8", "trainer.enable_progress_bar=false", "student.hidden_size=32",
    "student.num_layers=1", "student.num_heads=2", "student.intermediate_size=64", "student.vocab_size=300",
    "student.max_new_tokens=48", "print_table=false",
]


# Student fixtures shared by the student tests: prompts of clearly different lengths, so batches mix lengths
# and left padding is exercised.
PAIRS = [
    ("What is 3 plus 4? ###", " 3 + 4 = 7. --> 7"),
    ("Tom has 12 apples and buys 5 more. How many apples does he have now? ###", " 12 + 5 = 17. --> 17"),
    ("Sum 7 and 8 ###", " 7 + 8 = 15. --> 15"),
    ("A shop sold 20 cakes in the morning and 22 in the evening. How many? ###", " 20 + 22 = 42. --> 42"),
    ("1 plus 9 ###", " 1 + 9 = 10. --> 10"),
    ("Ann read 33 pages and then 4 more pages. ###", " 33 + 4 = 37. --> 37"),
]
CORPUS = [t for pair in PAIRS for t in pair] * 5


def wandb_records(path: Path) -> list:
    """Records of an offline W&B run file (`run-<id>.wandb`: a ':W&B' header, then LevelDB-log records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, block, out, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL / FIRST start a record, MIDDLE / LAST extend it
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def wandb_summary(path: Path) -> dict:
    """The summary an offline W&B run file holds (key -> value), its last update winning."""
    import json

    out: dict = {}
    for rec in wandb_records(path):
        if rec.WhichOneof("record_type") == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                out[key] = json.loads(item.value_json)
    return out


def results_of(root: Path) -> list[dict]:
    """Every results.json under ``root`` (W&B folders excluded), in path order."""
    import json

    return [json.loads(p.read_text()) for p in sorted(Path(root).rglob("results.json")) if "wandb" not in p.parts]

