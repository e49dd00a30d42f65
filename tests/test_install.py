"""Installable: a wheel of the project carries its configs, and the installed copy runs from anywhere.

The wheel is built offline from a copy of the project (``pip wheel --no-deps --no-build-isolation``) and
installed with ``pip install --no-deps --target SITE``. Each command then runs as ``python -S -m sgft_lab``
from an empty directory with ``PYTHONPATH=SITE:<this environment's site-packages>``: ``-S`` skips the .pth
files, so an editable install of the repo (its import hook) cannot stand in for the installed copy.
A user's own config folder joins through ``hydra.searchpath=[file://DIR]`` or ``SGFT_LAB_CONFIG_PATH``.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, TINY

pytestmark = pytest.mark.slow

CONF = REPO / "conf"
PRESETS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                 for p in (CONF / "experiment").rglob("*.yaml"))


class Installed:
    def __init__(self, root: Path):
        self.root = root
        self.site = root / "site"
        self.empty = root / "empty"  # the working directory of every command: nothing of the repo in it
        self.empty.mkdir()
        self.wheel: Path | None = None

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SGFT_LAB_CONFIG_PATH")}
        paths = [str(self.site), *site.getsitepackages()]
        if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
            paths.append(site.getusersitepackages())
        env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1",
                   SGFT_LAB_OUTPUT_DIR=str(self.root / "outputs"), **extra)
        return env

    def run(self, *args: str, module: str = "sgft_lab", check: bool = True, timeout: int = 300,
            **env: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-S", *(["-m", module] if module else []), *args]
        p = subprocess.run(cmd, cwd=self.empty, env=self.env(**env), capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd}: exit {p.returncode}\nSTDOUT:\n{p.stdout[-3000:]}\n"
                                 f"STDERR:\n{p.stderr[-3000:]}")
        return p


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    pytest.importorskip("setuptools", minversion="70.1",
                        reason="building the wheel offline needs setuptools>=70.1 (in the dev extra)")
    root = tmp_path_factory.mktemp("install")
    # A copy of what the build reads (the repo itself stays clean: no build/ folder appears in it). The
    # symlink sgft_lab/conf -> ../conf is copied as a link, as a clone has it.
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("sgft_lab", "hydra_plugins", "conf"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("MANIFEST.in", "setup.py", "setup.cfg"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, src / name)
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    inst = Installed(root)
    (inst.wheel,) = dist.glob("sgft_lab-*.whl")
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", "--target", str(inst.site),
                    str(inst.wheel)], check=True, capture_output=True, text=True, timeout=300)
    return inst


def test_wheel_carries_conf_and_the_sweeper_plugin(installed: Installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    yamls = {p.relative_to(CONF).as_posix() for p in CONF.rglob("*.yaml")}
    assert yamls and {f"sgft_lab/conf/{y}" for y in yamls} <= names, sorted(
        y for y in yamls if f"sgft_lab/conf/{y}" not in names)
    assert "sgft_lab/conf/hydra/help/sgft_lab.yaml" in names
    assert "hydra_plugins/sgft_lab_sweeper/__init__.py" in names
    assert "sgft_lab/report/paper_numbers.json" in names
    assert not any(n.startswith(("conf/", "tests/")) for n in names)
    # Installed as files (no link back to the repo), and the run uses this copy, not the repo.
    assert (installed.site / "sgft_lab" / "conf" / "config.yaml").is_file()
    assert not (installed.site / "sgft_lab" / "conf").is_symlink()
    p = installed.run("-c", "import sys, sgft_lab, hydra_plugins.sgft_lab_sweeper as s; "
                            "print(sgft_lab.__file__); print(s.__file__); print(sys.path)", module="")
    mod, plugin, path = p.stdout.splitlines()
    assert mod.startswith(str(installed.site)) and plugin.startswith(str(installed.site)), p.stdout
    # No sys.path entry is the repo itself (a venv inside the clone, as CI makes, is fine: the import above
    # proves sgft_lab came from the installed copy).
    entries = {Path(e).resolve() for e in ast.literal_eval(path) if e}
    assert REPO.resolve() not in entries, path


def test_installed_copy_prints_its_config_from_anywhere(installed: Installed):
    out = installed.run("--cfg", "job").stdout
    assert "name: fine_tune_cot" in out and "name: embedded_arithmetic" in out and "seed: 0" in out
    out = installed.run("+experiment=fine_tune_cot/main", "--cfg", "job").stdout
    assert "experiment: fine_tune_cot/main" in out
    out = installed.run("--help").stdout
    assert "outputs/runs" in out and "fine_tune_cot/main" in out and "_schema" not in out
    # The console script the wheel declares.
    script = installed.site / "bin" / "sgft-lab"
    p = subprocess.run([str(script), "method=vanilla_ft", "--cfg", "job"], cwd=installed.empty,
                       env=installed.env(), capture_output=True, text=True, timeout=120, check=True)
    assert "name: vanilla_ft" in p.stdout


def test_installed_copy_composes_every_preset(installed: Installed):
    """Every conf/experiment preset composes from the installed package's own conf (one process for all)."""
    script = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from sgft_lab.__main__ import normalize_overrides\n"
        "from sgft_lab.tiers import conf_dir\n"
        "assert str(conf_dir()).startswith(sys.argv[1]), conf_dir()\n"
        "with initialize_config_dir(config_dir=str(conf_dir()), version_base='1.3'):\n"
        "    for name in sys.argv[2:]:\n"
        "        cfg = compose('config', overrides=normalize_overrides([f'+experiment={name}']))\n"
        "        print(name, cfg.experiment, cfg.method.name)\n"
    )
    out = installed.run("-c", script, str(installed.site), *PRESETS, module="").stdout
    got = dict(line.split(" ", 1) for line in out.splitlines())
    assert sorted(got) == PRESETS
    assert all(got[name].split()[0] == name for name in PRESETS), got


