"""config.redact (config.yaml, results.json, the W&B config): secret keys, and secrets inside string values --
URLs with credentials or token-like query parameters, secret name=value overrides."""

from __future__ import annotations

from dataclasses import asdict

from omegaconf import OmegaConf

from sgft_lab.config import Config, TeacherConfig, is_secret_key, redact, to_plain

SECRET = "CANARY123"


def test_secret_keys():
    for k in ("api_key", "openai_api_key", "hf_token", "client_secret", "password", "apikey", "api-key", "passwd",
              "aws_credentials", "TOKEN"):
        assert is_secret_key(k), k
    for k in ("api_key_env", "api_key_file", "max_new_tokens", "prompt_tokens", "model", "base_url", "tokenizer",
              "key", "cache_namespace", 3):
        assert not is_secret_key(k), k


def test_secret_key_values_are_replaced_as_before():
    d = redact({"teacher": {"api_key": "sk-123", "api_key_env": "OPENAI_API_KEY", "model": "m", "hf_token": None}})
    assert d == {"teacher": {"api_key": "***REDACTED***", "api_key_env": "OPENAI_API_KEY", "model": "m",
                             "hf_token": None}}


def test_urls_with_credentials_in_values_are_redacted():
    d = redact({
        "teacher": {"base_url": f"http://user:{SECRET}@10.0.0.5:8000/v1", "model": "m",
                    "extra": {"endpoint": f"https://h/v1?api_key={SECRET}&api-version=1"},
                    "cache_namespace": f"http://h/v1?sig={SECRET}"},
        "run": {"overrides": [f"teacher.base_url=http://u:{SECRET}@h/v1", "seed=3",
                              f"+teacher.extra.api_key={SECRET}"]},
        "notes": (f"see https://h/x?token={SECRET}", 5),
        "n": 3, "ok": True, "none": None,
    })
    assert SECRET not in repr(d)
    assert d["teacher"]["base_url"] == "http://***@10.0.0.5:8000/v1"
    assert d["teacher"]["extra"]["endpoint"] == "https://h/v1?api_key=***&api-version=1"
    assert d["teacher"]["cache_namespace"] == "http://h/v1?sig=***"
    assert d["run"]["overrides"] == ["teacher.base_url=http://***@h/v1", "seed=3", "+teacher.extra.api_key=***"]
    assert d["notes"] == ("see https://h/x?token=***", 5) and (d["n"], d["ok"], d["none"]) == (3, True, None)


def test_values_without_secrets_are_unchanged():
    plain = {"base_url": "http://127.0.0.1:8000/v1", "prompt": "Q: {question}\nA: Let's think step by step.",
             "stop": ["\n\n", "Q:"], "url": "https://huggingface.co/datasets/gsm8k?row=3", "x": "a=b c=d"}
    assert redact(plain) == plain


def test_saved_config_yaml_holds_no_secret():
    cfg = Config(teacher=TeacherConfig(name="openai", model="m", base_url=f"http://u:{SECRET}@h:1/v1?token={SECRET}"))
    text = OmegaConf.to_yaml(OmegaConf.create(redact(to_plain(cfg))))
    assert SECRET not in text and "http://***@h:1/v1?token=***" in text
    assert SECRET not in repr(redact(asdict(cfg)))
