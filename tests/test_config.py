"""Every config composes and validates; bad keys and values fail before any work, naming the key and the
allowed values; each method option has its own schema and the YAML presets agree with it."""

from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import CONF, TINY, compose, run_sgft
from sgft_lab.config import METHOD_SCHEMAS, ConfigError, redact, to_plain, validate

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


def test_each_method_option_has_its_own_schema_and_the_yaml_adds_no_values():
    """One source of truth: conf/method/<option>.yaml lists its schema and sets nothing the schema does not."""
    assert set(_options("method")) == set(METHOD_SCHEMAS)
    for name, schema in METHOD_SCHEMAS.items():
        c = validate(compose([f"method={name}"]))
        assert type(c.method) is schema and c.method.name == name
        composed = to_plain(c.method)
        defaults = to_plain(schema())
        if name == "diverse_reasoning":  # null = the paper's D for the benchmark, resolved by validate
            assert defaults["diverse_samples"] is None and composed["diverse_samples"] == 8
            composed["diverse_samples"] = None
        if "response" in defaults:  # SGFT's response model: the student preset its YAML names
            assert composed.pop("response")["name"] == "tiny_small" and defaults.pop("response") is None
        assert composed == defaults, name
        text = (CONF / "method" / f"{name}.yaml").read_text()
        body = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("#", "-"))]
        assert body == ["defaults:"], f"conf/method/{name}.yaml sets values: {body}"


def test_a_key_of_another_method_is_rejected():
    with pytest.raises(Exception, match=r"(?s)rounds"):
        compose(["method=fine_tune_cot", "method.rounds=2"])  # an FDD key
    assert validate(compose(["method=fdd", "method.rounds=2"])).method.rounds == 2


def test_defaults_are_the_embedded_default():
    c = validate(compose())
    assert (c.method.name, c.student.name, c.teacher.name, c.benchmark.source) == \
        ("fine_tune_cot", "tiny", "reference", "embedded")
    assert c.paths.cache_dir.endswith("cache")
    assert c.student.adapter.value == "none" and c.student.decode.value == "auto"  # typed choices


def test_experiment_both_spellings():
    for exp in _options("experiment"):
        a = compose([f"experiment={exp}"])
        b = compose([f"+experiment={exp}"])
        assert OmegaConf.to_container(a) == OmegaConf.to_container(b)


def test_misspelt_key_and_wrong_type_name_the_key(tmp_path):
    # A saved / hand-written config validated directly.
    plain = OmegaConf.to_container(compose(), resolve=True)
    plain["trainer"]["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match=r"trainer\.learning_rate.*allowed: .*\blr\b"):
        validate(plain)
    plain = OmegaConf.to_container(compose(), resolve=True)
    plain["trainer"]["max_epochs"] = "abc"
    with pytest.raises(ConfigError, match=r"trainer\.max_epochs"):
        validate(plain)
    plain = OmegaConf.to_container(compose(), resolve=True)
    plain["method"]["n_sgg"] = 3
    with pytest.raises(ConfigError, match=r"method\.n_sgg.*allowed: .*diverse_samples"):
        validate(plain)
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


# Each bad value, what the one line must name, and the allowed values it must state.
BAD = [
    (["trainer.max_epochs=-1"], "trainer.max_epochs", ">= 1"),
    (["trainer.lr=-1"], "trainer.lr", "> 0"),
    (["method.teacher_batch_size=0"], "method.teacher_batch_size", ">= 1"),
    (["benchmark.n_train=0"], "benchmark.n_train", ">= 1"),
    (["benchmark.val_fraction=1.5"], "benchmark.val_fraction", "< 1"),
    (["method.diverse_temperature=-0.5"], "method.diverse_temperature", ">= 0"),
    (["method=fdd", "method.rounds=0"], "method.rounds", ">= 1"),
    (["student.adapter=dora"], "student.adapter", "qlora"),
    (["method=sgft", "method.prompt=VI"], "method.prompt", "IV"),
    (["method.n_sgg=3"], "method.n_sgg", "diverse_samples"),  # a misspelt key of the method
    (["method=sgft", "method.lisa.layer=1"], "method.lisa.layer", "layers"),
    (["method=fdd", "method.round=1"], "method.round", "rounds"),
    (["+method.foo=1"], "method.foo", "only_correct"),
]


def test_bad_values_and_keys_exit_2_in_one_line_before_any_work(tmp_path: Path):
    """A loopback OpenAI-compatible server counts requests: a rejected command makes none, and leaves no run
    dir (no folder under outputs/runs at all)."""
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as srv:
        teacher = ["teacher=openai", f"teacher.base_url={srv.base_url}", "teacher.model=fake"]
        for overrides, key, allowed in BAD:
            p = run_sgft([*TINY, *teacher, *overrides], tmp_path, check=False)
            err = p.stderr.strip()
            assert p.returncode == 2, (overrides, p.stderr[-2000:])
            assert len(err.splitlines()) == 1 and err.startswith("sgft_lab: "), err
            assert key in err and allowed in err, (overrides, err)
            assert "Traceback" not in p.stderr + p.stdout
        assert srv.stats.requests == 0
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_hydra_full_error_shows_the_traceback(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    p = run_sgft([*TINY, "trainer.lr=-1"], tmp_path, check=False)
    assert p.returncode != 0 and "Traceback" in p.stderr and "trainer.lr" in p.stderr


def test_redact_hides_secrets_but_not_env_names():
    d = redact({"teacher": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "model": "m"}})
    assert d["teacher"]["api_key"] == "***REDACTED***"
    assert d["teacher"]["api_key_env"] == "OPENAI_API_KEY"
    d = redact({"max_new_tokens": 5, "prompt_tokens": 3, "hf_token": "hf_x", "client_secret": "s"})
    assert d == {"max_new_tokens": 5, "prompt_tokens": 3, "hf_token": "***REDACTED***", "client_secret": "***REDACTED***"}


def test_required_value_is_named():
    with pytest.raises(ConfigError, match=r"student\.name_or_path"):
        validate(compose(["student=hf"]))


def test_every_range_is_declared_on_the_field():
    """The checks live on the schema's fields (config.setting): counts, sizes, epochs and rates have ranges."""
    from sgft_lab.config import BenchmarkConfig, FDDConfig, TrainerConfig

    def ranged(cls):
        return {f.name for f in fields(cls) if f.metadata}

    assert {"max_epochs", "batch_size", "lr", "eval_every_n_epochs", "warmup_ratio"} <= ranged(TrainerConfig)
    assert {"n_train", "n_test", "val_fraction", "train_fraction", "n_shot"} <= ranged(BenchmarkConfig)
    assert {"rounds", "label_samples", "label_temperature", "variant_temperature"} <= ranged(FDDConfig)


def test_a_misspelt_experiment_is_an_error_not_the_default_run(tmp_path):
    """Hydra skips a missing option of an optional group silently; sgft_lab refuses it, listing the presets."""
    p = run_sgft(["+experiment=fine_tune_cot/gtp2"], tmp_path, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("sgft_lab: invalid config at `experiment`: no preset 'fine_tune_cot/gtp2'; allowed: ")
    assert "fine_tune_cot/gpt2" in line.split("allowed: ")[1].split(", ")
    assert not (tmp_path / "outputs" / "runs").exists()
