"""`python -m sgft_lab teacher=openai ...` against a loopback OpenAI-compatible server (issue 4's must-shows)."""

import json
from pathlib import Path

import pytest

from conftest import TINY, run_sgft
from fake_openai_server import FakeOpenAIServer, reference_responder

KEY = "sk-test-" + "9f3c" * 8


def _embedded_train():
    from sgft_lab.benchmarks.embedded import load_embedded
    from sgft_lab.config import BenchmarkConfig

    # The TINY overrides of conftest: 48 training questions of the default benchmark.
    cfg = BenchmarkConfig(n_train=48, n_val=8, n_test=8, max_operand=10, max_value=30)
    return load_embedded(cfg).train


def _run(tmp_path, fault_rate, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    srv = FakeOpenAIServer(fault_rate=fault_rate, seed=7, hang_s=5.0, api_key=KEY,
                           responder=reference_responder(_embedded_train(), error_rate=0.15)).start()
    try:
        run_sgft([*TINY, "trainer.max_epochs=1", "teacher=openai", f"teacher.base_url={srv.base_url}",
                  "teacher.model=fake-teacher", "teacher.backoff_base_s=0.01", "teacher.backoff_max_s=0.1",
                  "teacher.max_retries=20", "teacher.request_timeout_s=1.0"], tmp_path)
    finally:
        srv.stop()
    (path,) = (tmp_path / "outputs" / "runs").rglob("results.json")
    return json.loads(path.read_text()), srv.stats


@pytest.mark.slow
def test_openai_teacher_pipeline_with_faults_and_no_key_on_disk(tmp_path: Path, monkeypatch):
    clean, clean_stats = _run(tmp_path / "clean", 0.0, monkeypatch)
    faulty, stats = _run(tmp_path / "faulty", 0.3, monkeypatch)
    assert sum(n for k, n in stats.outcomes.items() if k != "ok") > 0, "no fault was injected"
    # Every sample present exactly once: the run consumed as many successful answers as a fault-free run.
    n = faulty["data"]["n_train_questions"]
    assert faulty["teacher"]["calls"] == clean["teacher"]["calls"] == 2 * n
    assert stats.ok == clean_stats.ok
    f = faulty["details"]["filter"]
    assert f == clean["details"]["filter"] and 0 < f["kept"] < f["total"]
    assert faulty["teacher"]["accounting"]["total"]["requests_failed"] > 0
    # The key is nowhere under the output directory (config, results, logs, cache, predictions...).
    for f in (tmp_path / "faulty" / "outputs").rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes(), f


@pytest.mark.slow
def test_credentials_in_the_base_url_are_nowhere_on_disk_or_in_the_output(tmp_path: Path, monkeypatch):
    """`teacher.base_url=http://u:CANARY@host/v1?api_key=CANARY`: the credentials reach the server (basic auth, the
    query) and nothing else -- not config.yaml, overrides.txt, results.json, the cache, the logs, W&B, the run
    dir's name or the console."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    srv = FakeOpenAIServer(seed=7, responder=reference_responder(_embedded_train(), error_rate=0.15)).start()
    host = srv.base_url.split("://", 1)[1]
    url = f"http://u:CANARY-USERINFO@{host}?api_key=CANARY-QUERY"
    try:
        p = run_sgft([*TINY, "trainer.max_epochs=1", "teacher=openai", f"teacher.base_url='{url}'",
                      "teacher.model=fake-teacher", "logger=wandb", "logger.offline=true"], tmp_path)
    finally:
        srv.stop()
    import base64

    basic = "Basic " + base64.b64encode(b"u:CANARY-USERINFO").decode()
    assert srv.stats.ok > 0 and set(srv.stats.auth) == {basic}  # the credentials reached the server ...
    assert {q.get("api_key") for q in srv.stats.queries} == {"CANARY-QUERY"}
    assert "CANARY" not in p.stdout + p.stderr
    files = [f for f in tmp_path.rglob("*") if f.is_file()]
    assert any(f.name == "results.json" for f in files) and any(f.suffix == ".wandb" for f in files)
    for f in tmp_path.rglob("*"):
        assert "CANARY" not in str(f.relative_to(tmp_path)), f
        if f.is_file():
            assert b"CANARY" not in f.read_bytes(), f
