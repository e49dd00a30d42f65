"""API keys and other credentials: read from the environment or a file, never printed or stored.

The key lives only inside the client object; it is never put in a config, an identity, a cache row, a
log line or results. Error messages that a server echoes back are scrubbed with :func:`scrub`. Saved
configs go through ``sgft_lab.config.redact`` (which hides any ``*api_key*`` value someone put there, and
passes every string value through :func:`redact_text`).

Secrets by value: a credential can also sit inside a URL (``teacher.base_url=http://user:KEY@host/v1``,
``...?api_key=KEY``). :func:`redact_url` masks it (userinfo and token-like query/fragment values become
``***``) and :func:`redact_text` does so for every URL inside a string (log lines, error messages, Hydra
overrides). ``teacher=openai`` keeps only the redacted URL in its identity (hence the cache), repr and
messages; the real credentials go to the client alone (:func:`url_credentials`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qsl, unquote, unquote_plus, urlparse, urlsplit, urlunsplit

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")
NO_KEY = "EMPTY"  # what vLLM / Ollama expect when they run without --api-key


def resolve_api_key(api_key_env: str = "OPENAI_API_KEY", api_key_file: str | None = None,
                    base_url: str | None = None) -> str:
    """The key from ``api_key_file`` if given, else from ``$api_key_env``.

    A server on this machine (loopback base_url) may run without a key: then ``EMPTY`` is sent, as vLLM
    and Ollama expect. Anywhere else a missing key is an error naming where it was looked for.
    """
    if api_key_file:
        p = Path(api_key_file).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"teacher.api_key_file: {p} does not exist")
        key = p.read_text(encoding="utf-8").strip()
        if not key:
            raise ValueError(f"teacher.api_key_file: {p} is empty")
        return key
    key = os.environ.get(api_key_env or "", "").strip()
    if key:
        return key
    if is_loopback(base_url):
        return NO_KEY
    raise RuntimeError(
        f"no API key: set the environment variable {api_key_env} (teacher.api_key_env names it) or point "
        f"teacher.api_key_file at a file holding the key. Keys are never read from the config itself.")


def is_loopback(base_url: str | None) -> bool:
    if not base_url:
        return False
    return (urlparse(base_url).hostname or "") in LOOPBACK_HOSTS


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret (and of its last 8+ characters) in ``text``."""
    for s in secrets:
        if not s or s == NO_KEY:
            continue
        text = text.replace(s, "***")
        if len(s) >= 16:  # servers often echo a masked key such as "sk-abc*****wxyz1234"
            text = text.replace(s[-8:], "***")
    return text


# --------------------------------------------------------------------------------------------------------
# Secrets by value: credentials inside URLs (teacher.base_url and anything that prints one)
# --------------------------------------------------------------------------------------------------------
MASK = "***"

# Query / fragment parameter names whose value is a credential. A name is split into words at - _ . and
# matched word by word (``api-key``, ``X-Amz-Signature``, ``access_token``), or by its ending (``apikey``,
# ``accesstoken``). ``max_tokens`` or ``api-version`` are not secrets.
_SECRET_WORDS = frozenset({
    "key", "apikey", "token", "secret", "password", "passwd", "pwd", "pass", "sig", "signature", "auth",
    "authorization", "credential", "credentials", "session", "sessionid", "jwt", "bearer"})
_SECRET_ENDINGS = ("token", "apikey", "secret", "password", "passwd", "signature")
# A URL with a scheme, up to whitespace, a quote, <>, a backtick or a backslash (as printed in logs, reprs,
# JSON). Closing brackets stay in: a password may hold one, and a ")" kept after a path is harmless.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`\\]+")
# A ``name=value`` setting in free text (a Hydra override, a ``key=value`` log field).
_SETTING_RE = re.compile(r"(?<![\w.+~-])([+~]{0,2}[A-Za-z_][\w.-]*)=(\"[^\"]*\"|'[^']*'|[^\s,;&'\"]+)")
_TRAILING_PUNCT = re.compile(r"[)\]},;:!.]*$")
_SECRET_SETTING_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey", "credential", "credentials"})


def is_secret_param(name: str) -> bool:
    """True for a query parameter (or ``name=value`` setting) name that carries a credential."""
    n = name.strip().lower()
    if not n:
        return False
    words = [w for w in re.split(r"[-_.\s]+", n) if w]
    return bool(_SECRET_WORDS & set(words)) or n.endswith(_SECRET_ENDINGS)


def is_secret_setting(name: str) -> bool:
    """True for a config key / override name whose value is a secret: ``api_key``, ``hf_token``,
    ``client_secret``, ``password``, ``teacher.extra.api-key`` ... but not ``max_new_tokens`` and not
    ``api_key_env`` / ``api_key_file`` (they name where the key is, not the key)."""
    k = str(name).lower().lstrip("+~").rpartition(".")[2].replace("-", "_")
    if k.endswith(("_env", "_file")):
        return False
    return "api_key" in k or bool(_SECRET_SETTING_WORDS & set(k.split("_")))


