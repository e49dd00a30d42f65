"""`python -m sgft_lab --help`: the project's own help (conf/hydra/help/sgft_lab.yaml); `--hydra-help` stays
Hydra's."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import CONF, run_sgft


def _groups(text: str) -> dict[str, list[str]]:
    """The help's group listing ("  group:  a, b, c" with wrapped continuation lines) as {group: options}."""
    out: dict[str, list[str]] = {}
    block = text.split("== Config groups (group=option) ==", 1)[1].split("\n==", 1)[0]
    group = None
    for line in block.splitlines():
        m = re.match(r"^  (\w+):\s+(.*)$", line)
        if m:
            group = m.group(1)
            out[group] = []
            rest = m.group(2)
        elif group and re.match(r"^ {4,}\S", line):
            rest = line
        else:
            group = None
            continue
        out[group] += [o.strip() for o in rest.split(",") if o.strip()]
    return out


def test_help_lists_groups_examples_and_outputs(tmp_path: Path):
    from sgft_lab.config import METHOD_SCHEMAS

    p = run_sgft(["--help"], tmp_path)
    out = p.stdout
    assert out.startswith("sgft_lab: distil reasoning"), out[:300]
    assert "_schema" not in out and "powered by Hydra" not in out
    groups = _groups(out)
    methods = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))
    assert sorted(groups["method"]) == sorted(METHOD_SCHEMAS) == methods
    for group in ("student", "teacher", "benchmark", "trainer", "logger", "paths", "tier"):
        assert sorted(groups[group]) == sorted(p.stem for p in (CONF / group).glob("*.yaml")), group
    assert "fine_tune_cot/main" in groups["experiment"] and "sgft/gsm8k" in groups["experiment"]
    assert "hydra" not in groups
    examples = out.split("== Examples ==", 1)[1].split("\n==", 1)[0]
    assert len(re.findall(r"^python -m sgft_lab\b", examples, flags=re.M)) == 5
    for needle in ("outputs/runs/", "outputs/multirun/", "outputs/cache/teacher_cache.sqlite", "README.md",
                   "python -m sgft_lab.report", "SGFT_LAB_CONFIG_PATH", "hydra.searchpath", "--hydra-help",
                   "--cfg,-c"):  # the last: Hydra's flags ($FLAGS_HELP)
        assert needle in out, needle
    assert "$" not in out.replace('"$(python', "")  # every template placeholder was filled


def test_help_lists_a_user_config_dir(tmp_path: Path, monkeypatch):
    d = tmp_path / "mine"
    (d / "student").mkdir(parents=True)
    (d / "student" / "my_model.yaml").write_text("name: my_model\n")
    monkeypatch.setenv("SGFT_LAB_CONFIG_PATH", str(d))
    assert "my_model" in _groups(run_sgft(["--help"], tmp_path).stdout)["student"]


def test_hydra_help_stays_hydras(tmp_path: Path):
    out = run_sgft(["--hydra-help"], tmp_path).stdout
    assert out.startswith("Hydra (") and "hydra/job_logging" in out and "sgft_lab: distil" not in out
