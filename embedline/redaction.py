"""Credentials never stored or shown: sources (a `--query`'s SQL, a connection string) are redacted before
they reach the catalog, logs, artifacts, Prefect parameters or prefect.yaml."""

import re

from embedline.settings import SECRET_WORDS

MASK = "***"
_LONG = "|".join(w for w in SECRET_WORDS if w != "key")
# a key naming a secret: ...password..., ...token..., and `key` as a word part (api_key, KEY_ID; not monkey)
_KEY = rf"\b(?:\w*(?:{_LONG})\w*|(?:\w*[_-])?key(?:s|[_-]\w*)?)\b"
# scheme://user:password@host → scheme://user:***@host
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@'\"]*):([^\s@'\"]+)@", re.IGNORECASE)
# password=..., api_key = '...', "token": "..." (key=value, key: value)
_ASSIGNED = re.compile(rf"""(["']?{_KEY}["']?\s*[=:]\s*)('[^']*'|"[^"]*"|[^\s,;&)'"]+)""",
                       re.IGNORECASE)
# SECRET 'abc', KEY_ID 'x', PASSWORD "y" (a key word followed by a quoted value, as in CREATE SECRET)
_QUOTED = re.compile(rf"""({_KEY}\s+)('[^']*'|"[^"]*")""", re.IGNORECASE)


def redact(text: str | None) -> str | None:
    """`text` with URL passwords and the values of secret-named keys replaced by ***."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _ASSIGNED.sub(lambda m: m.group(1) + _masked(m.group(2)), text)
    return _QUOTED.sub(lambda m: m.group(1) + _masked(m.group(2)), text)


def has_secret(text: str | None) -> bool:
    """True when `text` carries something `redact` would hide."""
    return redact(text) != text


def is_redacted(text: str | None) -> bool:
    """True when `text` was redacted (a recorded source that can no longer be run as is)."""
    return bool(text) and (f":{MASK}@" in text or _MASKED.search(text) is not None)


_MASKED = re.compile(rf"[=:]\s*['\"]?{re.escape(MASK)}|['\"]{re.escape(MASK)}['\"]")


def _masked(value: str) -> str:
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"