def _user_dir(root: Path) -> Path:
    d = root / "my conf"  # a space: the search path entry must survive Hydra's override parser
    (d / "experiment").mkdir(parents=True, exist_ok=True)
    (d / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 7\nexperiment: mine\n")
    return d


def test_user_config_dir_joins_the_search_path(installed: Installed, tmp_path: Path):
    d = _user_dir(tmp_path)
    out = installed.run("+experiment=mine", f"hydra.searchpath=['file://{d}']", "--cfg", "job").stdout
    assert "\nseed: 7\n" in out and "\nexperiment: mine\n" in out
    # The environment variable: also with a searchpath of the command line's own, and with flags first.
    env = {"SGFT_LAB_CONFIG_PATH": str(tmp_path / "missing")}
    p = installed.run("--cfg", "job", "+experiment=mine", check=False, **env)
    assert p.returncode == 2 and p.stderr.strip().startswith("sgft_lab: SGFT_LAB_CONFIG_PATH names"), p.stderr
    for args in (["+experiment=mine", "--cfg", "job"], ["--cfg", "job", "experiment=mine"],
                 ["experiment=mine", "hydra.searchpath=[pkg://sgft_lab.conf]", "--cfg", "job"]):
        out = installed.run(*args, SGFT_LAB_CONFIG_PATH=str(d)).stdout
        assert "\nseed: 7\n" in out and "\nexperiment: mine\n" in out, args
    assert "mine" in installed.run("--help", SGFT_LAB_CONFIG_PATH=str(d)).stdout


def test_config_searchpath_merges_the_environment_into_the_command_line(tmp_path: Path):
    from sgft_lab.__main__ import config_searchpath

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert config_searchpath(["x=1"], None) == ["x=1"] and config_searchpath(["x=1"], " ") == ["x=1"]
    assert config_searchpath(["--cfg", "job", "x=1"], f"{a}:{b}") == [
        "--cfg", "job", f"hydra.searchpath=['file://{a}','file://{b}']", "x=1"]
    assert config_searchpath(["--info", "searchpath"], f"{a}:pkg://my.pkg") == [
        f"hydra.searchpath=['file://{a}','pkg://my.pkg']", "--info", "searchpath"]
    assert config_searchpath([f"hydra.searchpath=[file://{b}]", "-m"], f"{a}:{b}") == [
        f"hydra.searchpath=['file://{b}','file://{a}']", "-m"]
    with pytest.raises(ValueError, match="SGFT_LAB_CONFIG_PATH names .*missing.* not a directory"):
        config_searchpath([], str(tmp_path / "missing"))


def test_installed_copy_runs_the_default_tiny(installed: Installed):
    installed.run(*TINY, "trainer.max_epochs=1", timeout=600)
    (res,) = (installed.root / "outputs" / "runs").rglob("results.json")
    r = json.loads(res.read_text())
    assert (r["run"]["method"], r["run"]["benchmark"], r["run"]["student"]) == (
        "fine_tune_cot", "embedded_arithmetic", "tiny")
    assert r["teacher"]["calls"] == 2 * 48 and r["entries"]  # stage 1 + stage 2 for the 48 TINY questions
    assert str(installed.root / "outputs" / "runs") in r["run"]["run_dir"]


def test_installed_copy_runs_a_preset_that_lives_only_in_the_users_dir(installed: Installed, tmp_path: Path):
    d = _user_dir(tmp_path)
    installed.run("+experiment=mine", f"hydra.searchpath=['file://{d}']", *TINY, "trainer.max_epochs=1",
                  "benchmark.n_train=16", timeout=600)
    (res,) = [p for p in (installed.root / "outputs" / "runs").rglob("results.json") if "seed7" in str(p)]
    r = json.loads(res.read_text())
    assert (r["run"]["experiment"], r["run"]["seed"], r["data"]["n_train_questions"]) == ("mine", 7, 16)
