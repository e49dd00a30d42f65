"""Every config composes and validates; bad keys and types fail before any work, naming the key."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF, compose, run_sgft
from sgft_lab.config import ConfigError, redact, validate

# Presets with a required (???) value, and what a user would pass.
REQUIRED = {("student", "hf"): ["student.name_or_path=some-org/some-model"]}
GROUPS = ["method", "student", "teacher", "benchmark", "trainer", "logger", "paths"]


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes_and_validates(group):
    opts = _options(group)
    assert opts, f"conf/{group} is empty"
    for opt in opts:
        cfg = compose([f"{group}={opt}", *REQUIRED.get((group, opt), [])])
        c = validate(cfg)
        assert getattr(c, group) is not None


def test_defaults_are_the_embedded_default():
    c = validate(compose())
    assert (c.method.name, c.student.name, c.teacher.name, c.benchmark.source) == \
        ("fine_tune_cot", "tiny", "reference", "embedded")
    assert c.paths.cache_dir.endswith("cache")


def test_experiment_both_spellings():
    for exp in _options("experiment"):
        a = compose([f"experiment={exp}"])
        b = compose([f"+experiment={exp}"])
        assert OmegaConf.to_container(a) == OmegaConf.to_container(b)


def test_misspelt_key_and_wrong_type_name_the_key(tmp_path):
    # A saved / hand-written config validated directly.
    plain = OmegaConf.to_container(compose(), resolve=True)
    plain["trainer"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"trainer\.learning_rate"):
        validate(plain)
    plain = OmegaConf.to_container(compose(), resolve=True)
    plain["trainer"]["max_epochs"] = "abc"
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        validate(plain)
    with pytest.raises(ConfigError, match=r"student\.adapter"):
        validate(compose(["student.adapter=dora"]))
    # A misspelt key inside a preset file fails at composition, naming the file and the key.
    import shutil

    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    with open(conf / "trainer" / "cpu.yaml", "a") as f:
        f.write("learning_rat: 0.1\n")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        with pytest.raises(Exception, match=r"(?s)trainer/cpu.*learning_rat"):
            hcompose("config")


def test_cli_rejects_bad_key_before_any_work(tmp_path: Path):
    p = run_sgft(["+trainer.learning_rate=0.1"], tmp_path, check=False)
    assert p.returncode != 0
    assert "trainer.learning_rate" in p.stderr
    p = run_sgft(["trainer.max_epochs=abc"], tmp_path, check=False)
    assert p.returncode != 0 and "trainer.max_epochs" in p.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not any(f.is_file() for f in runs.rglob("*")) if runs.exists() else True


def test_redact_hides_secrets_but_not_env_names():
    d = redact({"teacher": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "model": "m"}})
    assert d["teacher"]["api_key"] == "***REDACTED***"
    assert d["teacher"]["api_key_env"] == "OPENAI_API_KEY"
    d = redact({"max_new_tokens": 5, "prompt_tokens": 3, "hf_token": "hf_x", "client_secret": "s"})
    assert d == {"max_new_tokens": 5, "prompt_tokens": 3, "hf_token": "***REDACTED***", "client_secret": "***REDACTED***"}


def test_required_value_is_named():
    with pytest.raises(ConfigError, match=r"student\.name_or_path"):
        validate(compose(["student=hf"]))
