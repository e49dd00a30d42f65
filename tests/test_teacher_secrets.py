"""Secrets by value: credentials inside teacher.base_url never reach an identity, a cache file, a log line or
an error message, and the client still sends them (basic auth, query parameters)."""

from __future__ import annotations

import base64
import logging
import socket
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer

from sgft_lab.config import TeacherConfig
from sgft_lab.errors import TeacherError
from sgft_lab.teachers import SamplingParams, build_teacher
from sgft_lab.teachers.cache import TeacherCache
from sgft_lab.teachers.engine import TeacherAccounting, generate
from sgft_lab.teachers.openai_backend import OpenAITeacher
from sgft_lab.teachers.secrets import (
    is_secret_param,
    redact_text,
    redact_url,
    scrub,
    url_credentials,
    url_secrets,
)

CANARY = "CANARY123"
QCANARY = "QCANARY456"
FAST = {"backoff_base_s": 0.001, "backoff_max_s": 0.005, "max_retries": 1, "request_timeout_s": 5.0}


# --------------------------------------------------------------------------------------------------------
# redact_url / redact_text
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url,expected", [
    ("http://u:KEY@host/v1", "http://***@host/v1"),
    ("https://user:p%40ss@example.com:8443/v1/", "https://***@example.com:8443/v1/"),
    ("https://ghp_TOKEN@github.com/x.git", "https://***@github.com/x.git"),  # a lone user name is often a token
    ("http://host/v1?api_key=SECRET", "http://host/v1?api_key=***"),
    ("http://host/v1?token=T&model=m", "http://host/v1?token=***&model=m"),
    ("http://host/v1?key=K", "http://host/v1?key=***"),
    ("http://host/v1?access_token=A&api-version=2024-06-01", "http://host/v1?access_token=***&api-version=2024-06-01"),
    ("http://host/v1?sig=S&se=2030", "http://host/v1?sig=***&se=2030"),
    ("http://host/v1?api-key=K&apikey=K2&x-api-key=K3", "http://host/v1?api-key=***&apikey=***&x-api-key=***"),
    ("https://b.s3.amazonaws.com/o?X-Amz-Signature=ab&X-Amz-Credential=c%2Fd&X-Amz-Date=1",
     "https://b.s3.amazonaws.com/o?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=1"),
    ("http://host/cb#access_token=A&state=s", "http://host/cb#access_token=***&state=s"),
    ("http://u:p@host/v1?password=x&max_tokens=5", "http://***@host/v1?password=***&max_tokens=5"),
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000/v1", "https://api.openai.com/v1", "http://host/v1?api-version=2024-06-01&max_tokens=5",
    "http://host/v1?key=", "not a url", "", "http://host/page#section"])
def test_redact_url_leaves_urls_without_credentials_byte_identical(url):
    assert redact_url(url) == url  # identities (hence cache keys) of such URLs do not change


def test_is_secret_param():
    for name in ("api_key", "API-KEY", "apikey", "key", "token", "access_token", "accessToken", "sig", "signature",
                 "client_secret", "password", "X-Amz-Security-Token", "subscription-key"):
        assert is_secret_param(name), name
    for name in ("max_tokens", "model", "api-version", "se", "monkey_business", "keyboard"):
        assert not is_secret_param(name), name


def test_redact_text_finds_urls_anywhere():
    text = ("teacher openai:chat|http://u:CANARY@10.0.0.1:8000/v1|m failed (see http://h/v1?api_key=CANARY2), "
            "base_url='https://x:CANARY3@proxy.local/v1' and {\"u\": \"http://h/?token=CANARY4\"}; "
            "<https://h/p?sig=CANARY5> `ws://a:CANARY6@h`")
    out = redact_text(text)
    assert "CANARY" not in out
    assert "http://***@10.0.0.1:8000/v1|m failed" in out and "http://h/v1?api_key=***)," in out
    assert "'https://***@proxy.local/v1'" in out and '"http://h/?token=***"' in out
    assert "<https://h/p?sig=***>" in out and "`ws://***@h`" in out
    assert redact_text("nothing to see: http://example.com/a?b=c") == "nothing to see: http://example.com/a?b=c"


def test_redact_text_masks_secret_settings_in_overrides():
    overrides = "teacher=openai teacher.base_url=http://u:CANARY@h/v1 +teacher.extra.api_key=sk-CANARY " \
                "hf_token=hf_CANARY teacher.api_key_env=MY_KEY student.max_new_tokens=5"
    out = redact_text(overrides)
    assert "CANARY" not in out
    assert "teacher.base_url=http://***@h/v1" in out and "+teacher.extra.api_key=***" in out
    assert "hf_token=***" in out and "teacher.api_key_env=MY_KEY" in out and "student.max_new_tokens=5" in out


def test_url_credentials_and_secrets():
    url, auth, query = url_credentials("http://us%40er:p%3Ass@h:9/v1?api_key=K123&api-version=1")
    assert url == "http://h:9/v1" and auth == ("us@er", "p:ss") and query == {"api_key": "K123", "api-version": "1"}
    assert set(url_secrets("http://us%40er:p%3Ass@h:9/v1?api_key=K123&api-version=1")) == {"p:ss", "K123"}
    assert url_secrets("https://ghp_0123456789@h/x") == ["ghp_0123456789"]  # a lone user name: a token
    assert url_credentials("localhost:8000/v1") == ("localhost:8000/v1", None, {})  # no scheme: left alone
    assert url_credentials("http://h/v1") == ("http://h/v1", None, {}) and url_secrets(None) == []
    assert scrub("the key K123 was refused", url_secrets("http://h/?key=K123")) == "the key *** was refused"


