"""Credentials never stored or shown: sources (a `--query`'s SQL, a connection string) are redacted before
they reach the catalog, logs, artifacts, Prefect parameters or prefect.yaml.

What is hidden: a URL's password (`scheme://user:***@host`), a bearer token, well-known token shapes
(`ghp_…`, `hf_…`), and the value of a pair whose key names a secret — `password=…`, `api_key: …`,
`SECRET '…'` — where the key's word parts (split at `_`, `-` and camelCase) include password, secret,
token, credential, signature and the like, or `key` beside another part (`api_key`, `KEY_ID`). Plain
SQL keeps its meaning: `n_tokens = 5`, `tokenizer = 'bert'` and `primary_key = 'a'` are not secrets,
and a numeric value is never one.
"""

import re

MASK = "***"
SECRET_PARTS = {"password", "passwd", "pwd", "pass", "secret", "token", "key", "apikey", "accesskey",
                "secretkey", "accountkey", "credential", "credentials", "signature", "sig", "auth",
                "authorization", "sas"}
NOT_SECRET = {"primary_key", "foreign_key", "sort_key", "partition_key", "key_column", "cluster_key"}
_VALUE = r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|[^\s,;&)'"]+)"""
_NAME = r"[A-Za-z_][\w-]*"
# scheme://user:password@host → scheme://user:***@host (a password may hold '@': up to the last one)
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^\s:/@'\"]*):([^\s'\"/]+)@", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_TOKEN_SHAPES = re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat|hf|xox[abpr])_[A-Za-z0-9_]{16,}")
# password=..., api_key = '...', "token": "..." (key=value, key: value)
_ASSIGNED = re.compile(rf"""(["']?)({_NAME})(["']?\s*(?:=|:(?=[\s"']))\s*){_VALUE}""")
# SECRET 'abc', KEY_ID 'x', PASSWORD "y" (a key word followed by a quoted value, as in CREATE SECRET)
_QUOTED = re.compile(rf"""\b({_NAME})(\s+)('(?:[^']|'')*'|"(?:[^"]|"")*")""")


def redact(text: str | None) -> str | None:
    """`text` with URL passwords, bearer tokens and the values of secret-named keys replaced by ***."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(rf"\1:{MASK}@", text)
    text = _BEARER.sub(rf"\1{MASK}", text)
    text = _TOKEN_SHAPES.sub(MASK, text)
    text = _ASSIGNED.sub(
        lambda m: _pair(m, m.group(1) + m.group(2) + m.group(3), m.group(2), m.group(4)), text
    )
    return _QUOTED.sub(lambda m: _pair(m, m.group(1) + m.group(2), m.group(1), m.group(3)), text)


def names_secret(key: str) -> bool:
    """Whether a key's word parts name a secret (`api_key`, `AccountKey`, `PGPASSWORD`; not `n_tokens`)."""
    if key.lower() in NOT_SECRET:
        return False
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", key)
    parts = [p.lower() for p in re.split(r"[\s_-]+", spaced) if p]
    named = [p for p in parts if p != "key" or len(parts) > 1]  # `key = 'x'` is a column; `key_id` is not
    return any(p in SECRET_PARTS or p.endswith(("password", "secret", "token")) for p in named)


def _pair(match: re.Match, prefix: str, key: str, value: str) -> str:
    bare = value.strip("'\"")
    if not names_secret(key) or not bare or bare == MASK or re.fullmatch(r"-?\d+(\.\d+)?", bare):
        return match.group(0)
    return prefix + _masked(value)


def has_secret(text: str | None) -> bool:
    """True when `text` carries something `redact` would hide."""
    return redact(text) != text


def is_redacted(text: str | None) -> bool:
    """True when `text` was redacted (a recorded source that can no longer be run as is)."""
    return bool(text) and (f":{MASK}@" in text or _MASKED.search(text) is not None)


_MASKED = re.compile(rf"[=:\s]\s*['\"]?{re.escape(MASK)}|['\"]{re.escape(MASK)}['\"]")


def _masked(value: str) -> str:
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"
