"""`datasets` is optional (the `hub` extra): only `benchmark.source: hub` needs it, and without it that path
ends with one line naming the extra. Absence is simulated with ``sys.modules['datasets'] = None`` (an import
of it then raises ImportError, as for a package that is not installed)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, TINY

from sgft_lab.errors import DataError


def test_datasets_is_the_hub_extra_not_a_dependency():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = lambda req: req.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip()  # noqa: E731
    assert "datasets" not in {name(r) for r in meta["dependencies"]}
    assert "datasets" in {name(r) for r in meta["optional-dependencies"]["hub"]}
    assert "sgft-lab[hub]" in meta["optional-dependencies"]["dev"]  # the tests still cover the hub path


def test_hub_path_without_datasets_names_the_extra(tmp_path: Path, monkeypatch):
    from sgft_lab.benchmarks import sources
    from sgft_lab.benchmarks.loaders import default_config, load_real

    monkeypatch.setitem(sys.modules, "datasets", None)
    rows = tmp_path / "train.jsonl"
    rows.write_text(json.dumps({"question": "q?", "answer": "a\n#### 1"}) + "\n")
    with pytest.raises(DataError, match=r"pip install 'sgft-lab\[hub\]'") as e:
        sources.hub_rows("json", None, [("train", dict)], data_files={"train": str(rows)})
    assert "\n" not in str(e.value)
    # Through the benchmark loader, as a run reaches it.
    cfg = dataclasses.replace(default_config("gsm8k"), source="hub", split="random", hub_id="json",
                              hub_config=None, hub_splits=["train"], hub_data_files={"train": str(rows)})
    with pytest.raises(DataError, match=r"benchmark.source=hub needs the Hugging Face `datasets` package"):
        load_real(cfg, None)


@pytest.mark.slow
def test_default_run_needs_no_datasets(tmp_path: Path):
    """The embedded default runs end to end with `datasets` unimportable."""
    code = ("import sys; sys.modules['datasets'] = None; sys.argv[0] = 'sgft_lab'; "
            "from sgft_lab.__main__ import main; main(); "
            "assert sys.modules['datasets'] is None")
    env = dict(os.environ, SGFT_LAB_OUTPUT_DIR=str(tmp_path / "outputs"),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", code, *TINY, "trainer.max_epochs=1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    (res,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    assert json.loads(res.read_text())["entries"]