# --------------------------------------------------------------------------------------------------------
# teacher=openai with credentials in base_url
# --------------------------------------------------------------------------------------------------------
@pytest.fixture
def srv():
    s = FakeOpenAIServer().start()
    yield s
    s.stop()


@pytest.fixture
def capture_all_logs():
    """Every record of every logger at DEBUG (httpx / openai transport loggers included) into a file."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    h = Keep(logging.DEBUG)
    root = logging.getLogger()
    old = root.level, {n: logging.getLogger(n).level for n in ("httpx", "httpx2", "httpcore", "openai")}
    root.addHandler(h)
    root.setLevel(logging.DEBUG)
    for n in old[1]:
        logging.getLogger(n).setLevel(logging.DEBUG)  # what a user debugging the transport would do
    yield records
    root.removeHandler(h)
    root.setLevel(old[0])
    for n, lv in old[1].items():
        logging.getLogger(n).setLevel(lv)


def secret_url(port: int) -> str:
    return f"http://u:{CANARY}@127.0.0.1:{port}/v1?api_key={QCANARY}&api-version=2024-06-01"


def assert_clean(*texts: str | bytes):
    for t in texts:
        b = t if isinstance(t, bytes) else t.encode("utf-8")
        assert CANARY.encode() not in b and QCANARY.encode() not in b, b[:300]


def test_no_secret_of_the_base_url_in_identity_cache_logs_or_errors(srv, tmp_path, monkeypatch, capture_all_logs):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = TeacherConfig(name="openai", base_url=secret_url(srv.port), model="fake-model", **FAST)
    teacher = build_teacher(cfg)
    assert teacher.identity == (f"openai:chat|http://***@127.0.0.1:{srv.port}/v1?api_key=***&api-version=2024-06-01"
                                f"|fake-model|seed=0")
    assert_clean(teacher.identity, repr(teacher), str(vars(teacher).get("base_url")))
    logging.getLogger("sgft_lab").info("teacher %r", teacher)
    db = tmp_path / "cache.sqlite"
    cache = TeacherCache(db)
    acc = TeacherAccounting()
    out = generate(teacher, cache, [f"q{i}" for i in range(6)], SamplingParams(n=2, temperature=0.7),
                   accounting=acc, progress=True)
    assert all(len(cs) == 2 for cs in out) and srv.stats.ok == 12
    # The credentials did reach the server: basic auth from the userinfo, the query as query parameters.
    basic = "Basic " + base64.b64encode(f"u:{CANARY}".encode()).decode()
    assert srv.stats.auth == {basic: 12}
    assert all(q == {"api_key": QCANARY, "api-version": "2024-06-01"} for q in srv.stats.queries)
    assert acc.teacher == teacher.identity

    # Failures: a server that is down (TeacherError after the passes) and one that cannot be reached.
    srv.down("500")
    with pytest.raises(TeacherError) as down:
        generate(teacher, cache, ["never"], SamplingParams(), progress=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = build_teacher(TeacherConfig(name="openai", base_url=secret_url(dead_port), model="fake-model", **FAST))
    with pytest.raises(TeacherError) as unreachable:
        generate(dead, cache, ["nobody"], SamplingParams(), progress=False)
    cache.close()
    assert "5xx" in str(down.value) and "connection" in str(unreachable.value)
    assert "http://***@127.0.0.1" in str(down.value)
    assert_clean(str(down.value), repr(down.value), str(unreachable.value), repr(unreachable.value))
    assert any("HTTP Request: POST" in r for r in capture_all_logs)  # the transport did log its URLs ...
    assert_clean("\n".join(capture_all_logs))  # ... redacted
    for f in tmp_path.iterdir():  # the cache file (and any -wal / -shm beside it)
        assert_clean(f.read_bytes())


def test_identity_ignores_the_secret_value_and_keeps_plain_urls(srv):
    a = OpenAITeacher("m", api_key="EMPTY", base_url=f"http://u:one@127.0.0.1:{srv.port}/v1?token=aaa")
    b = OpenAITeacher("m", api_key="EMPTY", base_url=f"http://u:two@127.0.0.1:{srv.port}/v1?token=bbb")
    assert a.identity == b.identity  # a rotated password or token keeps the cache
    plain = OpenAITeacher("m", api_key="EMPTY", base_url=f"http://127.0.0.1:{srv.port}/v1/")
    assert plain.identity == f"openai:chat|http://127.0.0.1:{srv.port}/v1|m|seed=0"  # as before: caches still hit
    ns = OpenAITeacher("m", api_key="EMPTY", base_url="http://h/v1", cache_namespace="http://x:CANARY123@h2/v1")
    assert_clean(ns.identity)
    extra = OpenAITeacher("m", api_key="EMPTY", base_url="http://h/v1", extra_body={"api_key": CANARY, "top_k": 2})
    assert_clean(extra.identity) and '"top_k": 2' in extra.identity


def test_server_error_echoing_the_url_secret_is_scrubbed(tmp_path):
    t = OpenAITeacher("m", api_key="sk-the-real-key-0123456789", base_url=f"http://u:{CANARY}@h/v1?key={QCANARY}")

    class Boom(Exception):
        pass

    msg = str(t._map_error(Boom(f"proxy refused http://u:{CANARY}@h/v1?key={QCANARY}; credentials {CANARY} "
                                f"{QCANARY} sk-the-real-key-0123456789")))
    assert_clean(msg)
    assert "sk-the-real-key" not in msg and "http://***@h/v1?key=***" in msg
    assert Path(tmp_path).exists()