def _redact_params(part: str) -> str:
    """``a=1&api_key=XYZ`` -> ``a=1&api_key=***``; everything else kept byte for byte."""
    out = []
    for item in part.split("&"):
        name, eq, value = item.partition("=")
        if eq and value and is_secret_param(unquote_plus(name)):
            tail = _TRAILING_PUNCT.search(value).group(0)  # prose around a URL: "(see http://h/?key=K)."
            item = f"{name}={MASK}{tail}" if tail != value else item
        out.append(item)
    return "&".join(out)


def redact_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***``; anything else unchanged (so it stays readable and,
    for a URL without credentials, byte-identical: identities and cache keys do not change).

    - userinfo: the whole of it goes, user name included (``http://user:KEY@host`` -> ``http://***@host``):
      a lone user name is often the token itself (``https://TOKEN@host``);
    - query and fragment parameters whose name is token-like (:func:`is_secret_param`: ``api_key``,
      ``api-key``, ``key``, ``token``, ``access_token``, ``sig``, ``signature``, ``secret``, ``password`` ...)
      keep their name, lose their value: ``?api_key=***&api-version=2024-06-01``.

    A string that is not a URL is returned as is.
    """
    if not isinstance(url, str) or "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an invalid IPv6 literal: mask everything after the scheme rather than leak
        scheme = url.split("://", 1)[0]
        return f"{scheme}://{MASK}"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = _redact_params(parts.query) if parts.query else parts.query
    fragment = _redact_params(parts.fragment) if "=" in parts.fragment else parts.fragment
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _mask_setting(m: re.Match) -> str:
    name, value = m.group(1), m.group(2)
    if not is_secret_setting(name):
        return m.group(0)
    tail = "" if value[:1] in "'\"" else _TRAILING_PUNCT.search(value).group(0)
    return f"{name}={MASK}{tail}"


def redact_text(text: str, settings: bool = True) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`, and the value of every secret
    ``name=value`` setting in it (:func:`is_secret_setting`) masked: log lines, error messages, Hydra
    overrides (``teacher.base_url=http://u:KEY@host/v1`` -> ``teacher.base_url=http://***@host/v1``,
    ``+teacher.extra.api_key=sk-1`` -> ``+teacher.extra.api_key=***``). Cheap when there is nothing to mask.
    ``settings=False`` masks URLs only (for text that is content, e.g. part of a cache identity)."""
    if not isinstance(text, str):
        return text
    if "://" in text:
        text = _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
    if settings and "=" in text:
        text = _SETTING_RE.sub(_mask_setting, text)
    return text


def redact_obj(obj, key_mask: str = MASK, settings: bool = True):
    """A copy of a plain container (dicts, lists, strings) with the value of every secret key
    (:func:`is_secret_setting`) replaced by ``key_mask`` and every string through :func:`redact_text`."""
    if isinstance(obj, dict):
        return {k: key_mask if is_secret_setting(str(k)) and v not in (None, "") else redact_obj(v, key_mask, settings)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(v, key_mask, settings) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(redact_obj(v, key_mask, settings) for v in obj)
    if isinstance(obj, str):
        return redact_text(obj, settings)
    return obj


def url_credentials(url: str | None) -> tuple[str | None, tuple[str, str] | None, dict[str, str]]:
    """Split ``url`` into (the URL without userinfo and query, (user, password) or None, query params).

    For clients that must send the credentials (basic auth, query parameters) without carrying them in the
    URL they print."""
    if not url or "://" not in url:
        return url, None, {}
    parts = urlsplit(url)
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = (unquote(parts.username or ""), unquote(parts.password or ""))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", parts.fragment)), auth, query


def url_secrets(url: str | None) -> list[str]:
    """The secret values inside ``url`` (userinfo, token-like query values): for :func:`scrub`."""
    if not url or "://" not in url:
        return []
    _, auth, query = url_credentials(url)
    out = [v for k, v in query.items() if is_secret_param(k)]
    if auth:
        user, password = auth
        out.append(password)
        if not password or len(user) >= 8:  # a lone user name is often a token; a short one is just a name
            out.append(user)
    return [s for s in out if len(s) >= 4]  # never mask short, ordinary strings ("a", "v1")


class RedactingFilter(logging.Filter):
    """A logging filter that passes each record's message through :func:`redact_text` (and ``scrub``s the
    given secrets): attach it to the loggers of libraries that print full request URLs (httpx, openai)."""

    def __init__(self, secrets: Iterable[str | None] = ()):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the handler's problem, not ours
            return True
        clean = scrub(redact_text(msg), self.secrets)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def install_log_redaction(logger_names: Iterable[str], secrets: Iterable[str | None] = ()) -> None:
    """Attach one :class:`RedactingFilter` (per secret set) to each named logger (idempotent)."""
    secrets = [s for s in secrets if s]
    for name in logger_names:
        lg = logging.getLogger(name)
        for f in lg.filters:
            if isinstance(f, RedactingFilter):
                f.secrets = list(dict.fromkeys([*f.secrets, *secrets]))
                break
        else:
            lg.addFilter(RedactingFilter(secrets))
