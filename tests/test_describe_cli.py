"""`python -m sgft_lab.data describe`: split counts, one rendered example, a JSON last line; no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "data"
SHARED_DATA = REPO.parent / "shared" / "data"
requires_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} (../shared beside the repo) is absent"
)

OFFICIAL = {  # methods.md 2.7 (train, test)
    "single_eq": (356, 152),
    "addsub": (276, 119),
    "multiarith": (420, 180),
    "gsm8k": (7473, 1319),
    "aqua": (10000, 254),
    "svamp": (700, 300),
    "date_understanding": (258, 111),
    "tracking_shuffled_objects": (525, 225),
    "last_letter_concatenation": (350, 150),
    "coin_flip": (350, 150),
    "commonsense_qa": (9741, 1221),
    "strategy_qa": (1603, 687),
}


def describe(*args: str, env_data_dir: str | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SGFT_LAB_DATA_DIR"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if env_data_dir:
        env["SGFT_LAB_DATA_DIR"] = env_data_dir
    return subprocess.run(
        [sys.executable, "-m", "sgft_lab.data", "describe", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def last_json(p: subprocess.CompletedProcess) -> dict:
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.shared
@requires_shared
@pytest.mark.parametrize("key", list(OFFICIAL))
def test_describe_official_counts(key):
    p = describe("--benchmark", key, "--data-dir", str(SHARED_DATA), "--split", "fine_tune_cot")
    out = last_json(p)
    n_train, n_test = OFFICIAL[key]
    assert out["benchmark"] == key and out["split"] == "fine_tune_cot" and out["test"] == n_test
    assert f"official train: {n_train}" in p.stdout
    if key == "aqua":  # train.json absent: test only, with the file to supply named
        assert out["train"] == 0 and out["val"] == 0
        assert "aqua/train.json" in p.stdout and "github.com/deepmind/AQuA" in p.stdout
    else:
        assert out["train"] + out["val"] == n_train and out["val"] == round(n_train * 0.1)
    assert "question:" in p.stdout and "answer:" in p.stdout


def test_describe_on_fixtures_via_env_and_n_shot():
    p = describe("--benchmark", "gsm8k", env_data_dir=str(FIXTURES))
    assert last_json(p) == {"benchmark": "gsm8k", "split": "fine_tune_cot", "train": 3, "val": 0, "test": 2}
    assert "example gsm8k:0" in p.stdout and "rationale: Lia buys 3 * 12" in p.stdout
    p = describe("--benchmark", "mawps", "--data-dir", str(FIXTURES), "--n-shot", "2")
    assert last_json(p) == {"benchmark": "mawps", "split": "random", "train": 2, "val": 0, "test": 1}
    assert "n_shot 2: train 4 -> 2" in p.stdout


def test_describe_errors_are_one_clear_line(tmp_path):
    p = describe("--benchmark", "nope", "--data-dir", str(FIXTURES))
    assert p.returncode == 2 and "unknown benchmark 'nope'; known: single_eq" in p.stderr
    assert "Traceback" not in p.stderr
    p = describe("--benchmark", "svamp", cwd=tmp_path)  # no data dir named, none of the defaults exists there
    assert p.returncode == 2 and "SGFT_LAB_DATA_DIR" in p.stderr and "Traceback" not in p.stderr


def test_describe_imports_no_torch():
    code = (
        "import sys; from sgft_lab.data.__main__ import main; "
        f"rc = main(['describe', '--benchmark', 'date_understanding', '--data-dir', {str(FIXTURES)!r}]); "
        "heavy = [m for m in ('torch', 'transformers', 'lightning', 'datasets') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout


def test_describe_accepts_the_embedded_benchmarks_the_app_runs(tmp_path):
    """The keys a newcomer's own runs use: generated, so no data dir is needed; --n-shot sets n_train."""
    p = describe("--benchmark", "embedded_coin_flip", "--n-shot", "12", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert last_json(p) == {"benchmark": "embedded_coin_flip", "split": "embedded", "train": 12, "val": 100,
                            "test": 200}
    assert "scored as coin_flip" in p.stdout and "answer: " in p.stdout
    p = describe("--benchmark", "embedded_arithmetic", "--protocol", "paper", cwd=tmp_path)
    assert last_json(p)["val"] == 0 and last_json(p)["train"] == 2000
